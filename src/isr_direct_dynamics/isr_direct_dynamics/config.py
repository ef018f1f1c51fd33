"""Typed configuration: dataclasses with a docstring per field, validated on load.

Every component of the workspace keeps one ``@dataclass`` config next to its code. YAML files and
``--set key=value`` overrides are the user-facing edge; :func:`from_dict` turns them into the typed
config and rejects unknown keys and values of the wrong type, naming the offending field with its
full dotted path (``dynamics.tau_horizontal_s``). Range checks live in each config's
``validate()`` method and raise :class:`ConfigError` through :func:`check`.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

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
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130


def validate_tree(obj: Any, prefix: str = "") -> None:
    """Validate a config and every nested config dataclass, naming errors by full dotted path.

    Each config's ``validate()`` checks its own fields and names them relative to itself; this
    walks the tree and prefixes the path of the nested config (``task.reward.time``).
    """
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
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate_tree(value, f"{prefix}{f.name}.")


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
        raise ConfigError(f"invalid config field '{path}': {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"invalid config field '{path}': {value!r} is not one of {list(args)}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"invalid config field '{path}': expected a mapping, got {value!r}")
        return from_dict(tp, value, _prefix=path + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"invalid config field '{path}': expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(
                    f"invalid config field '{path}': expected {len(args)} values, got {len(value)}"
                )
            return tuple(
                _coerce(v, a, f"{path}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"invalid config field '{path}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"invalid config field '{path}': expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"invalid config field '{path}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"invalid config field '{path}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"invalid config field '{path}': expected a string, got {value!r}")
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


def load_yaml(cls: type[T], path: str | Path, section: str | None = None) -> T:
    """Load ``cls`` from a YAML file (optionally one top-level ``section`` of it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if section is not None:
        if section not in data:
            raise ConfigError(f"config file {path} has no section '{section}'")
        data = data[section]
    return from_dict(cls, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one ``--set a.b.c=value`` override; the value is read as YAML (numbers, bools...)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    value = yaml.safe_load(raw)
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
