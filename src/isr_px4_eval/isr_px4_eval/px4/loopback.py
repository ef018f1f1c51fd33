"""Run the offboard client against the PX4 emulator in one process, through serialized messages.

Every message crosses the "wire" as CDR bytes (``types.serialize`` / ``types.deserialize`` of
:class:`~isr_px4_eval.px4.convert.RosbagsTypes`), with one loop step of latency, so the client,
the emulator and the conversions are exercised exactly as over DDS, minus DDS. Faults can be
injected per topic key from a given time (dropping what one side publishes). This is the
``embedded`` backend of the evaluation and the harness of the offboard tests.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from isr_px4_eval.px4 import frames as fr
from isr_px4_eval.px4.convert import RosbagsTypes
from isr_px4_eval.px4.emulator import Px4Emulator
from isr_px4_eval.px4.offboard import OffboardClient, Phase, decode_inbox, encode_outbox

_MSGTYPES = {
    "offboard_control_mode": "px4_msgs/msg/OffboardControlMode",
    "trajectory_setpoint": "px4_msgs/msg/TrajectorySetpoint",
    "vehicle_command": "px4_msgs/msg/VehicleCommand",
    "vehicle_odometry": "px4_msgs/msg/VehicleOdometry",
    "vehicle_status": "px4_msgs/msg/VehicleStatus",
    "vehicle_command_ack": "px4_msgs/msg/VehicleCommandAck",
}
"""Topic key -> px4_msgs type."""


@dataclass
class Faults:
    """Messages dropped from a time on (microseconds after the loop's start), per topic key."""

    client_drop_from_us: dict[str, int] = field(default_factory=dict)
    """Keys the client publishes (``offboard_control_mode``, ...) -> drop from this time."""
    emulator_drop_from_us: dict[str, int] = field(default_factory=dict)
    """Keys the emulator publishes (``vehicle_odometry``, ...) -> drop from this time."""


@dataclass
class TickRecord:
    """One client tick as seen from outside."""

    t_us: int
    phase: Phase
    sent: list[str]
    """Topic keys the client sent this tick (after fault injection)."""
    commands: list[int]
    """VehicleCommand ids sent this tick."""
    pos_enu_m: tuple[float, float, float]
    """The emulator's true position at this tick."""
    nav_state: int
    armed: bool


@dataclass
class LoopbackResult:
    """Outcome of :func:`run_loopback`."""

    client: OffboardClient
    emulator: Px4Emulator
    ticks: list[TickRecord]
    sent_counts: Counter
    """Messages per topic key that crossed the wire (both directions)."""
    bytes_on_wire: int

    def ticks_in(self, phase: Phase) -> list[TickRecord]:
        """The ticks spent in ``phase``."""
        return [t for t in self.ticks if t.phase == phase]


def _wire(types: Any, key: str, msg: Any) -> tuple[Any, int]:
    if hasattr(types, "serialize"):
        raw = types.serialize(msg)
        return types.deserialize(raw, _MSGTYPES[key]), len(raw)
    return msg, 0


def run_loopback(
    client: OffboardClient,
    emulator: Px4Emulator,
    types: RosbagsTypes | Any,
    max_s: float = 60.0,
    step_s: float = 0.01,
    vehicle: int = 0,
    faults: Faults | None = None,
    start_us: int = 1_000_000,
    stop_after_finished_s: float = 0.5,
) -> LoopbackResult:
    """Drive ``client`` and ``emulator`` (vehicle ``vehicle``) until the client finishes.

    The emulator ticks every ``step_s``; the client every ``client.cfg.tick_period_s``. Stops
    ``stop_after_finished_s`` after the client reached DONE/FAILED (so what it sends afterwards is
    recorded), or after ``max_s``.
    """
    faults = faults or Faults()
    step_us = int(round(step_s * fr.US_PER_S))
    period_us = int(round(client.cfg.tick_period_s * fr.US_PER_S))
    to_emu: list[tuple[int, str, Any]] = []
    to_client: list[tuple[str, Any]] = []
    ticks: list[TickRecord] = []
    counts: Counter = Counter()
    nbytes = 0
    t = start_us
    next_client = start_us
    finished_at: int | None = None
    end = start_us + int(max_s * fr.US_PER_S)
    while t <= end:
        rel = t - start_us
        for i, key, msg in emulator.tick(t, to_emu):
            if i != vehicle or rel >= faults.emulator_drop_from_us.get(key, end + 1):
                continue
            m, n = _wire(types, key, msg)
            to_client.append((key, m))
            counts[key] += 1
            nbytes += n
        to_emu = []
        if t >= next_client:
            next_client += period_us
            out = client.tick(t, decode_inbox(to_client))
            to_client = []
            sent = []
            for key, msg in encode_outbox(types, out, t):
                if rel >= faults.client_drop_from_us.get(key, end + 1):
                    continue
                m, n = _wire(types, key, msg)
                to_emu.append((vehicle, key, m))
                counts[key] += 1
                nbytes += n
                sent.append(key)
            v = emulator.vehicles[vehicle]
            pos = emulator.model.state.pos_enu_m[0, vehicle].tolist()
            ticks.append(
                TickRecord(t, client.phase, sent, [c.command for c in out.commands],
                           (pos[0], pos[1], pos[2]), v.nav_state, v.armed)
            )  # fmt: skip
            if client.finished and finished_at is None:
                finished_at = t
        if finished_at is not None and t - finished_at >= stop_after_finished_s * fr.US_PER_S:
            break
        t += step_us
    return LoopbackResult(client, emulator, ticks, counts, nbytes)


__all__ = ["Faults", "LoopbackResult", "TickRecord", "run_loopback"]
