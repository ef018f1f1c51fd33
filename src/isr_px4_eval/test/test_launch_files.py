"""Launch files: checked with ast everywhere, and loaded with `launch` where it is installed."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
LAUNCH_FILES = {
    "fast_train": ROOT / "src/isr_training/launch/fast_train.launch.py",
    "eval": ROOT / "src/isr_px4_eval/launch/eval.launch.py",
    "pipeline": ROOT / "launch/isr_pipeline.launch.py",
}
EXPECTED_ARGS = {
    "fast_train": {"num_drones", "config", "preset", "record"},
    "eval": {"backend", "policy", "px4_release", "namespace", "record"},
    "pipeline": {"stage", "num_drones", "config", "preset", "record", "backend", "policy",
                 "px4_release", "namespace"},
}  # fmt: skip


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _const(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def launch_info(path: Path) -> tuple[set[str], list[tuple[str, str]], list[list[str]]]:
    """(declared argument names, (package, executable) of Nodes, ExecuteProcess commands)."""
    args, nodes, procs = set(), [], []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        if name == "DeclareLaunchArgument":
            args.add(_const(node.args[0]))
        elif name == "Node":
            kw = {k.arg: _const(k.value) for k in node.keywords}
            nodes.append((kw.get("package"), kw.get("executable")))
        elif name == "ExecuteProcess":
            cmd = next(k.value for k in node.keywords if k.arg == "cmd")
            procs.append([_const(e) for e in cmd.elts if _const(e) is not None])
    return args, nodes, procs


def console_scripts(package: str) -> set[str]:
    """Names of ``console_scripts`` in ``src/<package>/setup.py`` (read with ast)."""
    tree = ast.parse((ROOT / "src" / package / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if k is not None and _const(k) == "console_scripts":
                    return {_const(e).split("=")[0].strip() for e in v.elts}
    return set()


def data_file_dirs(package: str) -> set[str]:
    text = (ROOT / "src" / package / "setup.py").read_text()
    return {d for d in ("config", "launch") if f'"/{d}", glob("{d}/' in text}


# ------------------------------------------------------------------------------ ast (always)
@pytest.mark.parametrize("name", sorted(LAUNCH_FILES))
def test_launch_arguments_declared(name):
    args, _, _ = launch_info(LAUNCH_FILES[name])
    assert EXPECTED_ARGS[name] <= args, EXPECTED_ARGS[name] - args


@pytest.mark.parametrize("name", sorted(LAUNCH_FILES))
def test_launch_nodes_are_console_scripts(name):
    _, nodes, _ = launch_info(LAUNCH_FILES[name])
    for package, executable in nodes:
        assert executable in console_scripts(package), (package, executable)


def test_expected_nodes_and_recording():
    _, nodes, procs = launch_info(LAUNCH_FILES["eval"])
    assert ("isr_px4_eval", "px4_eval_node") in nodes
    assert ("isr_px4_eval", "px4_emulator_node") in nodes
    assert ("isr_direct_dynamics", "direct_dynamics_node") in nodes
    assert any(p[:5] == ["ros2", "bag", "record", "-s", "mcap"] for p in procs)
    _, nodes, procs = launch_info(LAUNCH_FILES["fast_train"])
    assert nodes == [("isr_training", "trainer_node"), ("isr_sim_bridge", "sim_bridge_node")]
    assert any(p[:5] == ["ros2", "bag", "record", "-s", "mcap"] for p in procs)


def test_every_node_module_has_a_console_script_and_installed_files():
    assert "direct_dynamics_node" in console_scripts("isr_direct_dynamics")
    assert "sim_bridge_node" in console_scripts("isr_sim_bridge")
    assert "trainer_node" in console_scripts("isr_training")
    assert {"px4_eval_node", "px4_emulator_node"} <= console_scripts("isr_px4_eval")
    assert data_file_dirs("isr_training") == {"config", "launch"}
    assert data_file_dirs("isr_px4_eval") == {"config", "launch"}
    for pkg in ("isr_direct_dynamics", "isr_sim_bridge"):
        assert "config" in data_file_dirs(pkg)


def test_node_parameter_files_match_declared_defaults():
    import yaml

    from isr_direct_dynamics import direct_dynamics_node
    from isr_px4_eval.nodes import emulator_node as px4_emulator_node
    from isr_px4_eval.nodes import eval_node as px4_eval_node
    from isr_sim_bridge import sim_bridge_node
    from isr_training import trainer_node

    cases = [
        (direct_dynamics_node, "isr_direct_dynamics", "direct_dynamics"),
        (sim_bridge_node, "isr_sim_bridge", "sim_bridge"),
        (trainer_node, "isr_training", "trainer"),
        (px4_eval_node, "isr_px4_eval", "px4_eval"),
        (px4_emulator_node, "isr_px4_eval", "px4_emulator"),
    ]
    for module, pkg, node in cases:
        data = yaml.safe_load((ROOT / "src" / pkg / "config" / f"{node}.yaml").read_text())
        params = data[node]["ros__parameters"]
        assert params == module.DEFAULT_PARAMETERS, node


# ------------------------------------------------------------------------------ with launch
def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.generate_launch_description()


@pytest.mark.parametrize("name", sorted(LAUNCH_FILES))
def test_launch_files_load_with_launch(name):
    pytest.importorskip("launch", reason="ROS 2 'launch' is not installed here (no ROS 2)")
    pytest.importorskip("launch_ros", reason="ROS 2 'launch_ros' is not installed here")
    from launch.actions import DeclareLaunchArgument
    from launch_ros.actions import Node

    ld = _load(LAUNCH_FILES[name])
    declared = {e.name for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    assert EXPECTED_ARGS[name] <= declared
    for e in ld.entities:
        if isinstance(e, Node):
            assert e.node_executable in console_scripts(e.node_package)
