"""Foreign, cut-short and corrupt input files, and unusable output paths, through the ``isr`` CLI.

Every case must end with status 2 and exactly one ``error: ...`` line on stderr that names the
file (or the option) and says what is wrong; never a traceback, never status 0. Output paths are
refused before any work starts (the cases below would otherwise run or fail late).
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct

import numpy as np
import pytest
import torch

from isr_px4_eval.cli.main import main

pytestmark = [
    pytest.mark.unit,
    pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning"),
]

DATA = os.path.join(os.path.dirname(__file__), "data")
ULOG = os.path.join(DATA, "px4_sih_flight2_trim.ulg")
SIH_MCAP = os.path.join(DATA, "px4_sih_flight2_trim", "px4_sih_flight2_trim.mcap")
MCAP_MAGIC = b"\x89MCAP0\r\n"


def run(capsys, argv):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_error(rc, err, *names):
    """Status 2, one ``error:`` line naming every ``names``, no traceback; returns the line."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for n in names:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def noise(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def small_bag(root):
    """A real (tiny) MCAP bag directory written by the recorder: one odometry topic."""
    from isr_px4_eval.evidence.recording import BagRecorder, StepRecord

    rec = BagRecorder(root, 1)
    for k in range(5):
        rec.add_step(
            StepRecord(0.1 * k, k, np.zeros((1, 3)), np.zeros((1, 3)), np.array([[1.0, 0, 0, 0]]))
        )
    rec.close()
    return root


# ------------------------------------------------------------------------------ 1. isr video


def _bag_case(tmp_path, case):
    if case == "random.db3":
        (p := tmp_path / case).write_bytes(noise(2000))
    elif case == "empty.db3":
        (p := tmp_path / case).write_bytes(b"")
    elif case == "not_a_bag.db3":
        p = tmp_path / case
        con = sqlite3.connect(p)
        con.execute("CREATE TABLE x (a)")
        con.commit()
        con.close()
    elif case == "random.mcap":
        (p := tmp_path / case).write_bytes(noise(2000))
    elif case == "empty.mcap":
        (p := tmp_path / case).write_bytes(b"")
    elif case == "magic_then_garbage.mcap":
        (p := tmp_path / case).write_bytes(MCAP_MAGIC + noise(3000))
    elif case == "cut_after_header.mcap":
        data = next(small_bag(tmp_path / "full").glob("*.mcap")).read_bytes()
        (p := tmp_path / case).write_bytes(data[:20])
    elif case == "dir_without_metadata":
        p = tmp_path / case
        p.mkdir()
        (p / "x.mcap").write_bytes(noise(500))
    elif case == "empty_dir":
        (p := tmp_path / case).mkdir()
    else:
        raise AssertionError(case)
    return p


BAG_CASES = {
    "random.db3": "not a rosbag2 sqlite3 bag (not an SQLite database)",
    "empty.db3": "is empty (0 bytes)",
    "not_a_bag.db3": "an SQLite database but not a rosbag2 bag",
    "random.mcap": "is not an MCAP file",
    "empty.mcap": "is empty (0 bytes)",
    "magic_then_garbage.mcap": "cut short or corrupt",
    "cut_after_header.mcap": "cut short or corrupt",
    "dir_without_metadata": "is not an MCAP file",
    "empty_dir": "holds no rosbag2 storage file",
}


@pytest.mark.parametrize("case", sorted(BAG_CASES))
def test_video_refuses_bad_bags(tmp_path, capsys, case):
    bag = _bag_case(tmp_path, case)
    out = tmp_path / "out.mp4"
    rc, _, err = run(capsys, ["video", bag, "-o", out])
    line = one_error(rc, err, bag.name, BAG_CASES[case])
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists(), line


def test_video_bag_whose_messages_are_damaged(tmp_path, capsys):
    """rosbags opens the bag (summary intact) but a chunk's first record is damaged."""
    bag = small_bag(tmp_path / "bag")
    f = next(bag.glob("*.mcap"))
    b = bytearray(f.read_bytes())
    pos = len(MCAP_MAGIC)
    while b[pos] != 0x06:  # first chunk record
        pos += 9 + struct.unpack_from("<Q", b, pos + 1)[0]
    o = pos + 9 + 28
    o += 4 + struct.unpack_from("<I", b, o)[0] + 8  # compression string, records length
    b[o + 1 : o + 9] = b"\xff" * 8  # the first inner record's length
    f.write_bytes(bytes(b))
    rc, _, err = run(capsys, ["video", bag, "-o", tmp_path / "o.mp4"])
    one_error(rc, err, bag, "is corrupt: cannot read its messages")


def test_record_npz_refuses_bad_recordings(tmp_path, capsys):
    for name, data in (("random.npz", noise(999)), ("empty.npz", b"")):
        (tmp_path / name).write_bytes(data)
        rc, _, err = run(capsys, ["record-npz", tmp_path / name, "-o", tmp_path / f"{name}.bag"])
        one_error(rc, err, name)
    np.savez(tmp_path / "ok.npz", pos_enu_m=np.zeros((1, 3, 3)))
    cut = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(cut[: len(cut) // 2])
    rc, _, err = run(capsys, ["record-npz", tmp_path / "cut.npz", "-o", tmp_path / "c.bag"])
    one_error(rc, err, "cut.npz", "not a readable .npz recording")


# ----------------------------------------------------------------------- 2. isr tune-dynamics


def _flight_case(tmp_path, case):
    if case == "random.ulg":
        (p := tmp_path / case).write_bytes(noise(3000))
    elif case == "empty.ulg":
        (p := tmp_path / case).write_bytes(b"")
    elif case == "cut.ulg":
        with open(ULOG, "rb") as f:
            (p := tmp_path / case).write_bytes(f.read(5000))
    elif case == "random.mcap":
        (p := tmp_path / case).write_bytes(noise(3000))
    elif case == "empty.mcap":
        (p := tmp_path / case).write_bytes(b"")
    elif case == "random.db3":
        (p := tmp_path / case).write_bytes(noise(3000))
    elif case == "cut.mcap":
        with open(
            os.path.join(DATA, "px4_sih_flight2_trim", "px4_sih_flight2_trim.mcap"), "rb"
        ) as f:
            (p := tmp_path / case).write_bytes(f.read(20))
    elif case == "dir_without_metadata":
        (p := tmp_path / case).mkdir()
    elif case == "bad_metadata":
        p = tmp_path / case
        p.mkdir()
        (p / "b.mcap").write_bytes(noise(100))
        (p / "metadata.yaml").write_text("rosbag2_bagfile_information:\n  version: 8\n")
    else:
        raise AssertionError(case)
    return p


FLIGHT_CASES = {
    "random.ulg": ("ulog", "cannot read"),
    "empty.ulg": ("ulog", "cannot read"),
    "cut.ulg": ("ulog", "cut short or corrupt"),
    "random.mcap": ("bag", "cannot open"),
    "empty.mcap": ("bag", "is empty (0 bytes)"),
    "random.db3": ("bag", "cannot open"),
    "cut.mcap": ("bag", "cannot open"),
    "dir_without_metadata": ("bag", "the directory has no metadata.yaml"),
    "bad_metadata": ("bag", "cannot open"),
}


@pytest.mark.parametrize("case", sorted(FLIGHT_CASES))
def test_tune_dynamics_refuses_bad_flight_logs(tmp_path, capsys, case):
    source, what = FLIGHT_CASES[case]
    path = _flight_case(tmp_path, case)
    out = tmp_path / "dyn.yaml"
    rc, _, err = run(capsys, ["tune-dynamics", "--from", source, "--path", path, "--out", out])
    one_error(rc, err, path.name, what)
    assert not out.exists()


def test_tune_dynamics_bag_with_damaged_messages(tmp_path, capsys):
    """A bag whose summary is intact but whose message data is not: cannot read its messages."""
    with open(SIH_MCAP, "rb") as f:
        b = bytearray(f.read())
    pos = len(MCAP_MAGIC)
    while b[pos] != 0x06:
        pos += 9 + struct.unpack_from("<Q", b, pos + 1)[0]
    o = pos + 9 + 28
    o += 4 + struct.unpack_from("<I", b, o)[0] + 8
    b[o + 1 : o + 9] = b"\xff" * 8
    (bag := tmp_path / "damaged.mcap").write_bytes(bytes(b))
    rc, _, err = run(capsys, ["tune-dynamics", "--from", "bag", "--path", bag])
    one_error(rc, err, "damaged.mcap")


# ------------------------------------------------------------------------------- 3. policies


@pytest.fixture(scope="module")
def obs_dim():
    from isr_training.env import EnvConfig, ISREnv

    return ISREnv(EnvConfig(num_worlds=1)).obs_dim


def _script(path, in_dim, meta):
    torch.manual_seed(0)
    m = torch.jit.trace(torch.nn.Linear(in_dim, 4), torch.zeros(1, in_dim))
    raw = meta if isinstance(meta, (bytes, str)) else json.dumps(meta)
    torch.jit.save(m, str(path), _extra_files={"meta.json": raw})
    return path


EVAL = ["eval", "--backend", "direct", "--world-seeds", "1", "--episode-seconds", "1"]


def _eval(capsys, policy, *extra):
    return run(capsys, [*EVAL, "--no-progress", "--policy", policy, *extra])


def test_torchscript_with_the_wrong_input_size_is_refused_before_running(tmp_path, capsys, obs_dim):
    from isr_training.task.config import TASK_VERSION

    pol = _script(tmp_path / "p.pt", obs_dim - 1, {"task_version": TASK_VERSION})
    rc, out, err = _eval(capsys, pol)
    line = one_error(rc, err, "p.pt", f"takes {obs_dim - 1} observation values", str(obs_dim))
    assert "mat1 and mat2" not in line and not out.strip()


def test_torchscript_metadata_disagreeing_with_its_network_is_refused_at_load(
    tmp_path, capsys, obs_dim
):
    from isr_training.task.config import TASK_VERSION

    pol = _script(tmp_path / "p.pt", obs_dim, {"task_version": TASK_VERSION, "obs_dim": 7})
    rc, _, err = _eval(capsys, pol)
    one_error(rc, err, "p.pt", "obs_dim 7", f"takes {obs_dim} observation values")


@pytest.mark.parametrize(
    "meta, what",
    [
        ([1, 2], "meta.json holds a JSON list, expected an object"),
        ("{not json", "meta.json is not valid JSON"),
        (bytes(range(256)) * 2, "meta.json is not text"),
        ({"obs_dim": "many"}, "obs_dim 'many'"),
    ],
    ids=["list", "invalid", "binary", "bad_obs_dim"],
)
def test_bad_torchscript_metadata(tmp_path, capsys, meta, what):
    pol = _script(tmp_path / "m.pt", 8, meta)
    rc, _, err = _eval(capsys, pol)
    one_error(rc, err, "m.pt", what)


def _policy_case(tmp_path, case):
    if case == "random.pt":
        (p := tmp_path / case).write_bytes(noise(3000))
    elif case == "empty.pt":
        (p := tmp_path / case).write_bytes(b"")
    elif case == "cut_torchscript.pt":
        data = _script(tmp_path / "full.pt", 8, {}).read_bytes()
        (p := tmp_path / case).write_bytes(data[: len(data) // 2])
    elif case == "cut_state_dict.pt":
        torch.save({"model": {"a": torch.zeros(100)}, "meta": {}}, tmp_path / "full_sd.pt")
        data = (tmp_path / "full_sd.pt").read_bytes()
        (p := tmp_path / case).write_bytes(data[: len(data) // 2])
    elif case == "pickled_object.pt":
        torch.save({"model": {"x": torch.zeros(2)}, "meta": {"when": _Obj()}}, tmp_path / case)
        p = tmp_path / case
    elif case == "random.onnx":
        (p := tmp_path / case).write_bytes(noise(3000))
    elif case == "empty.onnx":
        (p := tmp_path / case).write_bytes(b"")
    elif case == "cut.onnx":
        import onnx
        from onnx import TensorProto, helper

        x = helper.make_tensor_value_info("state", TensorProto.FLOAT, [None, 8])
        y = helper.make_tensor_value_info("action", TensorProto.FLOAT, [None, 8])
        graph = helper.make_graph(
            [helper.make_node("Identity", ["state"], ["action"])], "g", [x], [y]
        )
        data = onnx.helper.make_model(graph).SerializeToString()
        (p := tmp_path / case).write_bytes(data[: len(data) // 2])
    else:
        raise AssertionError(case)
    return p


class _Obj:
    pass


POLICY_CASES = {
    "random.pt": "is not a policy file",
    "empty.pt": "is empty (0 bytes)",
    "cut_torchscript.pt": "cut short or corrupt",
    "cut_state_dict.pt": "cut short or corrupt",
    "pickled_object.pt": "pickled Python objects",
    "random.onnx": "is not a valid ONNX model",
    "empty.onnx": "is empty (0 bytes)",
    "cut.onnx": "is not a valid ONNX model",
}


@pytest.mark.parametrize("case", sorted(POLICY_CASES))
def test_eval_refuses_corrupt_policy_files(tmp_path, capsys, case):
    pol = _policy_case(tmp_path, case)
    rc, out, err = _eval(capsys, pol)
    one_error(rc, err, case, POLICY_CASES[case])
    assert len(err.strip().splitlines()) == 1, err
    assert not out.strip()


# --------------------------------------------------------------------------------- 5. report


@pytest.mark.parametrize(
    "content, what",
    [
        (noise(300), "is not JSON text"),
        (b'{"experiment": "x", "results": {', "(the file is cut short)"),
        (b"[1, 2, 3]", "holds a list, expected an object"),
        (b"", "is empty"),
    ],
    ids=["random", "truncated", "list", "empty"],
)
def test_report_refuses_a_bad_summary(tmp_path, capsys, content, what):
    (exp := tmp_path / "exp").mkdir()
    (exp / "SUMMARY.json").write_bytes(content)
    rc, out, err = run(capsys, ["report", exp])
    one_error(rc, err, exp / "SUMMARY.json", what)
    assert not (exp / "report.html").exists() and "Missing" not in out


def test_report_refuses_a_cut_short_result_json(tmp_path, capsys):
    (exp := tmp_path / "exp").mkdir()
    (exp / "eval").mkdir()
    (exp / "eval" / "trained_direct.json").write_text('{"backend": "direct", "metrics": {"a": 1')
    rc, _, err = run(capsys, ["report", exp])
    one_error(rc, err, exp / "eval" / "trained_direct.json", "not valid JSON")


def test_report_refuses_a_bad_history(tmp_path, capsys):
    (exp := tmp_path / "exp").mkdir()
    (exp / "rl_model").mkdir()
    (exp / "rl_model" / "history.json").write_text("[]")
    rc, _, err = run(capsys, ["report", exp])
    one_error(rc, err, exp / "rl_model" / "history.json", "holds a list")


# ---------------------------------------------------------------------------- 6. output paths


def test_output_paths_are_checked_before_the_work(tmp_path, capsys):
    """Each command refuses its unusable output before reading its (here missing) inputs."""
    (d := tmp_path / "a_dir").mkdir()
    (f := tmp_path / "a_file").write_text("x")
    missing = tmp_path / "missing"
    cases = [
        (["video", missing, "-o", d], "-o/--out", "is a directory"),
        (["video", missing, "-o", f / "v.mp4"], "-o/--out", "is a file, not a directory"),
        (["report", d, "-o", d], "-o/--out", "is a directory"),
        (["record-npz", missing, "-o", d], "-o/--out", "exists already"),
        ([*EVAL, "--policy", missing, "--json", d], "--json", "is a directory"),
        ([*EVAL, "--policy", missing, "--json", f / "r.json"], "--json", "is a file"),
        ([*EVAL, "--policy", missing, "--record-dir", f], "--record-dir", "is a file"),
        (["parity", "--policy", missing, "--json", d], "--json", "is a directory"),
        (["px4-rehearse", "--policy", missing, "--bag", d], "--bag", "exists already"),
        (["tune-dynamics", "--from", "ulog", "--path", missing, "--out", d], "--out", "directory"),
        (
            ["tune-dynamics", "--from", "ulog", "--path", missing, "--json", f / "x.json"],
            "--json",
            "is a file",
        ),
        (
            ["tune-dynamics", "--from", "ulog", "--path", missing, "--plot", d],
            "--plot",
            "directory",
        ),
        (["train", "--preset", "quick", "--output-dir", f], "--output-dir", "is a file"),
        (["pipeline", "x", "--output-dir", f], "--output-dir", "is a file"),
        (["render", "--out", d], "--out", "is a directory"),
        (["demo", "--out", f], "--out", "is a file"),
    ]
    for argv, option, what in cases:
        rc, out, err = run(capsys, argv)
        line = one_error(rc, err, option, what)
        assert str(missing) not in line, (argv, line)  # refused before reading the inputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dir", "a_file"]
    assert not list(d.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to any directory")
def test_output_in_a_read_only_directory(tmp_path, capsys):
    (ro := tmp_path / "ro").mkdir()
    ro.chmod(0o500)
    try:
        rc, _, err = run(capsys, ["video", tmp_path / "missing", "-o", ro / "v.mp4"])
        one_error(rc, err, "-o/--out", "is not writable")
    finally:
        ro.chmod(0o700)


def test_output_in_a_read_only_file_system(capsys):
    if not os.path.isdir("/sys/kernel"):
        pytest.skip("no /sys")
    rc, _, err = run(capsys, ["video", "missing.mcap", "-o", "/sys/kernel/isr_video.mp4"])
    one_error(rc, err, "-o/--out", "is not writable")
