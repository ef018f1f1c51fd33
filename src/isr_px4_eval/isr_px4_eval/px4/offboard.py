"""The PX4 offboard client as an explicit state machine (pure Python, no ROS).

::

    WAIT_FOR_PX4 -> STREAM -> REQUEST_OFFBOARD -> ARM -> TAKEOFF -> FLY -> LAND -> DONE
    (any of them) ----------------------------------------------------------> FAILED (reason)

- ``WAIT_FOR_PX4``: until both ``vehicle_status`` and ``vehicle_odometry`` arrive (timeout).
- ``STREAM``: heartbeat (``OffboardControlMode``, velocity) + zero velocity setpoints for
  ``stream_ticks`` ticks (>= 10 at >= 10 Hz: PX4 only accepts OFFBOARD while the signal is live),
  and until the FLY policy is ready (``ready()``: loaded, built and warmed up; nothing heavy may
  run after arming) and PX4's pre-flight checks pass, at most ``ready_timeout_s``.
- ``REQUEST_OFFBOARD``: ``VehicleCommand`` 176 (param1 1, param2 6), resent every
  ``command_retry_s`` until ``nav_state == 14``; rejections (acks) and a timeout fail.
- ``ARM``: 400 with param1 1 until ``arming_state == ARMED``; likewise.
- ``TAKEOFF`` (optional, ``takeoff_altitude_m > 0``): climb at ``takeoff_speed_m_s`` to the
  altitude above the start point.
- ``FLY``: the policy's velocity / yaw-rate setpoints (world ENU) every tick, until the policy
  returns None or ``fly_duration_s`` has passed.
- ``LAND``: 21, resent until PX4 is in AUTO_LAND; done when PX4 disarms (its land detector).
- ``FAILED``: setpoints and heartbeat stop; on link loss (no odometry for more than
  ``link_timeout_s``) land (or hold) is requested ``failsafe_command_repeats`` times.

The heartbeat goes out on every tick of every active phase (``tick_period_s <= 0.1`` s, i.e. at
>= 10 Hz). In FLY the client records the gap between consecutive ticks
(:meth:`OffboardClient.tick_interval_stats`: worst and 99th percentile), the measure of whether
the stream was ever starved. The client is driven by :meth:`OffboardClient.tick` with the time
and what arrived since the last tick, and returns what to send: a ROS timer drives it in
``px4_eval_node``, a plain loop drives it against the emulator in the tests.
:func:`decode_inbox` and :func:`encode_outbox` convert between px4_msgs messages (any
:class:`~isr_px4_eval.px4.convert.MessageTypes`) and the client's plain data, keyed by the
topic keys of :class:`~isr_px4_eval.px4.topics.Px4Topics`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isr_px4_eval.px4 import frames as fr
from isr_px4_eval.px4.convert import (
    CommandAck,
    CommandRequest,
    MessageTypes,
    OdometryENU,
    OffboardHeartbeat,
    Px4,
    VehicleStatusInfo,
    VelocitySetpointENU,
    arm_command,
    hold_mode_command,
    land_command,
    nav_state_name,
    offboard_control_mode_msg,
    read_vehicle_command_ack,
    read_vehicle_odometry,
    read_vehicle_status,
    set_offboard_mode_command,
    vehicle_command_msg,
    velocity_setpoint_msg,
)


class Phase(enum.Enum):
    """States of the offboard client."""

    WAIT_FOR_PX4 = "wait_for_px4"
    STREAM = "stream"
    REQUEST_OFFBOARD = "request_offboard"
    ARM = "arm"
    TAKEOFF = "takeoff"
    FLY = "fly"
    LAND = "land"
    DONE = "done"
    FAILED = "failed"


ACTIVE_PHASES = frozenset(
    {Phase.STREAM, Phase.REQUEST_OFFBOARD, Phase.ARM, Phase.TAKEOFF, Phase.FLY, Phase.LAND}
)
"""Phases that send the heartbeat every tick."""


@dataclass
class OffboardClientConfig:
    """Timing and behaviour of the offboard client (times in seconds)."""

    tick_period_s: float = 0.05
    """Period of :meth:`OffboardClient.tick` (the heartbeat and setpoint rate); <= 0.1 s."""
    stream_ticks: int = 10
    """Ticks of heartbeat + setpoints before requesting OFFBOARD (PX4 guide: ~1 s at 10 Hz)."""
    send_heartbeat: bool = True
    """Publish ``OffboardControlMode``. False only to rehearse PX4 refusing OFFBOARD."""
    px4_timeout_s: float = 10.0
    """Give up when PX4's status and odometry have not both arrived in this time."""
    link_timeout_s: float = 0.5
    """No odometry for longer than this (after PX4 was found) = link lost: the episode fails."""
    command_retry_s: float = 0.5
    """Resend an unconfirmed mode / arm / land command this often."""
    mode_timeout_s: float = 3.0
    """OFFBOARD must be confirmed by ``vehicle_status`` within this time."""
    arm_timeout_s: float = 3.0
    """Arming must be confirmed within this time."""
    max_rejections: int = 3
    """Fail after this many rejecting acks of the current command."""
    takeoff_altitude_m: float = 0.0
    """Climb this far above the start before FLY (0 = no TAKEOFF phase)."""
    takeoff_speed_m_s: float = 1.5
    """Climb rate of TAKEOFF."""
    takeoff_timeout_s: float = 30.0
    """TAKEOFF must reach the altitude within this time."""
    fly_duration_s: float = math.inf
    """FLY ends (then LAND) after this long, or earlier when the policy returns None."""
    land_timeout_s: float = 60.0
    """PX4 must disarm (landed) within this time after LAND began."""
    on_link_loss: str = "land"
    """Command requested on link loss: ``land`` (21) or ``hold`` (176 to AUTO.LOITER)."""
    failsafe_command_repeats: int = 3
    """How often the link-loss command is sent (every ``command_retry_s``)."""
    ready_timeout_s: float = 600.0
    """STREAM waits at most this long for the FLY policy to be ready (and PX4's pre-flight
    checks), then fails (unarmed)."""
    wait_for_preflight_checks: bool = True
    """STREAM also waits for ``VehicleStatus.pre_flight_checks_pass`` (a freshly started PX4
    refuses to arm until its estimator has converged)."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field."""
        if not (0.0 < self.tick_period_s <= 0.1):
            raise ValueError(
                f"tick_period_s must be in (0, 0.1] (heartbeat >= 10 Hz), got {self.tick_period_s}"
            )
        if self.stream_ticks < 1:
            raise ValueError(f"stream_ticks must be >= 1, got {self.stream_ticks}")
        for name in (
            "px4_timeout_s", "link_timeout_s", "command_retry_s", "mode_timeout_s",
            "arm_timeout_s", "takeoff_speed_m_s", "takeoff_timeout_s", "fly_duration_s",
            "land_timeout_s", "ready_timeout_s",
        ):  # fmt: skip
            v = getattr(self, name)
            if not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")
        if self.takeoff_altitude_m < 0:
            raise ValueError(f"takeoff_altitude_m must be >= 0, got {self.takeoff_altitude_m}")
        if self.on_link_loss not in ("land", "hold"):
            raise ValueError(f"on_link_loss must be 'land' or 'hold', got '{self.on_link_loss}'")
        if self.max_rejections < 1 or self.failsafe_command_repeats < 0:
            raise ValueError("max_rejections must be >= 1 and failsafe_command_repeats >= 0")


@dataclass
class ClientInbox:
    """What arrived since the last tick (already in workspace frames)."""

    odometry: list[OdometryENU] = field(default_factory=list)
    status: list[VehicleStatusInfo] = field(default_factory=list)
    acks: list[CommandAck] = field(default_factory=list)


@dataclass
class ClientOutbox:
    """What to send this tick."""

    heartbeat: OffboardHeartbeat | None = None
    setpoint: VelocitySetpointENU | None = None
    commands: list[CommandRequest] = field(default_factory=list)


@dataclass
class PhaseEvent:
    """A phase change."""

    t_us: int
    phase: Phase
    note: str = ""


Policy = Callable[[OdometryENU, float], "VelocitySetpointENU | None"]
"""``policy(odometry, seconds_since_fly_start) -> setpoint`` (world ENU); None ends FLY."""


class OffboardClient:
    """The offboard state machine; see the module docstring.

    Args:
        policy: the FLY-phase policy (:data:`Policy`).
        config: :class:`OffboardClientConfig`.
        ready: whether the policy is ready to fly (STREAM waits for it before requesting
            OFFBOARD and arming); None = always ready.
    """

    def __init__(
        self,
        policy: Policy,
        config: OffboardClientConfig | None = None,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.cfg = cfg = config or OffboardClientConfig()
        cfg.validate()
        self.policy = policy
        self.ready = ready
        self.fly_tick_intervals_s: list[float] = []
        """Gaps between consecutive ticks while in FLY, seconds."""
        self._last_tick_us: int | None = None
        self.phase = Phase.WAIT_FOR_PX4
        self.failure_reason = ""
        """Why the episode failed (empty unless :attr:`phase` is FAILED)."""
        self.events: list[PhaseEvent] = []
        """Every phase change with its time."""
        self.odometry: OdometryENU | None = None
        """The newest odometry."""
        self.status: VehicleStatusInfo | None = None
        """The newest vehicle status."""
        self.setpoints_sent = 0
        self.heartbeats_sent = 0
        self.fly_time_s = 0.0
        """Time spent in FLY."""
        self._start_us: int | None = None
        self._phase_start_us = 0
        self._last_odom_rx_us: int | None = None
        self._stream_count = 0
        self._last_cmd_us: int | None = None
        self._rejections = 0
        self._last_reject = ""
        self._takeoff_target_z = 0.0
        self._failsafe_cmd: CommandRequest | None = None
        self._failsafe_left = 0

    # ------------------------------------------------------------------------------ helpers
    @property
    def finished(self) -> bool:
        """DONE or FAILED."""
        return self.phase in (Phase.DONE, Phase.FAILED)

    def _enter(self, now_us: int, phase: Phase, note: str = "") -> None:
        self.phase = phase
        self._phase_start_us = now_us
        self._last_cmd_us = None
        self._rejections = 0
        self._last_reject = ""
        self.events.append(PhaseEvent(now_us, phase, note))

    def _fail(self, now_us: int, reason: str) -> None:
        self.failure_reason = reason
        self._enter(now_us, Phase.FAILED, reason)

    def _elapsed_s(self, now_us: int) -> float:
        return (now_us - self._phase_start_us) / fr.US_PER_S

    def _command_due(self, now_us: int) -> bool:
        due = self._last_cmd_us is None or (
            now_us - self._last_cmd_us >= self.cfg.command_retry_s * fr.US_PER_S
        )
        if due:
            self._last_cmd_us = now_us
        return due

    def _count_rejections(self, acks: Iterable[CommandAck], command: int) -> None:
        for ack in acks:
            if ack.command == command and not ack.accepted:
                self._rejections += 1
                self._last_reject = ack.result_name

    def tick_interval_stats(self) -> dict[str, float]:
        """Worst and 99th-percentile gap between ticks in FLY (``max_s``, ``p99_s``, ``n``)."""
        return gap_stats(self.fly_tick_intervals_s)

    # ------------------------------------------------------------------------------ the tick
    def tick(self, now_us: int, inbox: ClientInbox | None = None) -> ClientOutbox:
        """Advance the state machine to ``now_us`` (microseconds) and say what to send."""
        inbox = inbox or ClientInbox()
        cfg = self.cfg
        if self.phase == Phase.FLY and self._last_tick_us is not None:
            self.fly_tick_intervals_s.append((now_us - self._last_tick_us) / fr.US_PER_S)
        self._last_tick_us = now_us
        if self._start_us is None:
            self._start_us = now_us
            self._phase_start_us = now_us
            self.events.append(PhaseEvent(now_us, Phase.WAIT_FOR_PX4))
        if inbox.odometry:
            self.odometry = inbox.odometry[-1]
            self._last_odom_rx_us = now_us
        if inbox.status:
            self.status = inbox.status[-1]
        out = ClientOutbox()

        if self.phase == Phase.FAILED:
            if self._failsafe_left > 0 and self._failsafe_cmd is not None:
                if self._command_due(now_us):
                    out.commands.append(self._failsafe_cmd)
                    self._failsafe_left -= 1
            return out
        if self.phase == Phase.DONE:
            return out

        # Link loss: no odometry for too long once PX4 was found.
        if self.phase != Phase.WAIT_FOR_PX4 and self._last_odom_rx_us is not None:
            silent_s = (now_us - self._last_odom_rx_us) / fr.US_PER_S
            if silent_s > cfg.link_timeout_s:
                was = self.phase
                armed = self.status is not None and self.status.armed
                self._fail(
                    now_us,
                    f"link lost: no vehicle_odometry for {silent_s:.2f} s "
                    f"(> {cfg.link_timeout_s} s) in {was.value}",
                )
                if armed or was in (Phase.TAKEOFF, Phase.FLY, Phase.LAND, Phase.ARM):
                    self._failsafe_cmd = (
                        land_command() if cfg.on_link_loss == "land" else hold_mode_command()
                    )
                    self._failsafe_left = cfg.failsafe_command_repeats
                    self._last_cmd_us = None
                    if self._failsafe_left > 0 and self._command_due(now_us):
                        out.commands.append(self._failsafe_cmd)
                        self._failsafe_left -= 1
                return out

        handler = getattr(self, f"_tick_{self.phase.value}")
        handler(now_us, inbox, out)
        if self.phase in ACTIVE_PHASES and cfg.send_heartbeat:
            out.heartbeat = OffboardHeartbeat(velocity=True)
            self.heartbeats_sent += 1
        if out.setpoint is not None:
            self.setpoints_sent += 1
        return out

    # ------------------------------------------------------------------------------ phases
    def _hold_setpoint(self) -> VelocitySetpointENU:
        return VelocitySetpointENU(np.zeros(3), 0.0)

    def _tick_wait_for_px4(self, now_us: int, inbox: ClientInbox, out: ClientOutbox) -> None:
        if self.odometry is not None and self.status is not None:
            self._enter(now_us, Phase.STREAM)
            self._stream_count = 0
            self._tick_stream(now_us, inbox, out)
        elif self._elapsed_s(now_us) > self.cfg.px4_timeout_s:
            missing = [
                n for n, v in (("vehicle_status", self.status), ("vehicle_odometry", self.odometry))
                if v is None
            ]  # fmt: skip
            self._fail(
                now_us,
                f"no PX4: {' and '.join(missing)} not received in {self.cfg.px4_timeout_s} s",
            )

    def _tick_stream(self, now_us: int, inbox: ClientInbox, out: ClientOutbox) -> None:
        out.setpoint = self._hold_setpoint()
        self._stream_count += 1
        if self._stream_count < self.cfg.stream_ticks:
            return
        try:
            ready = self.ready is None or self.ready()
        except Exception as exc:  # the policy could not be built: never arm
            self._fail(now_us, f"policy not ready: {exc} (not armed)")
            return
        checks = not self.cfg.wait_for_preflight_checks or (
            self.status is not None and self.status.pre_flight_checks_pass
        )
        if ready and checks:
            self._enter(now_us, Phase.REQUEST_OFFBOARD)
        elif self._elapsed_s(now_us) > self.cfg.ready_timeout_s:
            what = "policy not ready" if not ready else "PX4 pre-flight checks not passing"
            self._fail(now_us, f"{what} after {self.cfg.ready_timeout_s} s (not armed)")

    def _tick_request_offboard(self, now_us: int, inbox: ClientInbox, out: ClientOutbox) -> None:
        out.setpoint = self._hold_setpoint()
        self._count_rejections(inbox.acks, Px4.VEHICLE_CMD_DO_SET_MODE)
        if self.status is not None and self.status.offboard:
            self._enter(now_us, Phase.ARM)
            self._tick_arm(now_us, ClientInbox(), out)
            return
        if self._rejections >= self.cfg.max_rejections:
            self._fail(
                now_us,
                f"offboard refused by PX4: {self._rejections} x {self._last_reject} ack to "
                "VEHICLE_CMD_DO_SET_MODE (no heartbeat stream?)",
            )
            return
        if self._elapsed_s(now_us) > self.cfg.mode_timeout_s:
            state = nav_state_name(self.status.nav_state) if self.status else "unknown"
            ack = f", last ack {self._last_reject}" if self._last_reject else ""
            self._fail(
                now_us,
                f"offboard request timed out after {self.cfg.mode_timeout_s} s "
                f"(nav_state {state}{ack})",
            )
            return
        if self._command_due(now_us):
            out.commands.append(set_offboard_mode_command())

    def _tick_arm(self, now_us: int, inbox: ClientInbox, out: ClientOutbox) -> None:
        out.setpoint = self._hold_setpoint()
        self._count_rejections(inbox.acks, Px4.VEHICLE_CMD_COMPONENT_ARM_DISARM)
        if self.status is not None and self.status.armed and self.status.offboard:
            if self.cfg.takeoff_altitude_m > 0 and self.odometry is not None:
                self._takeoff_target_z = (
                    float(self.odometry.pos_enu_m[2]) + self.cfg.takeoff_altitude_m
                )
                self._enter(now_us, Phase.TAKEOFF)
                self._tick_takeoff(now_us, inbox, out)
            else:
                self._enter(now_us, Phase.FLY)
                self._tick_fly(now_us, inbox, out)
            return
        if self.status is not None and not self.status.offboard:
            self._fail(
                now_us, f"PX4 left OFFBOARD before arming ({nav_state_name(self.status.nav_state)})"
            )
            return
        if self._rejections >= self.cfg.max_rejections:
            self._fail(now_us, f"arming refused by PX4: {self._rejections} x {self._last_reject}")
            return
        if self._elapsed_s(now_us) > self.cfg.arm_timeout_s:
            self._fail(now_us, f"arming timed out after {self.cfg.arm_timeout_s} s")
            return
        if self._command_due(now_us):
            out.commands.append(arm_command(True))

    def _left_offboard(self, now_us: int) -> bool:
        st = self.status
        if st is None:
            return False
        if not st.armed:
            self._fail(now_us, f"PX4 disarmed during {self.phase.value}")
            return True
        if not st.offboard:
            fs = ", failsafe" if st.failsafe else ""
            self._fail(
                now_us,
                f"PX4 left OFFBOARD during {self.phase.value} "
                f"(nav_state {nav_state_name(st.nav_state)}{fs})",
            )
            return True
        return False

    def _tick_takeoff(self, now_us: int, inbox: ClientInbox, out: ClientOutbox) -> None:
        if self._left_offboard(now_us):
            return
        z = float(self.odometry.pos_enu_m[2]) if self.odometry is not None else -math.inf
        if z >= self._takeoff_target_z - 0.1:
            self._enter(now_us, Phase.FLY)
            self._tick_fly(now_us, inbox, out)
            return
        if self._elapsed_s(now_us) > self.cfg.takeoff_timeout_s:
            self._fail(
                now_us,
                f"takeoff timed out after {self.cfg.takeoff_timeout_s} s at z {z:.2f} m "
                f"(target {self._takeoff_target_z:.2f} m)",
            )
            return
        out.setpoint = VelocitySetpointENU(np.array([0.0, 0.0, self.cfg.takeoff_speed_m_s]), 0.0)

    def _tick_fly(self, now_us: int, inbox: ClientInbox, out: ClientOutbox) -> None:
        if self._left_offboard(now_us):
            return
        t_s = self._elapsed_s(now_us)
        self.fly_time_s = t_s
        sp = None
        if t_s < self.cfg.fly_duration_s and self.odometry is not None:
            sp = self.policy(self.odometry, t_s)
        if sp is None:
            self._enter(
                now_us,
                Phase.LAND,
                "policy finished"
                if t_s < self.cfg.fly_duration_s
                else f"fly_duration_s {self.cfg.fly_duration_s} reached",
            )
            self._tick_land(now_us, ClientInbox(), out)
            return
        vel = np.asarray(sp.vel_enu_m_s, dtype=np.float64).reshape(3)
        if not (np.all(np.isfinite(vel)) and math.isfinite(sp.yaw_rate_enu_rad_s)):
            vel, sp = np.zeros(3), VelocitySetpointENU(np.zeros(3), 0.0)  # non-finite -> hold
        out.setpoint = VelocitySetpointENU(vel, float(sp.yaw_rate_enu_rad_s))

    def _tick_land(self, now_us: int, inbox: ClientInbox, out: ClientOutbox) -> None:
        st = self.status
        if st is not None and not st.armed:
            self._enter(now_us, Phase.DONE, "landed and disarmed")
            return
        if self._elapsed_s(now_us) > self.cfg.land_timeout_s:
            self._fail(now_us, f"landing not confirmed (disarm) within {self.cfg.land_timeout_s} s")
            return
        if st is None or st.nav_state != Px4.NAVIGATION_STATE_AUTO_LAND:
            if self._command_due(now_us):
                out.commands.append(land_command())


def gap_stats(gaps: list[float]) -> dict[str, float]:
    """``max_s``, ``p99_s`` and ``n`` of a list of tick gaps (zeros when empty)."""
    if not gaps:
        return {"max_s": 0.0, "p99_s": 0.0, "n": 0}
    return {
        "max_s": float(max(gaps)),
        "p99_s": float(np.percentile(np.asarray(gaps), 99)),
        "n": len(gaps),
    }


# ---------------------------------------------------------------------------------- patterns
SCRIPTED_POLICIES = ("hover", "box")
"""Names accepted by :func:`scripted_policy`."""


def scripted_policy(name: str, speed_m_s: float = 2.0, leg_s: float = 4.0) -> Policy:
    """A scripted FLY-phase policy for checking the PX4 link (not a trained ISR policy).

    ``hover``: zero velocity. ``box``: east, north, west, south legs of ``leg_s`` at
    ``speed_m_s``, then None (which lands).
    """
    if name == "hover":
        return lambda odom, t_s: VelocitySetpointENU(np.zeros(3), 0.0)
    if name == "box":
        legs = [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)]

        def box(odom: OdometryENU, t_s: float) -> VelocitySetpointENU | None:
            k = int(t_s // leg_s)
            if k >= len(legs):
                return None
            ex, ny = legs[k]
            return VelocitySetpointENU(np.array([ex * speed_m_s, ny * speed_m_s, 0.0]), 0.0)

        return box
    raise ValueError(
        f"unknown scripted policy '{name}' (choose from {', '.join(SCRIPTED_POLICIES)})"
    )


# ---------------------------------------------------------------------------------- wire
def decode_inbox(messages: Iterable[tuple[str, Any]]) -> ClientInbox:
    """px4_msgs messages keyed by topic key -> :class:`ClientInbox`.

    Keys read: ``vehicle_odometry``, ``vehicle_status``, ``vehicle_command_ack``; others are
    ignored.
    """
    inbox = ClientInbox()
    for key, msg in messages:
        if key == "vehicle_odometry":
            inbox.odometry.append(read_vehicle_odometry(msg))
        elif key == "vehicle_status":
            inbox.status.append(read_vehicle_status(msg))
        elif key == "vehicle_command_ack":
            inbox.acks.append(read_vehicle_command_ack(msg))
    return inbox


def encode_outbox(types: MessageTypes, out: ClientOutbox, now_us: int) -> list[tuple[str, Any]]:
    """:class:`ClientOutbox` -> px4_msgs messages keyed by topic key, in sending order.

    Keys: ``offboard_control_mode``, ``trajectory_setpoint``, ``vehicle_command``.
    """
    msgs: list[tuple[str, Any]] = []
    if out.heartbeat is not None:
        msgs.append(
            ("offboard_control_mode", offboard_control_mode_msg(types, now_us, out.heartbeat))
        )
    if out.setpoint is not None:
        msgs.append(("trajectory_setpoint", velocity_setpoint_msg(types, now_us, out.setpoint)))
    for cmd in out.commands:
        msgs.append(("vehicle_command", vehicle_command_msg(types, now_us, cmd)))
    return msgs


__all__ = [
    "ACTIVE_PHASES",
    "SCRIPTED_POLICIES",
    "ClientInbox",
    "ClientOutbox",
    "OffboardClient",
    "OffboardClientConfig",
    "Phase",
    "PhaseEvent",
    "Policy",
    "decode_inbox",
    "encode_outbox",
    "scripted_policy",
]
