"""A policy flying through the offboard client and the PX4 emulator runs the ISR task on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isr_px4_eval.px4.convert import RosbagsTypes
from isr_px4_eval.px4.emulator import Px4Emulator, Px4EmulatorConfig
from isr_px4_eval.px4.loopback import run_loopback
from isr_px4_eval.px4.offboard import OffboardClient, OffboardClientConfig, Phase
from isr_px4_eval.px4.pilot import PolicyPilot

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

    from isr_px4_eval.cli.main import main

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
    from isr_px4_eval.evidence.bags import BagSource

    src = BagSource(bag)
    odom = [m for _, _, m in src.messages(["/drone_0/odom"])]
    assert len(odom) == 81 and src.metadata()["phase"] == "px4 rehearsal"
    assert main(["video", str(bag), "-o", str(tmp_path / "map.mp4"), "--mode", "map"]) == 0
    assert (tmp_path / "map.mp4").stat().st_size > 1000
    assert main(["px4-rehearse", "--policy", str(tmp_path / "missing.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ flight safety


def _fake_odom(t_us: int = 0):
    from isr_px4_eval.px4.convert import OdometryENU

    z3 = np.zeros(3)
    return OdometryENU(t_us, np.array([0.0, 0.0, 20.0]), z3, np.array([1.0, 0, 0, 0]), z3, 0.0)


def test_background_pilot_never_blocks_a_tick_and_holds_the_setpoint():
    import time

    from isr_px4_eval.px4.convert import VelocitySetpointENU
    from isr_px4_eval.px4.pilot import BackgroundPilot

    calls = []

    def slow_fly(odom, t_s):
        calls.append(t_s)
        if len(calls) == 2:
            time.sleep(0.4)  # one slow decision (a GC pause, a first-call initialisation...)
        if len(calls) >= 6:
            return None  # the episode ends
        return VelocitySetpointENU(np.array([float(len(calls)), 0.0, 0.0]), 0.0)

    bg = BackgroundPilot(lambda: (slow_fly, None), wait_s=0.02)
    deadline = time.perf_counter() + 5
    while not bg.ready():
        assert time.perf_counter() < deadline
        time.sleep(0.01)
    out, worst = [], 0.0
    for k in range(200):
        t0 = time.perf_counter()
        sp = bg(_fake_odom(k), 0.05 * k)
        worst = max(worst, time.perf_counter() - t0)
        out.append(None if sp is None else float(sp.vel_enu_m_s[0]))
        if sp is None:
            break
        time.sleep(0.01)
    assert worst < 0.1, worst  # the slow decision never held up a tick
    assert out[0] == 1.0 and out[-1] is None
    assert bg.late_ticks >= 5  # ticks that held the last setpoint while the slow one ran
    held = out[1 : 1 + bg.late_ticks]
    assert all(v == 1.0 for v in held), held  # hold, never a zero or a gap
    assert out[-2] == 5.0  # decisions went on after the slow one (each tick takes the newest)
    st = bg.stats()
    assert st["decisions"] == 6 and st["decision_max_s"] >= 0.4 and st["error"] == ""


def test_client_arms_only_once_the_policy_is_ready_and_never_if_it_fails():
    import threading
    import time

    from isr_px4_eval.px4.pilot import BackgroundPilot

    release = threading.Event()

    def build_slow():
        release.wait(10.0)
        return (lambda odom, t_s: None), None

    bg = BackgroundPilot(build_slow)
    seen = []

    def ready():
        seen.append(bg.ready())
        if len(seen) == 30:  # the build finishes 30 ticks into the wait
            release.set()
            time.sleep(0.2)
        return seen[-1]

    client = OffboardClient(bg, OffboardClientConfig(takeoff_altitude_m=2.0), ready=ready)
    emu = Px4Emulator(TYPES, Px4EmulatorConfig())
    r = run_loopback(client, emu, TYPES, max_s=40.0, step_s=0.02)
    phases = [e.phase for e in r.client.events]
    assert Phase.ARM in phases and seen[-1] is True and seen.count(False) >= 30
    stream_ticks = r.ticks_in(Phase.STREAM)
    assert all(not t.armed for t in stream_ticks)  # never armed while the policy was not ready
    assert all("offboard_control_mode" in t.sent for t in stream_ticks)  # heartbeat kept going

    def build_broken():
        raise FileNotFoundError("policy 'x.onnx' does not exist")

    bg = BackgroundPilot(build_broken)
    client = OffboardClient(bg, OffboardClientConfig(), ready=bg.ready)
    r = run_loopback(client, Px4Emulator(TYPES, Px4EmulatorConfig()), TYPES, max_s=5.0)
    assert r.client.phase == Phase.FAILED and "does not exist" in r.client.failure_reason
    assert not any(t.armed for t in r.ticks) and Phase.ARM not in [e.phase for e in r.client.events]


def test_warm_up_compiles_then_forgets_and_tick_gaps_are_recorded():
    from isr_px4_eval.px4.pilot import BackgroundPilot

    env = make_env(episode_s=6.0)
    east = torch.tensor([[0.5, 0.0, 0.0, 0.0]])
    pilot = PolicyPilot(env, lambda obs: east)
    assert pilot.warm_up() > 0.0
    assert pilot.decisions == 0 and pilot.trace == [] and pilot.episode is None
    bg = BackgroundPilot(lambda: (pilot, pilot), wait_s=0.5)
    client = OffboardClient(bg, OffboardClientConfig(takeoff_altitude_m=3.0), ready=bg.ready)
    import time

    while not bg.ready():
        time.sleep(0.01)
    r = run_loopback(client, Px4Emulator(TYPES, Px4EmulatorConfig()), TYPES, max_s=30.0)
    assert pilot.episode is not None and pilot.episode["length"] == 60  # 6 s whole episode
    assert r.client.phase == Phase.DONE
    ticks = r.client.tick_interval_stats()
    assert ticks["n"] > 100 and ticks["max_s"] == pytest.approx(0.05, abs=1e-6)  # loop period
