"""A PX4 offboard emulator: PX4's uXRCE-DDS topics and offboard semantics over the embedded model.

It speaks the same px4_msgs messages as PX4 (through :mod:`isr_px4_eval.px4.convert`, with any
:class:`~isr_px4_eval.px4.convert.MessageTypes`) and flies the full-fidelity embedded quadrotor
(:class:`isr_direct_dynamics.quadrotor.QuadrotorModel`, one batched model for ``N`` vehicles), so
the offboard client can be tested, and a PX4 evaluation rehearsed, where PX4 is not installed.

Reproduced (PX4 v1.15 Commander semantics and defaults):

- **Offboard signal**: an ``OffboardControlMode`` with at least one control flag set, received
  within ``COM_OF_LOSS_T`` (1.0 s). ``VEHICLE_CMD_DO_SET_MODE`` to OFFBOARD (176, 1, 6) without a
  live signal is answered ``TEMPORARILY_REJECTED`` (as Commander does when the mode cannot run).
- **Offboard loss failsafe**: armed in OFFBOARD and no heartbeat for ``COM_OF_LOSS_T`` -> the
  ``COM_OBL_RC_ACT`` action (0 Position, 4 Land, 5 Hold), ``failsafe = true``. Stale
  TrajectorySetpoints alone do not trigger it. The vehicle stays in the failsafe mode until a new
  mode is requested.
- **Arming** (400, param1 1/0): arming needs a mode that can run (OFFBOARD needs the signal);
  disarming needs the vehicle on the ground (or the force magic 21196 in param2). Auto-disarm
  ``COM_DISARM_LAND`` (2 s) after landing and ``COM_DISARM_PRFLT`` (10 s) when armed but never
  taken off.
- **Modes** (``VehicleStatus.nav_state`` numbers of px4_msgs): POSCTL 2 and AUTO_LOITER 4 hold
  position (P gains ``MPC_XY_P`` 0.95, ``MPC_Z_P`` 1.0), AUTO_LAND 18 descends at
  ``MPC_LAND_SPEED`` (0.7 m/s) holding x/y, OFFBOARD 14 flies the TrajectorySetpoint velocity
  (NED) and yawspeed. Position/acceleration setpoints are not emulated (NaN velocity = 0).
- **Acks**: every command targeted at this system gets a ``VehicleCommandAck``.
- **Outputs**: ``VehicleOdometry`` (NED/FRD) every ``odometry_period_s``, ``VehicleStatus`` on
  every change and every ``status_period_s``.

Differences from PX4: the heartbeat age is measured at reception (PX4 compares the message's
timestamp, which uXRCE-DDS time-syncs); no RC, no estimator, no takeoff ramp; the failsafe
action Position behaves like Hold (PX4 without RC also falls back to Hold).

Driven like the client: :meth:`Px4Emulator.tick` takes the time and the messages received since
the last tick as ``(vehicle_index, topic_key, message)`` and returns the messages to publish in
the same form (topic keys of :class:`~isr_px4_eval.px4.topics.Px4Topics`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from isr_px4_eval.px4 import frames as fr
from isr_px4_eval.px4.convert import (
    MessageTypes,
    OdometryENU,
    Px4,
    read_offboard_control_mode,
    read_vehicle_command,
    read_velocity_setpoint,
    vehicle_command_ack_msg,
    vehicle_odometry_msg,
    vehicle_status_msg,
)

FAILSAFE_ACTIONS: dict[int, int] = {
    0: Px4.NAVIGATION_STATE_POSCTL,
    4: Px4.NAVIGATION_STATE_AUTO_LAND,
    5: Px4.NAVIGATION_STATE_AUTO_LOITER,
}
"""Supported ``COM_OBL_RC_ACT`` values -> the nav_state the failsafe switches to."""

FORCE_DISARM_MAGIC = 21196.0
"""``param2`` of a disarm command that forces it in the air (MAVLink convention)."""


@dataclass
class Px4EmulatorConfig:
    """Parameters of the emulator (PX4 v1.15 defaults where a PX4 parameter exists)."""

    num_vehicles: int = 1
    """Vehicles flown by the one batched model (system ids ``system_id + i``)."""
    control_dt_s: float = 0.02
    """Model step (PX4's velocity loop runs at ~100 Hz; the cascade inside runs at physics rate)."""
    com_of_loss_t_s: float = 1.0
    """``COM_OF_LOSS_T``: offboard signal timeout, s."""
    com_obl_rc_act: int = 0
    """``COM_OBL_RC_ACT``: failsafe after offboard loss: 0 Position, 4 Land, 5 Hold."""
    com_disarm_land_s: float = 2.0
    """``COM_DISARM_LAND``: auto-disarm this long after landing, s."""
    com_disarm_prflt_s: float = 10.0
    """``COM_DISARM_PRFLT``: auto-disarm when armed this long without taking off, s."""
    land_speed_m_s: float = 0.7
    """``MPC_LAND_SPEED``: descent rate of AUTO_LAND, m/s."""
    hold_xy_p: float = 0.95
    """``MPC_XY_P``: position-hold gain, 1/s."""
    hold_z_p: float = 1.0
    """``MPC_Z_P``: altitude-hold gain, 1/s."""
    odometry_period_s: float = 0.02
    """Publication period of ``VehicleOdometry``."""
    status_period_s: float = 0.5
    """Publication period of ``VehicleStatus`` (also sent on every change)."""
    system_id: int = 1
    """MAVLink system id of vehicle 0 (``MAV_SYS_ID``); vehicle i has ``system_id + i``."""
    component_id: int = 1
    """MAVLink component id of the autopilot."""
    initial_pos_enu_m: list[list[float]] = field(default_factory=list)
    """Start position per vehicle (ENU, m); empty: vehicle i at (2 i, 0, 0)."""
    initial_yaw_rad: float = 0.0
    """Start ENU yaw of every vehicle."""
    seed: int = 0
    """Seed of the model's generator (wind gusts, sensor noise)."""
    device: str = "cpu"
    """Torch device of the model."""
    model: dict[str, Any] = field(default_factory=dict)
    """``QuadrotorConfig`` fields (e.g. ``{"vehicle": "x500"}``); defaults: ``sih_quadx``."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field."""
        if self.num_vehicles < 1:
            raise ValueError(f"num_vehicles must be >= 1, got {self.num_vehicles}")
        if self.com_obl_rc_act not in FAILSAFE_ACTIONS:
            raise ValueError(
                f"com_obl_rc_act {self.com_obl_rc_act} is not emulated "
                f"(supported: {sorted(FAILSAFE_ACTIONS)} = Position, Land, Hold)"
            )
        for name in (
            "control_dt_s", "com_of_loss_t_s", "com_disarm_land_s", "com_disarm_prflt_s",
            "land_speed_m_s", "hold_xy_p", "hold_z_p", "odometry_period_s", "status_period_s",
        ):  # fmt: skip
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be > 0, got {v}")
        if self.initial_pos_enu_m and len(self.initial_pos_enu_m) != self.num_vehicles:
            raise ValueError(
                f"initial_pos_enu_m has {len(self.initial_pos_enu_m)} entries, "
                f"expected num_vehicles = {self.num_vehicles}"
            )


@dataclass
class _Vehicle:
    """PX4 Commander state of one emulated vehicle (scalar Python, changes rarely)."""

    system_id: int
    armed: bool = False
    nav_state: int = Px4.NAVIGATION_STATE_POSCTL
    user_intention: int = Px4.NAVIGATION_STATE_POSCTL
    failsafe: bool = False
    last_heartbeat_us: int | None = None
    setpoint_vel_enu: np.ndarray = field(default_factory=lambda: np.zeros(3))
    setpoint_yaw_rate: float = 0.0
    hold_pos_enu: np.ndarray = field(default_factory=lambda: np.zeros(3))
    frozen_pos_enu: np.ndarray = field(default_factory=lambda: np.zeros(3))
    frozen_yaw: float = 0.0
    armed_time_us: int = 0
    takeoff_time_us: int = 0
    landed_since_us: int | None = None
    nav_state_timestamp_us: int = 0
    latest_arming_reason: int = 0
    latest_disarming_reason: int = 0
    status_dirty: bool = True
    last_status_us: int | None = None
    last_odom_us: int | None = None
    publish_odometry: bool = True


class Px4Emulator:
    """Emulated PX4 for ``N`` vehicles; see the module docstring.

    Args:
        types: message factory (:class:`~isr_px4_eval.px4.convert.RosbagsTypes` in tests,
            :class:`~isr_px4_eval.px4.convert.RclpyTypes` in the node).
        config: :class:`Px4EmulatorConfig`.
    """

    def __init__(self, types: MessageTypes, config: Px4EmulatorConfig | None = None) -> None:
        from isr_direct_dynamics import InitialState, make_vehicle_model

        self.types = types
        self.cfg = cfg = config or Px4EmulatorConfig()
        cfg.validate()
        n = cfg.num_vehicles
        self.model = make_vehicle_model(
            "quadrotor", 1, n, cfg.control_dt_s, cfg.device, cfg.seed, config=dict(cfg.model)
        )
        self.limits = self.model.config.limits
        pos = (
            np.asarray(cfg.initial_pos_enu_m, dtype=np.float64)
            if cfg.initial_pos_enu_m
            else np.stack([np.array([2.0 * i, 0.0, 0.0]) for i in range(n)])
        )
        self.vehicles = [_Vehicle(system_id=cfg.system_id + i) for i in range(n)]
        for v, p in zip(self.vehicles, pos, strict=True):
            v.frozen_pos_enu = p.copy()
            v.frozen_yaw = cfg.initial_yaw_rad
            v.hold_pos_enu = p.copy()
        self._initial_state = InitialState
        self._reset_vehicles(np.ones(n, dtype=bool))
        self.sim_time_us: int | None = None
        """Time of the model state, microseconds (set by the first tick)."""
        self._dt_us = int(round(cfg.control_dt_s * fr.US_PER_S))
        self.ignored_setpoint_components = 0
        """TrajectorySetpoints whose velocity had NaN components (position control etc.)."""

    # ------------------------------------------------------------------------------ helpers
    def _reset_vehicles(self, mask: np.ndarray) -> None:
        dev = self.model.device
        pos = torch.tensor(
            np.stack([v.frozen_pos_enu for v in self.vehicles]), dtype=torch.float32, device=dev
        ).unsqueeze(0)
        yaw = torch.tensor([v.frozen_yaw for v in self.vehicles], dtype=torch.float32, device=dev)
        m = torch.as_tensor(mask, device=dev).view(1, -1)
        self.model.reset(m, self._initial_state(pos_enu_m=pos, yaw_rad=yaw.unsqueeze(0)))

    def state_enu(self, i: int) -> OdometryENU:
        """The model state of vehicle ``i`` in workspace frames (``t_us`` = sim time)."""
        st = self.model.state
        return OdometryENU(
            t_us=int(self.sim_time_us or 0),
            pos_enu_m=st.pos_enu_m[0, i].double().cpu().numpy(),
            vel_enu_m_s=st.vel_enu_m_s[0, i].double().cpu().numpy(),
            quat_wxyz=st.quat_wxyz[0, i].double().cpu().numpy(),
            body_rates_flu_rad_s=st.body_rates_flu_rad_s[0, i].double().cpu().numpy(),
            yaw_rad=float(st.yaw_rad[0, i]),
        )

    def set_odometry_enabled(self, i: int, enabled: bool) -> None:
        """Fault injection: stop (or resume) publishing vehicle ``i``'s odometry."""
        self.vehicles[i].publish_odometry = enabled

    def _signal_ok(self, v: _Vehicle, now_us: int) -> bool:
        return v.last_heartbeat_us is not None and (
            now_us - v.last_heartbeat_us <= self.cfg.com_of_loss_t_s * fr.US_PER_S
        )

    def _set_nav(self, v: _Vehicle, nav_state: int, now_us: int, failsafe: bool = False) -> None:
        if nav_state != v.nav_state or failsafe != v.failsafe:
            v.status_dirty = True
            v.nav_state_timestamp_us = now_us
        v.nav_state = nav_state
        v.failsafe = failsafe

    def _index_of(self, cmd_target: int) -> int | None:
        for i, v in enumerate(self.vehicles):
            if v.system_id == cmd_target:
                return i
        return None

    # ------------------------------------------------------------------------------ commands
    def _handle_command(self, i: int, msg: Any, now_us: int) -> list[tuple[int, str, Any]]:
        cmd = read_vehicle_command(msg)
        v = self.vehicles[i]
        if cmd.target_system not in (0, v.system_id) or cmd.target_component not in (
            0,
            self.cfg.component_id,
        ):
            return []  # not for this vehicle: PX4 ignores it (no ack)
        pos = self.state_enu(i).pos_enu_m
        on_ground = bool(self.model.state.ground_contact[0, i])
        r = Px4.VEHICLE_CMD_RESULT_ACCEPTED
        if cmd.command == Px4.VEHICLE_CMD_DO_SET_MODE:
            custom = int(cmd.param1) & Px4.MODE_FLAG_CUSTOM_MODE_ENABLED
            main, sub = int(cmd.param2), int(cmd.param3)
            target = None
            if custom and main == Px4.PX4_CUSTOM_MAIN_MODE_OFFBOARD:
                target = Px4.NAVIGATION_STATE_OFFBOARD
            elif custom and main == Px4.PX4_CUSTOM_MAIN_MODE_POSCTL:
                target = Px4.NAVIGATION_STATE_POSCTL
            elif custom and main == Px4.PX4_CUSTOM_MAIN_MODE_AUTO:
                target = {
                    Px4.PX4_CUSTOM_SUB_MODE_AUTO_LOITER: Px4.NAVIGATION_STATE_AUTO_LOITER,
                    Px4.PX4_CUSTOM_SUB_MODE_AUTO_LAND: Px4.NAVIGATION_STATE_AUTO_LAND,
                }.get(sub)
            if target is None:
                r = Px4.VEHICLE_CMD_RESULT_UNSUPPORTED
            elif target == Px4.NAVIGATION_STATE_OFFBOARD and not self._signal_ok(v, now_us):
                r = Px4.VEHICLE_CMD_RESULT_TEMPORARILY_REJECTED
            else:
                v.user_intention = target
                v.hold_pos_enu = pos.copy()
                self._set_nav(v, target, now_us)
        elif cmd.command == Px4.VEHICLE_CMD_COMPONENT_ARM_DISARM:
            if cmd.param1 >= 0.5:  # arm
                mode_ok = v.nav_state != Px4.NAVIGATION_STATE_OFFBOARD or self._signal_ok(v, now_us)
                if v.armed:
                    pass
                elif not mode_ok or v.failsafe:
                    r = Px4.VEHICLE_CMD_RESULT_TEMPORARILY_REJECTED
                else:
                    v.armed = True
                    v.armed_time_us = now_us
                    v.takeoff_time_us = 0
                    v.landed_since_us = None
                    v.latest_arming_reason = Px4.ARM_DISARM_REASON_COMMAND_EXTERNAL
                    v.hold_pos_enu = pos.copy()
                    v.status_dirty = True
                    mask = np.zeros(len(self.vehicles), dtype=bool)
                    mask[i] = True
                    v.frozen_pos_enu, v.frozen_yaw = pos.copy(), self.state_enu(i).yaw_rad
                    self._reset_vehicles(mask)  # fresh controller integrators at arming
            else:  # disarm
                if not v.armed:
                    pass
                elif on_ground or cmd.param2 == FORCE_DISARM_MAGIC:
                    self._disarm(i, now_us, Px4.ARM_DISARM_REASON_COMMAND_EXTERNAL)
                else:
                    r = Px4.VEHICLE_CMD_RESULT_TEMPORARILY_REJECTED
        elif cmd.command == Px4.VEHICLE_CMD_NAV_LAND:
            v.user_intention = Px4.NAVIGATION_STATE_AUTO_LAND
            v.hold_pos_enu = pos.copy()
            self._set_nav(v, Px4.NAVIGATION_STATE_AUTO_LAND, now_us)
        else:
            r = Px4.VEHICLE_CMD_RESULT_UNSUPPORTED
        ack = vehicle_command_ack_msg(
            self.types, now_us, cmd.command, r, cmd.source_system, cmd.source_component
        )
        return [(i, "vehicle_command_ack", ack)]

    def _disarm(self, i: int, now_us: int, reason: int) -> None:
        v = self.vehicles[i]
        v.armed = False
        v.latest_disarming_reason = reason
        v.status_dirty = True
        st = self.state_enu(i)
        v.frozen_pos_enu, v.frozen_yaw = st.pos_enu_m.copy(), st.yaw_rad

    # ------------------------------------------------------------------------------ the tick
    def tick(
        self, now_us: int, inbox: Iterable[tuple[int, str, Any]] = ()
    ) -> list[tuple[int, str, Any]]:
        """Receive ``inbox`` at ``now_us``, fly the model up to ``now_us``, return what to publish.

        ``inbox`` and the result hold ``(vehicle_index, topic_key, message)``; vehicle_command
        messages are routed by their ``target_system`` (index given is ignored for them).
        """
        now_us = int(now_us)
        if self.sim_time_us is None:
            self.sim_time_us = now_us
        out: list[tuple[int, str, Any]] = []
        for i, key, msg in inbox:
            v = self.vehicles[i]
            if key == "offboard_control_mode":
                if read_offboard_control_mode(msg).any_enabled:
                    v.last_heartbeat_us = now_us
            elif key == "trajectory_setpoint":
                sp = read_velocity_setpoint(msg)
                vel = np.asarray(sp.vel_enu_m_s, dtype=np.float64)
                if not np.all(np.isfinite(vel)):
                    self.ignored_setpoint_components += 1
                v.setpoint_vel_enu = np.nan_to_num(vel, nan=0.0, posinf=0.0, neginf=0.0)
                yr = sp.yaw_rate_enu_rad_s
                v.setpoint_yaw_rate = yr if math.isfinite(yr) else 0.0
            elif key == "vehicle_command":
                target = int(msg.target_system)
                j = i if target == 0 else self._index_of(target)
                if j is not None:
                    out += self._handle_command(j, msg, now_us)
        for v in self.vehicles:  # offboard loss failsafe
            if (
                v.armed
                and v.nav_state == Px4.NAVIGATION_STATE_OFFBOARD
                and not self._signal_ok(v, now_us)
            ):
                self._set_nav(v, FAILSAFE_ACTIONS[self.cfg.com_obl_rc_act], now_us, failsafe=True)
        while self.sim_time_us + self._dt_us <= now_us:
            self._step()
        out += self._publish(now_us)
        return out

    def _action(self) -> torch.Tensor:
        """Normalized ``(1, N, 4)`` action from each vehicle's mode."""
        lim = self.limits
        st = self.model.state
        pos = st.pos_enu_m[0].double().cpu().numpy()
        rows = []
        for i, v in enumerate(self.vehicles):
            yaw_rate = 0.0
            if not v.armed:
                vel = np.zeros(3)
            elif v.nav_state == Px4.NAVIGATION_STATE_OFFBOARD:
                vel, yaw_rate = v.setpoint_vel_enu, v.setpoint_yaw_rate
            else:
                err = v.hold_pos_enu - pos[i]
                vel = np.array(
                    [
                        self.cfg.hold_xy_p * err[0],
                        self.cfg.hold_xy_p * err[1],
                        self.cfg.hold_z_p * err[2],
                    ]
                )
                if v.nav_state == Px4.NAVIGATION_STATE_AUTO_LAND:
                    vel[2] = -self.cfg.land_speed_m_s
            rows.append(
                [
                    vel[0] / lim.max_velocity_m_s,
                    vel[1] / lim.max_velocity_m_s,
                    vel[2] / lim.max_vertical_velocity_m_s,
                    yaw_rate / math.radians(lim.max_yaw_rate_deg_s),
                ]
            )
        return torch.tensor([rows], dtype=torch.float32, device=self.model.device)

    def _step(self) -> None:
        assert self.sim_time_us is not None
        self.model.step(self._action())
        self.sim_time_us += self._dt_us
        t = self.sim_time_us
        disarmed = np.array([not v.armed for v in self.vehicles])
        if disarmed.any():
            self._reset_vehicles(disarmed)  # motors off: the vehicle stays where it was
        contact = self.model.state.ground_contact[0].cpu().numpy()
        speed = torch.linalg.vector_norm(self.model.state.vel_enu_m_s[0], dim=-1).cpu().numpy()
        for i, v in enumerate(self.vehicles):
            if not v.armed:
                continue
            landed = bool(contact[i]) and float(speed[i]) < 0.3
            if not landed and v.takeoff_time_us == 0 and not contact[i]:
                v.takeoff_time_us = t
                v.status_dirty = True
            if landed:
                v.landed_since_us = v.landed_since_us if v.landed_since_us is not None else t
            else:
                v.landed_since_us = None
            if v.takeoff_time_us and v.landed_since_us is not None:
                if t - v.landed_since_us >= self.cfg.com_disarm_land_s * fr.US_PER_S:
                    self._disarm(i, t, Px4.ARM_DISARM_REASON_AUTO_DISARM_LAND)
            elif not v.takeoff_time_us and t - v.armed_time_us >= (
                self.cfg.com_disarm_prflt_s * fr.US_PER_S
            ):
                self._disarm(i, t, Px4.ARM_DISARM_REASON_AUTO_DISARM_PREFLIGHT)

    def _publish(self, now_us: int) -> list[tuple[int, str, Any]]:
        out: list[tuple[int, str, Any]] = []
        cfg = self.cfg
        for i, v in enumerate(self.vehicles):
            if v.publish_odometry and (
                v.last_odom_us is None
                or now_us - v.last_odom_us >= cfg.odometry_period_s * fr.US_PER_S - 1
            ):
                v.last_odom_us = now_us
                out.append((i, "vehicle_odometry", vehicle_odometry_msg(
                    self.types, now_us, self.state_enu(i)
                )))  # fmt: skip
            if (
                v.status_dirty
                or v.last_status_us is None
                or (now_us - v.last_status_us >= cfg.status_period_s * fr.US_PER_S)
            ):
                v.status_dirty = False
                v.last_status_us = now_us
                out.append((i, "vehicle_status", vehicle_status_msg(
                    self.types,
                    now_us,
                    nav_state=v.nav_state,
                    arming_state=Px4.ARMING_STATE_ARMED if v.armed else Px4.ARMING_STATE_DISARMED,
                    failsafe=v.failsafe,
                    nav_state_user_intention=v.user_intention,
                    armed_time_us=v.armed_time_us if v.armed else 0,
                    takeoff_time_us=v.takeoff_time_us if v.armed else 0,
                    latest_arming_reason=v.latest_arming_reason,
                    latest_disarming_reason=v.latest_disarming_reason,
                    nav_state_timestamp_us=v.nav_state_timestamp_us,
                    system_id=v.system_id,
                    component_id=cfg.component_id,
                )))  # fmt: skip
        return out


__all__ = ["FAILSAFE_ACTIONS", "FORCE_DISARM_MAGIC", "Px4Emulator", "Px4EmulatorConfig"]
