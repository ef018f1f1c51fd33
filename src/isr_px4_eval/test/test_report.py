"""isr report: renders a fake experiment with missing stages and names what is missing."""

from __future__ import annotations

import json

import numpy as np

from isr_px4_eval.cli.main import main


def test_report_missing_stages(tmp_path, capsys):
    exp = tmp_path / "exp_20260101_000000"
    (exp / "stages").mkdir(parents=True)
    (exp / "stages" / "data.done").write_text("")
    (exp / "stages" / "imitation.done").write_text("")
    (exp / "imitation_model").mkdir()
    (exp / "imitation_model" / "history.json").write_text(
        json.dumps({"train_loss": [1.0, 0.5, 0.3], "val_loss": [1.1, 0.7, 0.6]})
    )
    metrics = {
        "return": 10.0,
        "targets_found": 0.5,
        "coverage": 0.4,
        "r/coverage": 3.0,
        "r/time": -1.0,
    }
    (exp / "SUMMARY.json").write_text(
        json.dumps(
            {
                "experiment": exp.name,
                "results": {"final": metrics, "random": {**metrics, "return": 1.0}},
            }
        )
    )
    (exp / "evaluation").mkdir()
    pos = np.cumsum(np.random.default_rng(0).normal(size=(2, 30, 3)), axis=1)
    np.savez(exp / "evaluation" / "embedded.npz", pos_enu_m=pos, length=np.array([30, 20]))
    (exp / "evaluation" / "parity.json").write_text(
        json.dumps(
            {
                "return_ratio": 0.95,
                "passed": True,
                "checks": [
                    {
                        "name": "return_ratio",
                        "value": 0.95,
                        "op": ">=",
                        "limit": 0.9,
                        "passed": True,
                    }
                ],
            }
        )
    )
    out = tmp_path / "r" / "report.html"
    assert main(["report", str(exp), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    page = out.read_text()
    assert "training stage &#x27;rl&#x27;" in page and "training stage &#x27;finalize&#x27;" in page
    assert "RL history" in page and "videos" in page and "random/expert baselines" in page
    assert "missing: training stage 'rl'" in printed
    for section in (
        "Learning curves",
        "Evaluation",
        "Per-term rewards",
        "Parity",
        "Trajectory map",
        "Coverage heatmap",
    ):
        assert section in page
    assert page.count("data:image/png;base64,") >= 4
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")


def test_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("error: experiment directory not found")
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 0
    page = (tmp_path / "empty" / "report.html").read_text()
    assert "no stages/data.done" in page and "evaluation results" in page


def test_coverage_heatmap_is_the_camera_footprint(tmp_path):
    """Two hovering drones looking straight down with a 90 deg FOV at 20 m see 40 m squares."""
    from isr_px4_eval.evidence.report import Report

    exp = tmp_path / "exp"
    (exp / "eval").mkdir(parents=True)
    pos = np.zeros((2, 10, 3))
    pos[0, :] = (0.0, 0.0, 20.0)
    pos[1, :5] = (50.0, 50.0, 20.0)
    quat = np.zeros((2, 10, 4))
    quat[..., 0] = 1.0
    np.savez(
        exp / "eval" / "embedded.npz",
        pos_enu_m=pos,
        quat_wxyz=quat,
        length=np.array([10, 5]),
        camera_fov_pitch_deg=np.array([90.0, 90.0, 90.0]),
        coverage_range_m=np.array(80.0),
        area_xywh_m=np.array([-100.0, -100.0, 200.0, 200.0]),
    )
    rep = Report(exp, tmp_path / "r.html", 25.0)
    frac, extent, n_ep, src = rep._footprint_coverage(cell_m=2.5)
    assert n_ep == 2 and src == "eval/embedded.npz" and extent == (-100.0, 100.0, -100.0, 100.0)
    assert frac.shape == (80, 80)
    # cell centres at +-1.25 ... +-18.75 m lie inside the +-20 m square: 16 x 16 cells each
    assert np.count_nonzero(frac == 0.5) == 2 * 16 * 16 and np.count_nonzero(frac) == 2 * 256
    assert frac[40, 40] == 0.5 and frac[60, 60] == 0.5 and frac[40, 60] == 0.0  # (row=y, col=x)
    rep.trajectories()
    assert any(t == "Coverage heatmap" for t, _ in rep.sections)
