"""Typed configuration: dataclasses with a docstring per field, validated on load.

Every component of the workspace keeps one ``@dataclass`` config next to its code. YAML files and
``--set key=value`` overrides are the user-facing edge; :func:`from_dict` turns them into the typed
config and rejects unknown keys and values of the wrong type, naming the offending field with its
full dotted path (``dynamics.tau_horizontal_s``). Range checks live in each config's
``validate()`` method and raise :class:`ConfigError` through :func:`check`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

MAX_CONFIG_INT = 2**53
"""Largest integer a config accepts (exact as a float; seeds, counts and budgets are far below)."""
NONFINITE_FIELDS = frozenset({"fly_duration_s"})
"""Float fields whose meaning includes infinity (``inf`` = no limit); every other float field must
be finite."""

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field (``.field``, dotted path)."""

    def __init__(self, message: str, field: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


def check(condition: bool, field: str, message: str) -> None:
    """Raise :class:`ConfigError` naming ``field`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"invalid config field '{field}': {message}", field, message)


def run_command(func: Callable[[Any], Any], args: Any, interrupted: str = "interrupted") -> int:
    """Run a command-line action ``func(args)`` and return the exit status.

    Its own status (None = 0); 2 after one ``error: ...`` line for a user error (bad config, bad
    value, missing file); 130 after ``interrupted`` on Ctrl-C.
    """
    try:
        return int(func(args) or 0)
    except ConfigError as exc:
        # A command may map config fields to its options (``field_options``), so the message
        # names what the user typed, not an internal field name.
        option = (getattr(args, "field_options", None) or {}).get(exc.field)
        if option and exc.reason:
            print(f"error: {option}: {_one_line(exc.reason)}", file=sys.stderr)
        else:
            print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a directory where a file was expected, permissions, disk full...
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory (reduce worlds, drones or resolution)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130


def _one_line(exc: BaseException | str) -> str:
    """A message (an exception's) on one line (multi-line messages are joined with ``; ``)."""
    text = str(exc).strip() or type(exc).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def validate_tree(obj: Any, prefix: str = "") -> None:
    """Validate a config and every nested config dataclass, naming errors by full dotted path.

    Each config's ``validate()`` checks its own fields and names them relative to itself; this
    walks the tree and prefixes the path of the nested config (``task.reward.time``). Nested
    configs are checked first, so a config's cross-field checks see valid sections.
    """
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate_tree(value, f"{prefix}{f.name}.")
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as exc:
            if not prefix or exc.field is None:
                raise
            raise ConfigError(
                f"invalid config field '{prefix}{exc.field}': {exc.reason}",
                prefix + exc.field,
                exc.reason,
            ) from None


def _bad(path: str, reason: str) -> ConfigError:
    """The :class:`ConfigError` of a bad value at ``path`` (the field's dotted path)."""
    return ConfigError(f"invalid config field '{path}': {reason}", path, reason)


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise _bad(path, f"{value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise _bad(path, f"{value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _bad(path, f"expected a mapping, got {value!r}")
        return from_dict(tp, value, _prefix=path + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _bad(path, f"expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise _bad(path, f"expected {len(args)} values, got {len(value)}")
            return tuple(
                _coerce(v, a, f"{path}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad(path, f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise _bad(path, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(path, f"expected an integer, got {value!r}")
        if not -MAX_CONFIG_INT <= value <= MAX_CONFIG_INT:
            raise _bad(path, f"{value} is out of range (|value| <= 2**53)")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(path, f"expected a number, got {value!r}")
        if isinstance(value, int) and abs(value) > MAX_CONFIG_INT:
            raise _bad(path, f"{value} is out of range")
        if not math.isfinite(value) and path.rsplit(".", 1)[-1] not in NONFINITE_FIELDS:
            raise _bad(path, f"expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _bad(path, f"expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, _prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a plain mapping, strictly.

    Unknown keys and values of the wrong type raise :class:`ConfigError` naming the field; missing
    keys keep their defaults. Nested dataclass fields take nested mappings. The result is checked
    with :func:`validate_tree` (every nested ``validate()``, errors named by full path).
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key '{_prefix}{unknown[0]}' (valid keys: {', '.join(sorted(names))})"
        )
    kwargs = {k: _coerce(v, hints[k], _prefix + k) for k, v in data.items()}
    obj = cls(**kwargs)
    if not _prefix:
        validate_tree(obj)
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-data (YAML-safe) dict of a config dataclass, tuples turned into lists."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(obj))


MAX_YAML_BYTES = 16 * 1024 * 1024
"""Largest YAML file a config reader accepts."""
MAX_YAML_DEPTH = 32
"""Deepest nesting of mappings/lists a config reader accepts (configs nest 4 levels)."""
MAX_YAML_NODES = 100_000
"""Most scalars, mappings and lists in one YAML document."""


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` bounded in nesting depth and node count.

    Documents nested deeper than :data:`MAX_YAML_DEPTH` or with more than :data:`MAX_YAML_NODES`
    nodes are refused while composing (before building them, so no RecursionError).
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102
        self._depth += 1
        self._nodes += 1
        if self._depth > MAX_YAML_DEPTH:
            mark = self.peek_event().start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark
            )
        if self._nodes > MAX_YAML_NODES:
            mark = self.peek_event().start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"more than {MAX_YAML_NODES} values", mark
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _yaml_error(source: str, exc: yaml.YAMLError) -> ConfigError:
    """``<source>:<line>:<column>: <what>`` of a YAML error."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
    context = getattr(exc, "context", None)
    what = f"{context}: {problem}" if context and context not in problem else problem
    if mark is not None:
        return ConfigError(f"{source}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {what}")
    return ConfigError(f"{source}: invalid YAML: {what}")


def parse_yaml(text: str, source: str, mapping: bool = True) -> Any:
    """Parse YAML ``text`` safely (no code, bounded depth and size); errors name ``source``.

    With ``mapping`` the document must be a mapping (or empty: ``{}``). Every problem is a
    :class:`ConfigError` ``<source>:<line>:<column>: <what>``.
    """
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ConfigError(f"{source}:{line}: invalid YAML: contains a NUL byte (binary file?)")
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None
    if mapping:
        if data is None:
            return {}
        if not isinstance(data, dict):
            kind = type(data).__name__.replace("NoneType", "null")
            raise ConfigError(
                f"{source}: expected a mapping of keys at the top level, got a {kind}"
            )
        bad = [k for k in data if not isinstance(k, str)]
        if bad:
            raise ConfigError(f"{source}: keys must be strings, got {bad[0]!r}")
    return data


def read_text_file(
    path: str | Path, what: str = "file", max_bytes: int = MAX_YAML_BYTES, kind: str = "UTF-8 text"
) -> str:
    """UTF-8 text of ``path``, or a :class:`ConfigError` naming it.

    A missing file, a directory, a binary or oversized file are errors; ``what`` names the kind
    of file in the message ("config file", "policy metadata"...), ``kind`` what its content must
    be ("is not <kind>" for binary data).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory, not a file")
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ConfigError(
                f"{what} {path} is {size / 2**20:.1f} MiB (at most {max_bytes / 2**20:.0f})"
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {path} is not {kind} (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None


def read_yaml(path: str | Path, what: str = "config file", mapping: bool = True) -> Any:
    """Read and parse a YAML file (see :func:`parse_yaml`); every error names the file."""
    return parse_yaml(read_text_file(path, what), str(path), mapping=mapping)


def load_yaml(cls: type[T], path: str | Path, section: str | None = None) -> T:
    """Load ``cls`` from a YAML file (optionally one top-level ``section`` of it)."""
    data = read_yaml(path)
    if section is not None:
        if section not in data:
            raise ConfigError(f"config file {path} has no section '{section}'")
        data = data[section]
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"config file {path}: section '{section}' must be a mapping")
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}", exc.field, exc.reason) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one ``--set a.b.c=value`` override; the value is read as YAML (numbers, bools...)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    if len(text) > 10_000:
        raise ConfigError(f"override '{text[:40]}...' is longer than 10,000 characters")
    value = parse_yaml(raw, f"override '{text}'", mapping=False)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads "3e-4" (no dot) as a string
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the nested mapping ``data`` with ``key=value`` overrides applied."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{k}' is not a section")
        node[keys[-1]] = value
    return out


def check_device(device: str, field: str = "device") -> None:
    """Check a torch device string (``cpu``, ``cuda``, ``cuda:1``) and that it exists here."""
    import torch

    try:
        dev = torch.device(str(device))
    except (RuntimeError, ValueError):
        raise _bad(field, f"unknown device {device!r} (use cpu, cuda or cuda:N)") from None
    check(dev.type in ("cpu", "cuda"), field, f"must be cpu or cuda[:N], got {device!r}")
    if dev.type == "cuda":
        check(torch.cuda.is_available(), field, f"{device!r}: CUDA is not available here")
        n = torch.cuda.device_count()
        check(
            dev.index is None or dev.index < n,
            field,
            f"{device!r}: this machine has {n} CUDA device(s)",
        )


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
"""Names that become file or directory names: 1-100 letters, digits, ``. _ + -``, not leading
with a dot (so never ``..``, never a path, never hidden)."""


def check_name(name: str, field: str = "name") -> None:
    """Check a name that becomes a file or directory name (see :data:`NAME_PATTERN`)."""
    check(
        isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None,
        field,
        f"must be 1-100 characters of letters, digits, '.', '_', '+', '-' (not starting with "
        f"'.'), got {name[:40]!r}{'...' if len(str(name)) > 40 else ''}",
    )


def available_memory_bytes() -> int | None:
    """Memory this process may still allocate (``MemAvailable``, capped by a cgroup limit)."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 2**60:
                free = int(limit) - int(Path(usage_file).read_text().strip())
                avail = free if avail is None else min(avail, free)
            break
        except (OSError, ValueError):
            continue
    return avail


_MEMORY_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar("memory_checks", default=True)


@contextlib.contextmanager
def memory_checks(enabled: bool) -> Iterator[None]:
    """Turn :func:`check_memory` on or off inside the block.

    Off while reading the config of a finished experiment for its task only (its training worlds
    are not built then).
    """
    token = _MEMORY_CHECKS.set(enabled)
    try:
        yield
    finally:
        _MEMORY_CHECKS.reset(token)


def check_memory(estimate_bytes: float, what: str, field: str) -> None:
    """Refuse a request whose estimated memory exceeds what is available (with the estimate)."""
    if not _MEMORY_CHECKS.get():
        return
    avail = available_memory_bytes()
    if avail is None:
        return
    check(
        estimate_bytes <= 0.8 * avail,
        field,
        f"{what} needs about {estimate_bytes / 2**30:.1f} GiB, more than 80% of the "
        f"{avail / 2**30:.1f} GiB of memory available now (reduce it, or free memory)",
    )


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf; numpy scalars too) replaced by ``None``.

    JSON has no NaN or Infinity: Python's ``json`` would write the invalid literals ``NaN`` and
    ``Infinity``. Tuples become lists, numpy scalars and arrays plain numbers and lists.
    """
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    tolist = getattr(obj, "tolist", None)  # numpy / torch scalars and arrays
    if callable(tolist):
        return json_safe(tolist())
    return obj


def json_dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` ``(obj)``: never NaN/Infinity literals."""
    import json

    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def json_dump(obj: Any, fp: Any, **kwargs: Any) -> None:
    """``json.dump`` of :func:`json_safe` ``(obj)``: never NaN/Infinity literals."""
    fp.write(json_dumps(obj, **kwargs))
