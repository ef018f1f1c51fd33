"""Evaluation and parity: metric aggregation, policy loading errors, CLI runs on tiny worlds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from isr_px4_eval.cli.eval import main as px4_eval_main
from isr_px4_eval.evaluation.parity import relative_return, run_parity_check, trajectory_rmse
from isr_px4_eval.evaluation.run import aggregate_metrics, load_settings, parse_seeds
from isr_training.export import load_policy_file

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory, export_tiny_policy) -> Path:
    return export_tiny_policy(tmp_path_factory.mktemp("policy"))


def _row(ret, found, collisions=0.0, breaches=0.0, ttfd=None, length=100):
    return {
        "return": ret,
        "targets_found": found,
        "coverage": 0.5,
        "collisions": collisions,
        "geofence_breaches": breaches,
        "safety_interventions": 1.0,
        "length_steps": length,
        "length_s": length * 0.1,
        "time_to_first_detection_s": ttfd,
    }


def test_aggregate_metrics_and_success_definition() -> None:
    rows = [
        _row(10.0, 0.7, ttfd=2.0),  # exactly at the threshold, clean: success
        _row(20.0, 0.9, collisions=1.0, ttfd=4.0, length=40),  # crashed: no success
        _row(30.0, 1.0, breaches=3.0),  # left the geofence: no success
        _row(40.0, 0.5, ttfd=float("nan")),  # too few targets: no success
    ]
    m = aggregate_metrics(rows, 0.7)
    assert m["episodes"] == 4
    assert m["return_mean"] == pytest.approx(25.0)
    assert m["return_std"] == pytest.approx(np.std([10, 20, 30, 40]))
    assert m["success_rate"] == pytest.approx(0.25)
    assert [r["success"] for r in rows] == [True, False, False, False]
    assert m["crash_rate"] == pytest.approx(0.25)
    assert m["breach_rate"] == pytest.approx(0.25)
    assert m["targets_found_mean"] == pytest.approx(0.775)
    assert m["length_steps_mean"] == pytest.approx(85.0)
    # Time to first detection: mean over the episodes that found something.
    assert m["time_to_first_detection_s_mean"] == pytest.approx(3.0)
    assert m["episodes_with_a_find"] == 2
    assert "70%" in m["success_definition"]
    assert aggregate_metrics(rows, 0.95)["success_rate"] == 0.0
    with pytest.raises(ValueError):
        aggregate_metrics([], 0.7)


def test_seeds_ratio_and_rmse_helpers() -> None:
    from isr_direct_dynamics.config import ConfigError

    assert parse_seeds("100000-100002,7") == [100000, 100001, 100002, 7]
    for bad in ("5-3", "a,b", "1,1", ""):
        with pytest.raises(ConfigError):
            parse_seeds(bad)
    assert relative_return(10.0, 9.0) == pytest.approx(0.9)
    assert relative_return(-10.0, -5.0) == pytest.approx(1.5)
    assert relative_return(0.0, 0.0) == 1.0
    a = np.zeros((2, 3, 3))
    b = a.copy()
    b[..., 0] = 3.0
    b[..., 1] = 4.0
    b[1, 2] = 100.0  # excluded by the mask
    valid = np.array([[True, True, True], [True, True, False]])
    r = trajectory_rmse(a, b, valid)
    assert r["x"] == pytest.approx(3.0) and r["y"] == pytest.approx(4.0) and r["z"] == 0.0
    assert r["total"] == pytest.approx(5.0) and r["samples"] == 5


def test_policy_formats_agree(policy_dir: Path) -> None:
    obs = torch.randn(5, load_policy_file(policy_dir).meta["obs_dim"]) * 3
    acts = {}
    for name in ("policy_torchscript.pt", "policy.onnx", "policy.pt"):
        p = load_policy_file(policy_dir / name)
        acts[name] = p.act(obs)
    assert load_policy_file(policy_dir).kind == "torchscript"  # a directory: TorchScript first
    for v in acts.values():
        torch.testing.assert_close(v, acts["policy_torchscript.pt"], atol=1e-5, rtol=0)


def test_missing_corrupt_and_mismatched_policies(
    export_tiny_policy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {str(tmp_path / "nope.pt"): "does not exist", str(tmp_path): "no exported policy"}
    for name in ("policy_torchscript.pt", "policy.onnx", "policy.pt"):
        bad = tmp_path / "bad" / name
        bad.parent.mkdir(exist_ok=True)
        bad.write_bytes(b"\x00garbage" * 20)
        cases[str(bad)] = "corrupt"
    old = export_tiny_policy(tmp_path / "old", task_version="isr-search-v0")
    cases[str(old / "policy.onnx")] = "task version 'isr-search-v0'"
    cases[str(old / "policy_torchscript.pt")] = "task version 'isr-search-v0'"
    for path, message in cases.items():
        rc = px4_eval_main(["--policy", path, "--world-seeds", "1", "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2, path
        assert err.startswith("error: ") and message in err and path in err, err
        assert "Traceback" not in err and len(err.splitlines()) == 1


def test_open_loop_split_separates_model_error_from_candidate_noise() -> None:
    """Reference 0, candidate 0.5 + unit noise (independent per replay): model error 0.5."""
    from isr_px4_eval.evaluation.parity import split_noise

    rng = np.random.default_rng(0)
    shape = (4, 20000, 3)
    ref = np.zeros(shape)
    c1, c2 = 0.5 + rng.normal(size=shape), 0.5 + rng.normal(size=shape)
    valid = np.ones(shape[:2], dtype=bool)
    raw = trajectory_rmse(ref, c1, valid)
    split = split_noise(raw, trajectory_rmse(c1, c2, valid))
    assert raw["x"] == pytest.approx(math.sqrt(1.25), rel=0.01)
    assert split["model"]["x"] == pytest.approx(0.5, rel=0.03)
    assert split["noise"]["x"] == pytest.approx(1.0, rel=0.01)
    assert split["model"]["total"] == pytest.approx(0.5 * math.sqrt(3), rel=0.03)


def test_parity_of_direct_with_itself_is_exact(policy_dir: Path, tmp_path: Path) -> None:
    settings = load_settings()
    settings.episode_length_s = 4.0
    report = run_parity_check(
        policy_dir, [100000], settings, reference="direct", candidate="direct",
        record_dir=tmp_path / "rec",
    )  # fmt: skip
    assert report["passed"]
    assert report["return_ratio"] == 1.0
    for key in ("position_rmse_m", "velocity_rmse_m_s"):
        r = report["open_loop"][key]
        assert r["total"] == 0.0 and r["x"] == 0.0 and r["samples"] == 40
        split = report["open_loop"][key.replace("_rmse", "_split")]
        assert split["model"]["total"] == 0.0 and split["noise"]["total"] == 0.0
    assert all(v == 0.0 for v in report["metric_deltas"].values())
    replay = np.load(tmp_path / "rec" / "replay.npz")
    assert replay["reference_pos_enu_m"].shape == (1, 40, 3)
    assert (tmp_path / "rec" / "candidate_direct.npz").is_file()
    # A tolerance nobody can meet fails the run: exit status 1.
    tol = tmp_path / "strict.yaml"
    tol.write_text("min_return_ratio: 2.0\n")
    rc = px4_eval_main(
        ["parity", "--policy", str(policy_dir), "--world-seeds", "100000", "--candidate",
         "direct", "--episode-seconds", "2", "--tolerances", str(tol), "--no-progress"]
    )  # fmt: skip
    assert rc == 1


def test_eval_cli_embedded_writes_sane_json(
    policy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval.json"
    rec = tmp_path / "rec"
    rc = px4_eval_main(
        ["eval", "--policy", str(policy_dir / "policy_torchscript.pt"), "--backend", "embedded",
         "--world-seeds", "100000-100001", "--episode-seconds", "5", "--json", str(out),
         "--record-dir", str(rec), "--no-progress"]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0 and "real-time factor" in text
    res = json.loads(out.read_text())
    m = res["metrics"]
    assert res["backend"] == "embedded" and res["world_seeds"] == [100000, 100001]
    assert m["episodes"] == 2 and len(res["episodes"]) == 2
    assert 0.0 <= m["success_rate"] <= 1.0 and 0.0 <= m["targets_found_mean"] <= 1.0
    assert 0.0 <= m["coverage_mean"] <= 1.0 and m["collisions_mean"] >= 0
    assert 0 < m["length_steps_mean"] <= 50 and math.isfinite(m["return_mean"])
    assert "success_definition" in m
    vc = res["settings"]["vehicle_config"]
    assert vc["sensor_noise"]["enabled"] and vc["command_delay_steps"] >= 1
    assert vc["wind"]["gust_std_m_s"] > 0
    rtf = res["real_time_factor"]
    assert rtf["per_drone"] > 0 and rtf["aggregate"] == pytest.approx(2 * rtf["per_drone"])
    print(f"embedded RTF (not asserted): {rtf['per_drone']:.1f}x per drone")
    z = np.load(rec / "embedded.npz")
    e, t = z["reward"].shape
    assert e == 2 and t == int(z["length"].max())
    assert z["pos_enu_m"].shape == (e, t, 3) and z["applied_action"].shape == (e, t, 4)
    assert z["det_visible"].shape[:2] == (e, t) and "r_coverage" in z.files
    assert json.loads(str(z["meta_json"]))["backend"] == "embedded"


def test_eval_of_a_nan_policy_counts_and_fails(
    export_tiny_policy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every action NaN: counted per episode, the JSON is valid (no NaN literal), exit 2."""
    policy = export_tiny_policy(tmp_path / "nan_policy", nan=True)
    out = tmp_path / "eval.json"
    rc = px4_eval_main(
        ["eval", "--policy", str(policy / "policy_torchscript.pt"), "--backend", "direct",
         "--world-seeds", "100000", "--episode-seconds", "2", "--json", str(out), "--no-progress"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert "non-finite" in err[0] and "100.0%" in err[0] and "Traceback" not in err[0]
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    res = json.loads(text)
    assert res["metrics"]["nonfinite_actions"] == 20 == res["episodes"][0]["nonfinite_actions"]
    assert res["metrics"]["nonfinite_action_fraction"] == 1.0


def test_pipeline_eval_table_gives_the_standard_error_of_targets_found():
    from isr_px4_eval.pipeline.full import format_eval_summary

    m = {"return_mean": 1.0, "targets_found_mean": 0.5, "targets_found_std": 0.2, "episodes": 20,
         "coverage_mean": 0.6, "success_rate": 0.1, "crash_rate": 0.0}  # fmt: skip
    old = {k: v for k, v in m.items() if k not in ("targets_found_std", "episodes")}
    data = {"results": {"trained": {"embedded": m, "direct": old}}}
    header, new_row, old_row = format_eval_summary(data).splitlines()
    assert "+-s.e." in header
    # population std 0.2 over 20 episodes -> sample std * sqrt(20/19), / sqrt(20)
    assert f"{0.2 * (20 / 19) ** 0.5 / 20**0.5:.3f}" in new_row.split()
    assert old_row.split()[4] == "-" and len(old_row) == len(new_row)
