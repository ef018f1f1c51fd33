"""isr report: renders a fake experiment with missing stages and names what is missing."""

from __future__ import annotations

import json

import numpy as np

from isr_px4_eval.cli import main


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
