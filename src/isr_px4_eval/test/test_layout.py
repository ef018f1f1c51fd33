"""The workspace's layering, read from the sources: no import points against the dependency rule.

Packages: ``isr_direct_dynamics <- isr_sim_bridge <- isr_training <- isr_px4_eval`` (a package
imports only those to its left). Inside ``isr_px4_eval`` the sub-packages are layered too (see
``ALLOWED``); every module lives in one of them. Imports inside functions count.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2]
PACKAGES = ("isr_direct_dynamics", "isr_sim_bridge", "isr_training", "isr_px4_eval")

ALLOWED: dict[str, set[str]] = {
    "px4": set(),
    "tuning": {"px4"},
    "evaluation": {"px4"},
    "evidence": set(),
    "pipeline": {"evaluation", "evidence"},
    "nodes": {"px4", "evaluation", "evidence"},
    "cli": {"px4", "tuning", "evaluation", "evidence", "pipeline"},
}
"""Sub-packages of ``isr_px4_eval`` each one may import (besides itself)."""


def imported_modules(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = path.parent.relative_to(SRC / path.relative_to(SRC).parts[0]).parts
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg[: len(pkg) - node.level + 1])
                name = ".".join(base + ([node.module] if node.module else []))
                out.add(name)
                if not node.module:
                    out.update(f"{name}.{a.name}" for a in node.names)
            else:
                out.add(node.module or "")
                out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def modules_of(package: str) -> list[Path]:
    root = SRC / package / package
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_packages_below(package):
    forbidden = set(PACKAGES[PACKAGES.index(package) + 1 :])
    bad = []
    for path in modules_of(package):
        for mod in imported_modules(path):
            if mod.split(".")[0] in forbidden:
                bad.append(f"{path.relative_to(SRC)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_isr_px4_eval_modules_live_in_subpackages():
    root = SRC / "isr_px4_eval" / "isr_px4_eval"
    flat = [p.name for p in root.glob("*.py") if p.name != "__init__.py"]
    assert not flat, f"modules outside a sub-package: {flat}"
    subs = {p.name for p in root.iterdir() if (p / "__init__.py").is_file()} - {"config"}
    assert subs == set(ALLOWED), subs ^ set(ALLOWED)  # config/: the packaged YAML files


def test_isr_px4_eval_subpackages_follow_the_layering():
    root = SRC / "isr_px4_eval" / "isr_px4_eval"
    bad = []
    for path in modules_of("isr_px4_eval"):
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            continue
        sub = parts[0]
        for mod in imported_modules(path):
            p = mod.split(".")
            if p[0] == "isr_px4_eval" and len(p) > 1 and p[1] in ALLOWED:
                if p[1] != sub and p[1] not in ALLOWED[sub]:
                    bad.append(f"{path.relative_to(root)} ({sub}) imports {mod}")
    assert not bad, "\n".join(bad)


def test_the_layering_check_sees_a_violation(tmp_path):
    """The checker itself: an upward import inside a function is found."""
    pkg = SRC / "isr_px4_eval" / "isr_px4_eval" / "px4"
    probe = pkg / "_layout_probe_tmp.py"
    probe.write_text("def f():\n    from isr_px4_eval.pipeline.full import PIPELINE_STAGES\n")
    try:
        with pytest.raises(AssertionError, match="_layout_probe_tmp.py"):
            test_isr_px4_eval_subpackages_follow_the_layering()
    finally:
        probe.unlink()


@pytest.mark.parametrize("package", PACKAGES)
def test_console_scripts_resolve(package):
    tree = ast.parse((SRC / package / "setup.py").read_text())
    specs = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if isinstance(k, ast.Constant) and k.value == "console_scripts":
                    specs = [e.value.split("=", 1)[1].strip() for e in v.elts]
    for spec in specs:
        mod, func = spec.split(":")
        assert callable(getattr(importlib.import_module(mod), func)), spec
