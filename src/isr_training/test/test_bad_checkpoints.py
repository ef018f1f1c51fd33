"""Corrupt checkpoints, markers and temporary files of an experiment: one clear error on resume.

``isr train --resume EXP`` must refuse a truncated, empty or pickled-object checkpoint before any
stage starts, with ``error: checkpoint <path> is corrupt (<why>); resume from <previous> or delete
it``; stale temporary files of a killed writer are removed when the experiment is reopened.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from isr_training.models import atomic_torch_save, load_checkpoint, safe_load
from isr_training.pipeline import Experiment, resolve_config
from isr_training.training_cli import main as train_main

pytestmark = pytest.mark.unit

DEAD_PID = 99_999_999


class _Obj:
    pass


def _write_case(path, case):
    if case == "truncated":
        torch.save({"ppo": {"w": torch.zeros(256)}, "stage": {}}, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "pickled_object":
        torch.save({"ppo": _Obj(), "stage": {}}, path)
    elif case == "random":
        path.write_bytes(b"\x13" + bytes(range(256)) * 3)
    elif case == "not_a_dict":
        torch.save([torch.zeros(2)], path)
    elif case == "missing_key":
        torch.save({"stage": {}}, path)
    else:
        raise AssertionError(case)


WHY = {
    "truncated": "cut short: not a complete zip archive",
    "empty": "empty file",
    "pickled_object": "pickled Python objects",
    "random": "not a PyTorch file",
    "not_a_dict": "holds a list, not a checkpoint dict",
    "missing_key": "no 'ppo' entry",
}


@pytest.mark.parametrize("case", sorted(WHY))
def test_load_checkpoint_messages(tmp_path, case):
    path = tmp_path / "latest.pt"
    _write_case(path, case)
    prev = tmp_path / "iter_000010.pt"
    with pytest.raises(ValueError) as e:
        load_checkpoint(path, ("ppo", "stage"), previous=prev)
    msg = str(e.value)
    assert msg.startswith(f"checkpoint {path} is corrupt (")
    assert WHY[case] in msg and f"resume from {prev} or delete it" in msg
    assert len(msg.splitlines()) == 1
    with pytest.raises(ValueError, match="no earlier checkpoint to resume from: delete it"):
        load_checkpoint(path, ("ppo", "stage"))


def test_atomic_torch_save_cleans_up(tmp_path):
    target = tmp_path / "latest.pt"
    stale = tmp_path / f".latest.pt.{DEAD_PID}-0badf00d.tmp"  # left by a kill -9
    stale.write_bytes(b"")
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises for a lambda
        atomic_torch_save({"f": lambda: 0}, target)
    assert not stale.exists() and not list(tmp_path.iterdir())
    atomic_torch_save({"a": torch.ones(2)}, target)
    assert torch.equal(safe_load(target)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


@pytest.fixture
def experiment(tmp_path):
    exp = Experiment.create(resolve_config("quick", [], None), tmp_path / "experiments")
    return exp


def _resume(capsys, exp):
    rc = train_main(["--resume", str(exp.root), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("case", ["truncated", "pickled_object", "empty"])
def test_resume_refuses_a_corrupt_rl_checkpoint(experiment, capsys, case):
    exp = experiment
    prev = exp.checkpoint_dir / "iter_000002.pt"
    torch.save({"ppo": {}, "stage": {}}, prev)
    latest = exp.checkpoint_dir / "latest.pt"
    _write_case(latest, case)
    line = _resume(capsys, exp)
    assert line.startswith(f"error: checkpoint {latest} is corrupt (")
    assert WHY[case] in line and f"resume from {prev} or delete it" in line
    assert not exp.logs_dir.joinpath("data.log").exists()  # refused before any stage ran


def test_resume_refuses_a_corrupt_imitation_checkpoint(experiment, capsys):
    ck = experiment.imitation_dir / "checkpoint.pt"
    _write_case(ck, "truncated")
    line = _resume(capsys, experiment)
    assert line.startswith(f"error: checkpoint {ck} is corrupt (cut short")
    assert "delete it" in line


def test_resume_refuses_a_corrupt_stage_marker(experiment, capsys):
    marker = experiment.marker("data")
    marker.write_text('{"stage": "data", "wall_s": 1')
    line = _resume(capsys, experiment)
    assert f"stage marker {marker} is not valid JSON" in line and "delete it" in line


def test_reopening_removes_stale_temp_files(experiment):
    d = experiment.checkpoint_dir
    dead = d / f".latest.pt.{DEAD_PID}-0badf00d.tmp"
    dead.write_bytes(b"")
    old = d / ".iter_000001.pt.k2j4h_9q.tmp"  # a previous version's mkstemp name, 10 min old
    old.write_bytes(b"")
    t = time.time() - 600
    os.utime(old, (t, t))
    fresh = experiment.root / f".config.yaml.{os.getpid()}-12345678.tmp"  # a live writer's
    fresh.write_bytes(b"")
    Experiment.open(experiment.root)
    assert not dead.exists() and not old.exists() and fresh.exists()


def test_output_dir_that_is_a_file(tmp_path, capsys):
    (f := tmp_path / "file").write_text("x")
    rc = train_main(["--preset", "quick", "--output-dir", str(f)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: --output-dir {f} is a file")


def test_pretrained_policy_that_is_corrupt(tmp_path, capsys):
    pol = tmp_path / "best.pt"
    _write_case(pol, "truncated")
    out = tmp_path / "experiments"
    rc = train_main(["--preset", "quick", "--pretrained", str(pol), "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip() == (
        f"error: rl.pretrained: policy file {pol} is corrupt (cut short: not a complete zip "
        "archive)"
    )
    assert not out.exists()


def test_print_config_with_resume_prints_and_runs_nothing(experiment, capsys):
    rc = train_main(["--resume", str(experiment.root), "--print-config"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.startswith("name: quick") and "anchor_coef:" in out
    assert not experiment.logs_dir.joinpath("data.log").exists()
    assert not experiment.marker("data").exists()
