"""Shared file checks: output paths, JSON reading, atomic writes and their stale temporary files."""

from __future__ import annotations

import os
import time

import pytest

from isr_direct_dynamics.config import ConfigError
from isr_direct_dynamics.io_checks import (
    STALE_TEMP_AGE_S,
    atomic_output,
    atomic_write_text,
    check_output_dir,
    check_output_file,
    read_json_file,
    remove_stale_temp_files,
    temp_path_for,
)

pytestmark = pytest.mark.unit

DEAD_PID = 99_999_999  # above any pid_max: never a running process


def test_check_output_file(tmp_path):
    assert check_output_file(tmp_path / "new" / "deeper" / "r.json", "--json").name == "r.json"
    (tmp_path / "f").write_text("x")
    assert check_output_file(tmp_path / "f", "--json") == tmp_path / "f"  # overwrite is fine
    with pytest.raises(ConfigError, match=r"^--json .* is a directory; give a file path"):
        check_output_file(tmp_path, "--json")
    with pytest.raises(ConfigError, match=r"^--json .*f/r.json: .*/f is a file, not a directory"):
        check_output_file(tmp_path / "f" / "r.json", "--json")
    with pytest.raises(ConfigError, match="is not writable"):
        check_output_file("/sys/kernel/isr_test.json", "--json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # nothing created


def test_check_output_dir(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    assert check_output_dir(tmp_path, "--out") == tmp_path
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"^--out .*/f is a file; give a directory"):
        check_output_dir(tmp_path / "f", "--out")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        check_output_dir(tmp_path / "f" / "sub", "--out")
    with pytest.raises(ConfigError, match="exists already"):
        check_output_dir(tmp_path, "--bag", new=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


@pytest.mark.parametrize(
    "content, expect, what",
    [
        (b"", dict, "is empty"),
        (b"\x93\x00\xff", dict, "is not JSON text"),
        (b'{"a": [1, 2', dict, "the file is cut short"),
        (b'{"a": 1,}', dict, "is not valid JSON: Expecting property name"),
        (b"[1, 2]", dict, "holds a list, expected an object"),
        (b'"text"', list, "holds a string, expected a list"),
    ],
)
def test_read_json_file_errors_name_the_file(tmp_path, content, expect, what):
    p = tmp_path / "x.json"
    p.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        read_json_file(p, "result", expect)
    assert str(e.value).startswith(f"result {p} ") and what in str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_read_json_file_ok_and_missing(tmp_path):
    (tmp_path / "x.json").write_text('{"a": 1}')
    assert read_json_file(tmp_path / "x.json") == {"a": 1}
    with pytest.raises(ConfigError, match="not found"):
        read_json_file(tmp_path / "y.json")
    with pytest.raises(ConfigError, match="is a directory"):
        read_json_file(tmp_path)


def test_atomic_write_leaves_no_temp_file_on_error(tmp_path):
    target = tmp_path / "latest.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]


def _aged(path, seconds):
    path.write_bytes(b"")
    t = time.time() - seconds
    os.utime(path, (t, t))
    return path


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path):
    """Rule: a temp file is stale when its pid is not running or it is older than 60 s."""
    d = tmp_path
    own = temp_path_for(d / "latest.pt")
    assert own.name.startswith(f".latest.pt.{os.getpid()}-") and own.name.endswith(".tmp")
    dead = _aged(d / f".latest.pt.{DEAD_PID}-0123abcd.tmp", 0)  # kill -9: 0 bytes, pid gone
    alive_fresh = _aged(own, 0)  # a writer at work (this process)
    alive_old = _aged(d / f".latest.pt.{os.getpid()}-feedbeef.tmp", STALE_TEMP_AGE_S + 5)
    legacy_old = _aged(d / ".latest.pt.tmp1234", STALE_TEMP_AGE_S + 5)
    mkstemp_old = _aged(d / ".latest.pt.k2j4h_9q.tmp", STALE_TEMP_AGE_S + 5)
    legacy_fresh = _aged(d / ".latest.pt.tmp", 0)
    other_target = _aged(d / f".iter_000001.pt.{DEAD_PID}-0123abcd.tmp", 0)
    not_ours = _aged(d / "notes.tmp", STALE_TEMP_AGE_S + 5)
    removed = remove_stale_temp_files(d, "latest.pt")
    assert sorted(removed) == sorted([dead, alive_old, legacy_old, mkstemp_old])
    for kept in (alive_fresh, legacy_fresh, other_target, not_ours):
        assert kept.exists()
    (sub := d / "sub").mkdir()
    nested = _aged(sub / f".x.json.{DEAD_PID}-00000000.tmp", 0)
    assert sorted(remove_stale_temp_files(d, recursive=True)) == sorted([other_target, nested])
    assert not other_target.exists() and not nested.exists() and not_ours.exists()


def test_the_writer_removes_stale_temp_files_of_its_target(tmp_path):
    dead = _aged(tmp_path / f".SUMMARY.json.{DEAD_PID}-0123abcd.tmp", 0)
    atomic_write_text(tmp_path / "SUMMARY.json", "{}")
    assert not dead.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SUMMARY.json"]
