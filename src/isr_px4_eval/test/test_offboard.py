"""The offboard client's whole state machine against the PX4 emulator, over CDR-serialized px4_msgs.

Every message between the two goes through the same conversion code as the ROS nodes
(``encode_outbox`` / ``decode_inbox`` on the client side, ``px4_convert`` inside the emulator)
and through ``typestore.serialize_cdr`` / ``deserialize_cdr`` (``isr_px4_eval.px4.loopback``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from isr_px4_eval.px4.convert import (
    Px4,
    RosbagsTypes,
    VelocitySetpointENU,
    arm_command,
    offboard_control_mode_msg,
    read_vehicle_command_ack,
    read_vehicle_status,
    set_offboard_mode_command,
    vehicle_command_msg,
    velocity_setpoint_msg,
)
from isr_px4_eval.px4.emulator import Px4Emulator, Px4EmulatorConfig
from isr_px4_eval.px4.loopback import Faults, run_loopback
from isr_px4_eval.px4.offboard import (
    ClientInbox,
    OffboardClient,
    OffboardClientConfig,
    Phase,
    decode_inbox,
    encode_outbox,
)

pytestmark = pytest.mark.integration
torch.set_num_threads(1)

TYPES = RosbagsTypes()
FLY_S = 2.0


def east_and_turn(odom, t_s):
    """2 m/s east, 0.3 rad/s counter-clockwise, for FLY_S seconds."""
    if t_s >= FLY_S:
        return None
    return VelocitySetpointENU(np.array([2.0, 0.0, 0.0]), 0.3)


def hover_forever(odom, t_s):
    return VelocitySetpointENU(np.zeros(3), 0.0)


def client(policy=east_and_turn, **kw) -> OffboardClient:
    return OffboardClient(policy, OffboardClientConfig(takeoff_altitude_m=2.0, **kw))


def emulator(**kw) -> Px4Emulator:
    return Px4Emulator(TYPES, Px4EmulatorConfig(**kw))


def phases(c: OffboardClient) -> list[Phase]:
    return [e.phase for e in c.events]


def fly_start_us(c: OffboardClient) -> int:
    return next(e.t_us for e in c.events if e.phase == Phase.FLY)


# ------------------------------------------------------------------------------ unit level
def test_config_validation():
    with pytest.raises(ValueError, match="tick_period_s"):
        OffboardClientConfig(tick_period_s=0.2).validate()
    with pytest.raises(ValueError, match="on_link_loss"):
        OffboardClientConfig(on_link_loss="rtl").validate()
    with pytest.raises(ValueError, match="com_obl_rc_act"):
        Px4EmulatorConfig(com_obl_rc_act=3).validate()


def test_client_waits_for_px4_then_times_out():
    c = OffboardClient(hover_forever, OffboardClientConfig(px4_timeout_s=1.0))
    for k in range(30):
        out = c.tick(k * 50_000, ClientInbox())
        assert out.heartbeat is None and out.setpoint is None and not out.commands
    assert c.phase == Phase.FAILED
    assert "vehicle_status and vehicle_odometry" in c.failure_reason


def test_emulator_offboard_needs_a_live_heartbeat_and_routes_by_system_id():
    emu = emulator(num_vehicles=2)
    t = 1_000_000

    def send(*msgs, vehicle=0):
        nonlocal t
        t += 20_000
        out = emu.tick(t, [(vehicle, k, m) for k, m in msgs])
        return [(i, read_vehicle_command_ack(m)) for i, k, m in out if k == "vehicle_command_ack"]

    def cmd(c, system=1):
        c.target_system = system
        return ("vehicle_command", vehicle_command_msg(TYPES, t, c))

    sp = velocity_setpoint_msg(TYPES, t, VelocitySetpointENU(np.zeros(3), 0.0))
    # Setpoints alone are no offboard signal.
    assert send(("trajectory_setpoint", sp), cmd(set_offboard_mode_command()))[0][1].result == 1
    assert send(cmd(arm_command()))[0][1].result == 0  # arming in POSCTL is fine
    assert emu.vehicles[0].armed
    # With a heartbeat vehicle 1 (system id 2) accepts OFFBOARD; vehicle 0 is untouched.
    hb = ("offboard_control_mode", offboard_control_mode_msg(TYPES, t))
    acks = send(hb, cmd(set_offboard_mode_command(), system=2), vehicle=1)
    assert acks == [(1, acks[0][1])] and acks[0][1].accepted
    assert emu.vehicles[1].nav_state == Px4.NAVIGATION_STATE_OFFBOARD
    assert emu.vehicles[0].nav_state == Px4.NAVIGATION_STATE_POSCTL
    # A command for another system is ignored (no ack).
    assert send(cmd(arm_command(), system=9)) == []
    # The heartbeat goes stale after COM_OF_LOSS_T: arming in OFFBOARD is then refused.
    t += 1_100_000
    assert send(cmd(arm_command(), system=2), vehicle=1)[0][1].result == 1
    assert not emu.vehicles[1].armed and not emu.vehicles[1].failsafe  # no failsafe disarmed
    status = [
        read_vehicle_status(m) for i, k, m in emu.tick(t + 600_000, []) if k == "vehicle_status"
    ]
    assert [s.nav_state for s in status] == [
        Px4.NAVIGATION_STATE_POSCTL,
        Px4.NAVIGATION_STATE_OFFBOARD,
    ]


def test_wire_helpers_skip_unknown_keys():
    inbox = decode_inbox([("something_else", object())])
    assert inbox == ClientInbox()
    msgs = encode_outbox(TYPES, OffboardClient(hover_forever).tick(0), 0)
    assert msgs == []  # WAIT_FOR_PX4 sends nothing


# ------------------------------------------------------------------------------ scenarios
def test_happy_path_reaches_fly_and_lands():
    c = client()
    r = run_loopback(c, emulator(), TYPES, max_s=30)
    assert c.phase == Phase.DONE, c.failure_reason
    assert phases(c) == [
        Phase.WAIT_FOR_PX4, Phase.STREAM, Phase.REQUEST_OFFBOARD, Phase.ARM, Phase.TAKEOFF,
        Phase.FLY, Phase.LAND, Phase.DONE,
    ]  # fmt: skip
    before_request = []
    for t in r.ticks:
        if Px4.VEHICLE_CMD_DO_SET_MODE in t.commands:
            break
        before_request.append(t)
    streamed = [t for t in before_request
                if {"offboard_control_mode", "trajectory_setpoint"} <= set(t.sent)]  # fmt: skip
    assert len(streamed) >= 10
    # Heartbeat on every tick of every active phase, at >= 10 Hz.
    active = [t for t in r.ticks if t.phase not in (Phase.WAIT_FOR_PX4, Phase.DONE)]
    assert all("offboard_control_mode" in t.sent for t in active)
    assert max(np.diff([t.t_us for t in active])) <= 100_000
    # Mode request before arming, then land.
    cmds = [c for t in r.ticks for c in t.commands]
    assert cmds.index(176) < cmds.index(400) < cmds.index(21)
    fly = r.ticks_in(Phase.FLY)
    assert FLY_S - 0.1 <= (fly[-1].t_us - fly[0].t_us) / 1e6 <= FLY_S + 0.1
    assert all(t.nav_state == Px4.NAVIGATION_STATE_OFFBOARD and t.armed for t in fly)
    # ENU -> NED -> model: flying east moves +x (ENU), the takeoff climbed, the yaw turned CCW.
    assert fly[-1].pos_enu_m[0] - fly[0].pos_enu_m[0] > 1.5
    assert abs(fly[-1].pos_enu_m[1] - fly[0].pos_enu_m[1]) < 0.5
    assert fly[0].pos_enu_m[2] > 1.8
    assert c.odometry is not None and c.odometry.yaw_rad > 0.3
    # Landed and disarmed by the emulator's land detector.
    assert r.ticks[-1].pos_enu_m[2] < 0.05 and not r.ticks[-1].armed
    assert r.emulator.vehicles[0].latest_disarming_reason == Px4.ARM_DISARM_REASON_AUTO_DISARM_LAND


def test_refused_offboard_without_heartbeat_stream():
    c = client(send_heartbeat=False)
    r = run_loopback(c, emulator(), TYPES, max_s=10)
    assert c.phase == Phase.FAILED
    assert "offboard refused" in c.failure_reason and "TEMPORARILY_REJECTED" in c.failure_reason
    assert Phase.ARM not in phases(c)
    assert r.sent_counts["offboard_control_mode"] == 0
    assert r.sent_counts["vehicle_command_ack"] == c.cfg.max_rejections
    assert not any(t.armed or t.nav_state == Px4.NAVIGATION_STATE_OFFBOARD for t in r.ticks)


def test_link_loss_fails_stops_setpoints_and_requests_land():
    c = client(policy=hover_forever)
    probe = run_loopback(client(policy=hover_forever), emulator(), TYPES, max_s=4.0)
    lose_at = fly_start_us(probe.client) - 1_000_000 + 500_000  # 0.5 s into FLY
    r = run_loopback(
        c, emulator(), TYPES, max_s=30, stop_after_finished_s=6.0,
        faults=Faults(emulator_drop_from_us={"vehicle_odometry": lose_at}),
    )  # fmt: skip
    assert c.phase == Phase.FAILED and c.failure_reason.startswith("link lost")
    assert "fly" in c.failure_reason
    failed = r.ticks_in(Phase.FAILED)
    assert failed and all(
        "trajectory_setpoint" not in t.sent and "offboard_control_mode" not in t.sent
        for t in failed
    )
    lands = [cmd for t in failed for cmd in t.commands]
    assert lands and set(lands) == {Px4.VEHICLE_CMD_NAV_LAND}
    assert len(lands) == c.cfg.failsafe_command_repeats
    # Failure declared within the link timeout (+ one tick) of the last odometry.
    t_fail = failed[0].t_us - 1_000_000
    assert lose_at + 500_000 <= t_fail <= lose_at + 500_000 + 2 * 50_000 + 20_000
    # PX4 (the emulator) took the land command and landed.
    assert r.ticks[-1].nav_state == Px4.NAVIGATION_STATE_AUTO_LAND
    assert r.ticks[-1].pos_enu_m[2] < 0.05


@pytest.mark.parametrize(
    ("action", "nav"), [(0, Px4.NAVIGATION_STATE_POSCTL), (4, Px4.NAVIGATION_STATE_AUTO_LAND)]
)
def test_heartbeat_loss_triggers_px4_failsafe(action, nav):
    c = client(policy=hover_forever)
    emu = emulator(com_obl_rc_act=action)
    probe = run_loopback(client(policy=hover_forever), emulator(), TYPES, max_s=4.0)
    lose_at = fly_start_us(probe.client) - 1_000_000 + 300_000
    r = run_loopback(
        c, emu, TYPES, max_s=30, stop_after_finished_s=0.2,
        faults=Faults(client_drop_from_us={"offboard_control_mode": lose_at}),
    )  # fmt: skip
    assert c.phase == Phase.FAILED
    assert "left OFFBOARD" in c.failure_reason and "failsafe" in c.failure_reason
    v = emu.vehicles[0]
    assert v.failsafe and v.nav_state == nav and v.armed
    # PX4 waited COM_OF_LOSS_T (1 s) after the last heartbeat before failing safe.
    switch = next(t for t in r.ticks if t.nav_state != Px4.NAVIGATION_STATE_OFFBOARD
                  and t.t_us - 1_000_000 > lose_at)  # fmt: skip
    waited_s = (switch.t_us - 1_000_000 - lose_at) / 1e6
    assert 1.0 <= waited_s <= 1.0 + 0.15
    # Stale setpoints kept coming: they alone never kept offboard alive.
    assert any("trajectory_setpoint" in t.sent for t in r.ticks if t.t_us - 1e6 > lose_at + 5e5)
    assert math.isfinite(c.fly_time_s)


def test_stream_waits_for_px4_preflight_checks_before_offboard_and_arming():
    from isr_px4_eval.px4.convert import OdometryENU, VehicleStatusInfo
    from isr_px4_eval.px4.offboard import ClientInbox

    z3 = np.zeros(3)
    odom = OdometryENU(0, z3, z3, np.array([1.0, 0, 0, 0]), z3, 0.0)

    def status(ok: bool) -> VehicleStatusInfo:
        return VehicleStatusInfo(0, 4, 1, False, ok)  # loiter, disarmed

    c = client(hover_forever, ready_timeout_s=3.0)
    t = 1_000_000
    for _ in range(30):  # 1.5 s of ticks: the estimator has not converged yet
        c.tick(t, ClientInbox(odometry=[odom], status=[status(False)]))
        t += 50_000
    assert c.phase == Phase.STREAM
    c.tick(t, ClientInbox(odometry=[odom], status=[status(True)]))
    assert c.phase == Phase.REQUEST_OFFBOARD
    stuck = client(hover_forever, ready_timeout_s=1.0)
    for k in range(40):
        stuck.tick(1_000_000 + k * 50_000, ClientInbox(odometry=[odom], status=[status(False)]))
    assert stuck.phase == Phase.FAILED and "pre-flight checks" in stuck.failure_reason
