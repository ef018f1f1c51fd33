"""File checks shared by every command: output paths, JSON inputs, atomic writes.

The lowest package of the workspace holds them so that every other package can import them.

- :func:`check_output_file` / :func:`check_output_dir`: refuse an output path that cannot be
  written (a directory where a file is expected, a file where a directory is expected, a parent
  that is a file or is not writable) *before* a command starts its work. They create nothing.
- :func:`read_json_file`: a JSON file, or one :class:`~isr_direct_dynamics.config.ConfigError`
  naming the file and what is wrong (empty, not UTF-8, invalid or cut-short JSON, a list where an
  object is expected).
- :func:`atomic_output` / :func:`atomic_write_text`: write to a temporary file in the target's
  folder, then ``os.replace`` it into place, so a crash leaves the old file or the new one, never
  a torn one. The temporary file is named ``.<name>.<pid>-<8 hex>.tmp`` and is removed on any
  exception (``KeyboardInterrupt`` included).
- :func:`remove_stale_temp_files`: a ``kill -9`` during a write leaves that temporary file
  behind. The writer itself (for its target) and the commands that reopen a directory
  (``isr train --resume``, ``isr pipeline --resume``) delete the stale ones: a temporary file is
  **stale when the process named by its pid is not running, or when it was last modified more
  than** :data:`STALE_TEMP_AGE_S` **seconds ago** (a live writer writes its file continuously and
  renames it at once; nothing stays mid-write for a minute). Files of the older naming schemes
  (``.<name>.tmp``, ``.<name>.tmp<pid>``, ``.<name>.<8 chars>.tmp``) carry no usable pid and are
  stale after :data:`STALE_TEMP_AGE_S` seconds. Only names of these patterns are ever deleted.

Every error is a :class:`~isr_direct_dynamics.config.ConfigError` (a ``ValueError``): the ``isr``
command prints it as one ``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import ConfigError, read_text_file

STALE_TEMP_AGE_S = 60.0
"""Age (since last modification) after which a temporary file of an atomic write is stale."""

MAX_JSON_BYTES = 256 * 1024 * 1024
"""Largest JSON file :func:`read_json_file` reads."""

_TEMP_NEW = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")
_TEMP_OLD = re.compile(r"^\.(?P<name>.+?)(?:\.tmp\d*|\.[A-Za-z0-9_]{8}\.tmp)$")


def describe_exception(exc: BaseException, limit: int = 160) -> str:
    """``<Type>: <first line of the message>`` (shortened), for one-line error messages."""
    text = str(exc).strip().splitlines()
    first = text[0].strip() if text else ""
    if len(first) > limit:
        first = first[: limit - 3] + "..."
    name = type(exc).__name__
    return f"{name}: {first}" if first else name


# ------------------------------------------------------------------------------ output paths


def _existing_ancestor(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable_dir(directory: Path, option: str, target: Path) -> None:
    """``directory`` exists: it must be a directory we can create files in."""
    if not directory.is_dir():
        raise ConfigError(f"{option} {target}: {directory} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{option} {target}: directory {directory} is not writable "
            f"({exc.strerror or describe_exception(exc)})"
        ) from None


def check_output_file(path: str | Path, option: str = "output") -> Path:
    """Check that a file can be written at ``path`` (before the work starts); returns it.

    Refused: ``path`` is an existing directory, an existing file that is not writable, or a path
    whose nearest existing parent is a file or a directory that is not writable. Missing parent
    directories are fine (the writer creates them). ``option`` names the flag in the message.
    """
    p = Path(path)
    if str(path) == "":
        raise ConfigError(f"{option}: empty path")
    if p.is_dir():
        raise ConfigError(f"{option} {p} is a directory; give a file path")
    if p.exists():
        if not p.is_file():
            raise ConfigError(f"{option} {p} exists and is not a regular file")
        if not os.access(p, os.W_OK):
            raise ConfigError(f"{option} {p} exists and is not writable")
    _check_writable_dir(_existing_ancestor(p.parent), option, p)
    return p


def check_output_dir(path: str | Path, option: str = "output directory", new: bool = False) -> Path:
    """Check that ``path`` can be (or is) a directory we write files into; returns it.

    Refused: ``path`` is an existing file, a directory that is not writable, or a path whose
    nearest existing parent is a file or not writable. With ``new`` the directory must not exist
    yet (a bag directory to create).
    """
    p = Path(path)
    if str(path) == "":
        raise ConfigError(f"{option}: empty path")
    if p.exists():
        if new:
            raise ConfigError(f"{option} {p} exists already; choose another path")
        if not p.is_dir():
            raise ConfigError(f"{option} {p} is a file; give a directory")
        _check_writable_dir(p, option, p)
        return p
    _check_writable_dir(_existing_ancestor(p.parent), option, p)
    return p


# ----------------------------------------------------------------------------------- reading


_JSON_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    for t, name in _JSON_KINDS.items():
        if isinstance(value, t):
            return name
    return "a number"


def read_json_file(path: str | Path, what: str = "JSON file", expect: type | None = dict) -> Any:
    """Parse the JSON file ``path``; every problem is one ``ConfigError`` naming the file.

    ``what`` names the kind of file ("SUMMARY.json", "checkpoint marker"...); ``expect`` is the
    type the top level must have (``dict``: a JSON object; None: anything).
    """
    p = Path(path)
    text = read_text_file(p, what, MAX_JSON_BYTES, kind="JSON text")
    if not text.strip():
        raise ConfigError(f"{what} {p} is empty ({len(text)} bytes): not JSON")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        cut = " (the file is cut short)" if exc.pos >= len(text.rstrip()) else ""
        raise ConfigError(
            f"{what} {p} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{cut}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{what} {p} is not usable JSON: nested too deeply") from None
    if expect is not None and not isinstance(data, expect):
        raise ConfigError(
            f"{what} {p} holds {_json_kind(data)}, expected {_JSON_KINDS.get(expect, expect)}"
        )
    return data


# ------------------------------------------------------------------------------ atomic writes


def temp_path_for(path: str | Path) -> Path:
    """A fresh temporary-file path next to ``path``: ``.<name>.<pid>-<8 hex>.tmp``."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _pid_running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # exists (another user's), or not a pid at all: do not judge by it
    return True


def is_stale_temp_file(path: str | Path, now: float | None = None) -> bool:
    """Whether ``path`` is a temporary file of an atomic write left by a dead writer.

    See the module docstring: its pid is not running, or it is older than
    :data:`STALE_TEMP_AGE_S`. Names that are not temporary files of this module are never stale.
    """
    p = Path(path)
    m = _TEMP_NEW.match(p.name)
    if m is None and _TEMP_OLD.match(p.name) is None:
        return False
    try:
        age = (time.time() if now is None else now) - p.lstat().st_mtime
    except OSError:
        return False
    if age > STALE_TEMP_AGE_S:
        return True
    return m is not None and not _pid_running(int(m.group("pid")))


def remove_stale_temp_files(
    directory: str | Path, name: str | None = None, recursive: bool = False
) -> list[Path]:
    """Delete the stale temporary files (see the module docstring) in ``directory``.

    ``name``: only those of this target file name; ``recursive``: in sub-directories too.
    Returns what was deleted; unreadable directories and vanished files are skipped.
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    removed: list[Path] = []
    try:
        candidates = d.rglob(".*tmp*") if recursive else d.glob(".*tmp*")
        for f in list(candidates):
            if name is not None:
                m = _TEMP_NEW.match(f.name) or _TEMP_OLD.match(f.name)
                if m is None or m.group("name") != name:
                    continue
            if f.is_file() and not f.is_symlink() and is_stale_temp_file(f):
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
                    removed.append(f)
    except OSError:
        pass
    return removed


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path to write; when the block succeeds it replaces ``path`` atomically.

    ``with atomic_output(p) as tmp: ...`` creates the parent folder, deletes stale temporary
    files of ``p`` first, and removes ``tmp`` when the block raises (anything,
    ``KeyboardInterrupt`` included).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(p.parent, p.name)
    tmp = temp_path_for(p)
    try:
        yield tmp
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    p = Path(path)
    with atomic_output(p) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return p


def atomic_write_text(path: str | Path, text: str, fsync: bool = True) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_output`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync)


__all__ = [
    "STALE_TEMP_AGE_S",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_dir",
    "check_output_file",
    "describe_exception",
    "is_stale_temp_file",
    "read_json_file",
    "remove_stale_temp_files",
    "temp_path_for",
]
