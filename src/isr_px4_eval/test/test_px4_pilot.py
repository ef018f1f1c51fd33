"""A policy flying through the offboard client and the PX4 emulator runs the ISR task on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isr_px4_eval.loopback import run_loopback
from isr_px4_eval.offboard import OffboardClient, OffboardClientConfig, Phase
from isr_px4_eval.px4_convert import RosbagsTypes
from isr_px4_eval.px4_emulator import Px4Emulator, Px4EmulatorConfig
from isr_px4_eval.px4_pilot import PolicyPilot

torch.set_num_threads(1)
TYPES = RosbagsTypes()


def make_env(episode_s: float, seed: int = 3):
    from isr_training.env import EnvConfig, ISREnv

    cfg = EnvConfig(num_worlds=1, drones_per_world=1, stagger=False, world_seeds=[seed])
    cfg.task.episode_length_s = episode_s
    return ISREnv(cfg)


def fly(pilot: PolicyPilot, takeoff_m: float, max_s: float):
    client = OffboardClient(pilot, OffboardClientConfig(takeoff_altitude_m=takeoff_m))
    emu = Px4Emulator(TYPES, Px4EmulatorConfig())
    return run_loopback(client, emu, TYPES, max_s=max_s, step_s=0.02)


def test_pilot_runs_the_task_on_the_flown_vehicle_and_keeps_the_geofence():
    env = make_env(episode_s=25.0)
    east = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    pilot = PolicyPilot(env, lambda obs: east)
    r = fly(pilot, takeoff_m=8.0, max_s=45.0)
    phases = [e.phase for e in r.client.events]
    assert Phase.FLY in phases and phases[phases.index(Phase.FLY) + 1] == Phase.LAND
    ep = pilot.episode
    assert ep is not None, "the episode did not end"
    steps = round(25.0 / env.task.control_dt_s)
    assert ep["length"] == steps and pilot.decisions == steps
    # 10 m/s east for 25 s is further than the 200 m area: the safety filter stops it at the fence
    w = env.world
    pos = np.array([t["pos_enu_m"] for t in pilot.trace])
    assert np.all(pos[:, :2] <= w.geofence_max_m[0, :2].numpy() + 1e-3)
    assert ep["geofence_breaches"] == 0 and ep["safety_interventions"] > 10
    assert pos[-1, 0] - pos[0, 0] > 40.0  # it did fly east (world frame)
    # the first world position is the environment's spawn (PX4 local origin mapped onto it)
    spawn_lo, spawn_hi = w.spawn_min_m[0].numpy(), w.spawn_max_m[0].numpy()
    assert np.all(pos[0, :2] >= spawn_lo - 1e-3) and np.all(pos[0, :2] <= spawn_hi + 1e-3)
    assert ep["coverage"] > 0.0 and np.isfinite(ep["return"])


@pytest.mark.integration
def test_scripted_expert_through_px4_emulator_searches():
    from isr_training.baselines import ScriptedExpert

    env = make_env(episode_s=30.0)
    pilot = PolicyPilot(env, ScriptedExpert(env))
    fly(pilot, takeoff_m=20.0, max_s=60.0)
    ep = pilot.episode
    assert ep is not None
    pos = np.array([t["pos_enu_m"] for t in pilot.trace])
    assert np.linalg.norm(np.diff(pos[:, :2], axis=0), axis=1).sum() > 150.0
    assert ep["coverage"] > 0.05 and ep["collisions"] == 0


@pytest.mark.integration
def test_px4_rehearse_cli_flies_an_exported_policy(tmp_path, capsys, export_tiny_policy):
    import json

    from isr_px4_eval.cli import main

    policy = export_tiny_policy(tmp_path / "policy")
    out, bag = tmp_path / "rehearse.json", tmp_path / "bag"
    argv = ["px4-rehearse", "--policy", str(policy), "--world-seed", "5", "--episode-seconds",
            "8", "--takeoff-altitude", "5", "--json", str(out), "--bag", str(bag)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "takeoff@" in printed and "fly@" in printed and "done@" in printed
    res = json.loads(out.read_text())
    assert res["phase"] == "done" and res["episode"]["episode_length_s"] == pytest.approx(8.0)
    assert res["messages"]["trajectory_setpoint"] > 8.0 / 0.05  # 20 Hz setpoints while flying
    assert len(res["trajectory"]) == 81  # 80 decisions and the final pose
    # the episode as a rosbag2 of the live graph's topics; isr video renders it
    from isr_px4_eval.recording import BagSource

    src = BagSource(bag)
    odom = [m for _, _, m in src.messages(["/drone_0/odom"])]
    assert len(odom) == 81 and src.metadata()["phase"] == "px4 rehearsal"
    assert main(["video", str(bag), "-o", str(tmp_path / "map.mp4"), "--mode", "map"]) == 0
    assert (tmp_path / "map.mp4").stat().st_size > 1000
    assert main(["px4-rehearse", "--policy", str(tmp_path / "missing.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
