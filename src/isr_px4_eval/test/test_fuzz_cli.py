"""Fuzz test of the ``isr`` command line: bad input gets exit 2 and one ``error:`` line.

A seeded generator builds a few hundred bad inputs: ``--set`` overrides of every training config
field with values of the wrong kind (non-finite numbers, YAML syntax errors, wrong types, huge or
negative sizes), malformed ``--config`` files (binary, NUL bytes, tabs, scalars, lists, deep
nesting), numeric and device options of every subcommand with invalid values, bad names and seed
ranges. Every case must exit with status 2, print exactly one line containing ``error:`` to
stderr, name the bad value, key, option or file, and never print a traceback. The cases run
in-process (validation only: nothing is trained or evaluated).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pytest

from isr_direct_dynamics.config import to_dict
from isr_px4_eval.cli.main import build_parser, main
from isr_training.training_config import TrainingConfig

SEED = 20261207
BAD_NUMBERS = [".inf", "-.inf", ".nan", "1e400", "-1e400", "abc", "[", "{a: 1}", "[1, 2]", "true"]
BAD_INTS = ["1.5", "1e23", "-1e400", "x", "[", "2**70", ".nan"]
BAD_STRINGS = ["[", "{a: [1}", "[1, 2]", "{x: 1}"]
BAD_BOOLS = ["maybe", "2", "[", "{a: 1}"]


def _leaves(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in data.items():
        if isinstance(v, dict):
            if k != "dynamics":  # vehicle-specific mapping, covered by its own dataclass
                out += _leaves(v, f"{prefix}{k}.")
        else:
            out.append((prefix + k, v))
    return out


def _set_cases(rng: random.Random) -> list[tuple[list[str], str]]:
    cases = []
    for key, default in _leaves(to_dict(TrainingConfig())):
        if isinstance(default, bool):
            pool = BAD_BOOLS
        elif isinstance(default, int):
            pool = BAD_INTS
        elif isinstance(default, float):
            pool = BAD_NUMBERS
        elif isinstance(default, str):
            pool = BAD_STRINGS
        else:  # lists, tuples, None: anything YAML-invalid or of the wrong shape
            pool = ["[", "{a: [1}", ".nan" if isinstance(default, list) else "{x: 1}"]
        for value in rng.sample(pool, min(2, len(pool))):
            cases.append((["train", "--print-config", "--set", f"{key}={value}"], key))
    sizes = [
        ("env.num_worlds", "1000000000000"),
        ("env.num_worlds", "0"),
        ("env.drones_per_world", "0"),
        ("env.drones_per_world", "100000"),
        ("env.world.size_x_m", "1e9"),
        ("env.world.size_x_m", "1e308"),
        ("env.world.texture_res_m", "1e-6"),
        ("env.world.texture_res_m", "0"),
        ("env.camera_fov_deg", "0"),
        ("env.camera_fov_deg", "400"),
        ("env.camera_resolution", "-80x80"),
        ("env.camera_resolution", "abc"),
        ("env.camera_resolution", "100000x100000"),
        ("device", "foo"),
        ("device", "cuda:99"),
        ("name", "x" * 300),
        ("name", "../escape"),
        ("name", ".hidden"),
        ("seed", "1e23"),
        ("threads", "-1"),
        ("rl.ppo.learning_rate", "-1"),
        ("eval.num_worlds", "100000000000"),
        ("rl.val_num_worlds", "100000000000"),
        ("data.num_worlds", "100000000000"),
        ("env.task.episode_length_s", "1e9"),
        ("data.episodes", "100000000"),
    ]
    cases += [(["train", "--print-config", "--set", f"{k}={v}"], k) for k, v in sizes]
    cases += [
        (["train", "--print-config", "--set", "task.reward.time=1"], "env.task.reward.time"),
        (["train", "--print-config", "--set", "noequals"], "noequals"),
        (["train", "--print-config", "--set", "=1"], "=1"),
        (["train", "--print-config", "--set", "seed.x=1"], "seed"),
        (["train", "--print-config", "--preset", "nope"], "nope"),
        (["train", "--print-config", "--name", "a/b"], "name"),
        (["baseline", "--set", "task.reward.time=-.inf"], "task.reward.time"),
        (["baseline", "--set", "task.reward.time=["], "task.reward.time"),
        (["bench", "env", "--set", "task.control_dt_s=.nan"], "task.control_dt_s"),
    ]
    return cases


def _config_file_cases(tmp: Path, rng: random.Random) -> list[tuple[list[str], str]]:
    bodies: dict[str, bytes] = {
        "random.yaml": bytes(rng.randrange(256) for _ in range(512)),
        "nul.yaml": b"defaults:\n  seed: 1\x00\n",
        "tab.yaml": b"defaults:\n\tseed: 1\n",
        "scalar.yaml": b"5\n",
        "list.yaml": b"- a: 1\n- b: 2\n",
        "unclosed.yaml": b"defaults: [\n",
        "deep.yaml": b"[" * 5000 + b"]" * 5000,
        "deepmap.yaml": "".join(f"{' ' * i}k{i}:\n" for i in range(60)).encode() + b" " * 60 + b"1",
        "badsection.yaml": b"defaults: 5\n",
        "unknown.yaml": b"nonsense: {}\n",
        "wrongtype.yaml": b"defaults:\n  seed: [1, 2]\n",
        "nonfinite.yaml": b"defaults:\n  rl:\n    ppo:\n      learning_rate: .inf\n",
        "badpreset.yaml": b"presets:\n  quick: 3\n",
        "latin1.yaml": "defaults:\n  name: caf\xe9\n".encode("latin-1"),
        "intkey.yaml": b"1: 2\n",
        "anchors.yaml": b"a: &a [1, 2]\nb: *a\n",
        "pyobj.yaml": b"defaults: !!python/object/apply:os.system ['echo pwned']\n",
    }
    cases = []
    for name, body in bodies.items():
        p = tmp / name
        p.write_bytes(body)
        cases.append((["train", "--print-config", "--config", str(p)], str(p)))
    cases.append((["train", "--print-config", "--config", str(tmp)], str(tmp)))
    cases.append((["train", "--print-config", "--config", str(tmp / "missing.yaml")], "missing"))
    cases.append(
        (["train", "--print-config", "--dynamics-config", str(tmp / "random.yaml")], "random")
    )
    out = str(tmp / "map.png")
    cases.append(
        (
            ["world", "show", "--seed", "1", "--spec", str(tmp / "list.yaml"), "--out", out],
            "list.yaml",
        )
    )
    cases.append(
        (
            ["world", "show", "--seed", "1", "--spec", str(tmp / "deep.yaml"), "--out", out],
            "deep.yaml",
        )
    )
    return cases


def _option_cases(rng: random.Random) -> list[tuple[list[str], str]]:
    """Every numeric/device option of every subcommand with an invalid value."""
    parser = build_parser()
    cases = []

    def walk(p: argparse.ArgumentParser, path: list[str]) -> None:
        for action in p._actions:  # noqa: SLF001
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
                continue
            if not action.option_strings or action.type is None:
                continue
            option = action.option_strings[-1]
            kind = getattr(action.type, "__name__", "")
            if action.dest == "device":
                values = ["foo", "cuda:99"]
            elif kind == "float":
                values = rng.sample(["nan", "inf", "-inf", "1e999", "abc", ""], 2)
            elif kind == "int":
                values = rng.sample(["abc", "1.5", "1e3", "99999999999999999999999"], 2)
            else:
                continue
            for v in values:
                cases.append(([*path, f"{option}={v}"], option))

    walk(parser, [])
    return cases


def _misc_cases() -> list[tuple[list[str], str]]:
    return [
        (["eval", "--policy", "x", "--world-seeds", "0-100000000"], "0-100000000"),
        (["eval", "--policy", "x", "--world-seeds", "5-1"], "5-1"),
        (["eval", "--policy", "x", "--world-seeds", "a,b"], "a,b"),
        (["eval", "--policy", "x", "--world-seeds", "99999999999"], "99999999999"),
        (["eval", "--policy", "x", "--world-seeds", "1,1"], "1,1"),
        (["bench", "env", "--seconds", "nan"], "--seconds"),
        (["bench", "dynamics", "--threads", "-1"], "--threads"),
        (["bench", "dynamics", "--drones", "0"], "--drones"),
        (["tune-dynamics", "--from", "embedded", "--population", "4"], "population"),
    ]


def _all_cases(tmp: Path) -> list[tuple[list[str], str]]:
    rng = random.Random(SEED)
    return _set_cases(rng) + _config_file_cases(tmp, rng) + _option_cases(rng) + _misc_cases()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code if isinstance(exc.code, int) else 2
    except Exception as exc:  # noqa: BLE001 - reported as a failing case (a traceback)
        return -1, f"{capsys.readouterr().err}Traceback: {type(exc).__name__}: {exc}"
    return rc, capsys.readouterr().err


def test_fuzz_bad_input_gets_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = _all_cases(tmp_path)
    assert len(cases) >= 300, len(cases)
    failures = []
    for argv, must_name in cases:
        rc, err = _run(argv, capsys)
        lines = [ln for ln in err.splitlines() if "error:" in ln]
        if (
            rc != 2
            or "Traceback" in err
            or len(lines) != 1
            or must_name.lower() not in lines[0].lower()
        ):
            failures.append(f"{argv!r} -> rc={rc}: {err.strip()[-300:]!r}")
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures[:30])


def test_fuzz_cases_are_seeded(tmp_path: Path) -> None:
    """The generator is deterministic: the same seed gives the same cases."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = [" ".join(c[0]) for c in _all_cases(tmp_path / "a")]
    b = [
        " ".join(c[0]).replace(str(tmp_path / "b"), str(tmp_path / "a"))
        for c in _all_cases(tmp_path / "b")
    ]
    assert a == b
