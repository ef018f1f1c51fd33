"""Typed configuration helpers: strict loading, overrides, error paths."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from isr_direct_dynamics.config import (
    ConfigError,
    apply_overrides,
    check,
    from_dict,
    parse_override,
    to_dict,
)

pytestmark = pytest.mark.unit


@dataclass
class Inner:
    rate_hz: float = 1.0
    band: tuple[float, float] = (1.0, 2.0)

    def validate(self) -> None:
        check(self.rate_hz > 0, "rate_hz", f"must be > 0, got {self.rate_hz}")


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)


def test_round_trip_and_tuple_coercion():
    cfg = from_dict(Outer, {"inner": {"band": [3, 4]}})
    assert cfg.inner.band == (3.0, 4.0)
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_nested_errors_name_the_full_path():
    with pytest.raises(ConfigError, match=r"'inner\.rate_hz': must be > 0"):
        from_dict(Outer, {"inner": {"rate_hz": -1}})
    with pytest.raises(ConfigError, match=r"unknown config key 'inner\.rate'"):
        from_dict(Outer, {"inner": {"rate": 2}})
    with pytest.raises(ConfigError, match=r"'inner\.band'.*expected 2 values"):
        from_dict(Outer, {"inner": {"band": [1, 2, 3]}})
    with pytest.raises(ConfigError, match=r"'name': expected a string"):
        from_dict(Outer, {"name": 3})


def test_overrides():
    assert parse_override("a.b=3e-4") == (["a", "b"], 3e-4)  # YAML 1.1 would give a string
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=fast") == (["a"], "fast")
    data = apply_overrides(to_dict(Outer()), ["inner.rate_hz=5", "name=y"])
    assert from_dict(Outer, data) == Outer(name="y", inner=Inner(rate_hz=5.0))
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("novalue")
