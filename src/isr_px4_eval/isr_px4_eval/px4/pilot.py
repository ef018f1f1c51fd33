"""A trained policy flying a vehicle it does not simulate: PX4 (or the emulator) over offboard.

:class:`PolicyPilot` is the offboard client's FLY-phase policy (``(odometry, t) -> velocity
setpoint``) that runs the *task* — the same :class:`~isr_training.env.ISREnv` code as training and
``isr eval``: observation, safety filter, ground-truth perception on the world, rewards, metrics —
with an :class:`ExternalVehicle` in place of the simulated vehicle model. Every control period
(``task.control_dt_s``, 0.1 s) it

1. stages the latest odometry as the vehicle's next state,
2. steps the environment with the action it sent one period earlier (``ExternalVehicle.step``
   integrates nothing: it returns the staged measurement, i.e. where PX4 actually flew), which
   scores that period (reward terms, detections, coverage, collisions, geofence) on the real pose,
3. asks the policy for the next action, runs the environment's own safety filter on it at the
   measured state (:meth:`ISREnv.filter_action`, exactly what the next ``step`` applies) and
   returns it as a world-ENU velocity / yaw-rate setpoint, held until the next decision.

The episode ends as in the environment (time limit, crash, breach if so configured); the pilot
then returns None and the client lands. :attr:`PolicyPilot.episode` holds the episode's metrics
(the keys of ``isr eval``'s per-episode rows).

Flight safety: :class:`BackgroundPilot` builds the pilot (policy load, environment build) and
runs :meth:`PolicyPilot.warm_up` (one dry decision: kernel compilation, first-call
initialisation) on a worker thread while the offboard client streams, and the client arms only
once it is ready. In flight the client's tick hands the odometry to the worker and waits at most a
few milliseconds; a late decision never stops the heartbeat and setpoint stream: the last
setpoint is held until the decision arrives.

Frames: PX4's local origin is where the vehicle was when its estimator started (the takeoff
point); the world of the task has its own spawn area. At the first decision the vehicle's
horizontal position is mapped onto the spawn the environment drew for the drone (a constant
offset, :attr:`ExternalVehicle.offset_enu_m`); heights stay PX4's (the world's ground is z = 0
and PX4's local z = 0 is the ground at the takeoff point). Attitude, velocity and yaw are used
unchanged (both are ENU after :mod:`isr_px4_eval.px4.convert`).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from isr_direct_dynamics import InitialState
from isr_direct_dynamics.base import VehicleModel, scale_action
from isr_px4_eval.px4.convert import OdometryENU, VelocitySetpointENU
from isr_px4_eval.px4.frames import yaw_from_quat_wxyz


class ExternalVehicle(VehicleModel):
    """A vehicle model whose state is measured, not simulated (one drone, ``(1, 1)``).

    ``stage(odometry)`` sets what the next :meth:`step` returns; :meth:`step` records the command
    (:attr:`command`, the safety-filtered normalized action) and makes the staged measurement
    the state. ``reset`` aligns the horizontal frame so that the vehicle is at the spawn position.
    """

    name = "external"

    def __init__(self, template: VehicleModel) -> None:
        super().__init__(1, 1, template.control_dt_s, template.device)
        self.config = template.config
        """The replaced model's config (the env reads its velocity limits)."""
        self.command = torch.zeros(1, 1, 4, device=self.device)
        """Last command the environment stepped with (normalized, after the safety filter)."""
        self.offset_enu_m = torch.zeros(3, device=self.device)
        """Added to PX4 local positions to get world positions (horizontal only)."""
        self.stepped_pos_enu_m = torch.zeros(3, device=self.device)
        """World position the last step reported (kept when the env then auto-resets)."""
        self._staged: OdometryENU | None = None

    def stage(self, odom: OdometryENU) -> None:
        """The measurement the next step (or reset) reports."""
        self._staged = odom

    def _measured(self) -> OdometryENU:
        if self._staged is None:
            raise RuntimeError("ExternalVehicle: no odometry staged before step/reset")
        return self._staged

    def _apply(self) -> None:
        o, st, dev = self._measured(), self.state, self.device

        def t(x: Any) -> Tensor:
            return torch.as_tensor(np.asarray(x, dtype=np.float32), device=dev)

        st.pos_enu_m[0, 0] = t(o.pos_enu_m) + self.offset_enu_m
        st.vel_enu_m_s[0, 0] = t(o.vel_enu_m_s)
        st.quat_wxyz[0, 0] = t(o.quat_wxyz)
        st.yaw_rad[0, 0] = float(o.yaw_rad)
        st.body_rates_flu_rad_s[0, 0] = t(o.body_rates_flu_rad_s)
        st.ground_contact[0, 0] = False

    def _reset_masked(self, mask: Tensor, initial: InitialState) -> None:
        spawn = initial.pos_enu_m.reshape(-1, 3)[0].to(self.device)
        pos = torch.as_tensor(np.asarray(self._measured().pos_enu_m, dtype=np.float32))
        self.offset_enu_m = torch.cat((spawn[:2] - pos[:2].to(self.device), spawn.new_zeros(1)))
        self._apply()

    def _step_clean(self, action: Tensor) -> None:
        self.command = action.clone()
        self._apply()
        self.stepped_pos_enu_m = self.state.pos_enu_m[0, 0].clone()


class PolicyPilot:
    """FLY-phase policy of :class:`~isr_px4_eval.px4.offboard.OffboardClient` running the ISR task.

    Args:
        env: a 1-world x 1-drone :class:`~isr_training.env.ISREnv` built with ``stagger=False``
            (e.g. :func:`isr_px4_eval.evaluation.run.make_eval_env`); its vehicle is replaced.
        act: observation -> action ``(1, 4)`` in ``[-1, 1]`` (a loaded policy's ``act``).
        seed: the environment's reset seed (spawn draw).
    """

    def __init__(self, env: Any, act: Callable[[Any], Tensor], seed: int = 0) -> None:
        if env.num_envs != 1:
            raise ValueError(f"PolicyPilot flies one drone; the env has {env.num_envs}")
        if env.cfg.stagger:
            raise ValueError("PolicyPilot needs an environment built with stagger=False")
        self.env = env
        self.vehicle = ExternalVehicle(env.vehicle)
        env.vehicle = self.vehicle
        self.act = act
        self.seed = seed
        self.control_dt_s = float(env.task.control_dt_s)
        self.decisions = 0
        """Policy decisions taken (one per control period)."""
        self.episode: dict[str, float] | None = None
        """Metrics of the finished episode (None while it runs)."""
        self.trace: list[dict[str, Any]] = []
        """Per decision: time, world position, reward, action sent."""
        self.recorder: Any = None
        """Optional :class:`~isr_px4_eval.evidence.recording.EnvRecorder` of ``env``: the episode as
        a rosbag2 (the live graph's topics), closed when the episode ends."""
        self._obs: Any = None
        self._action: Tensor | None = None
        self._setpoint: VelocitySetpointENU | None = None
        self._next_s = -math.inf

    @torch.no_grad()
    def warm_up(self, altitude_m: float = 20.0) -> float:
        """One dry decision (reset, step, policy, safety filter) on a made-up hover pose.

        Then everything of it is forgotten: numba compilation and first-call initialisation
        happen here, before arming. Returns the seconds it took.
        """
        t0 = time.perf_counter()
        z3 = np.zeros(3)
        hover = OdometryENU(
            0, np.array([0.0, 0.0, altitude_m]), z3, np.array([1.0, 0.0, 0.0, 0.0]), z3, 0.0
        )
        recorder, self.recorder = self.recorder, None
        try:
            self(hover, 0.0)
            self(hover, self.control_dt_s)
        finally:
            self.recorder = recorder
        self.decisions, self.trace, self.episode = 0, [], None
        self._obs = self._action = self._setpoint = None
        self._next_s = -math.inf
        return time.perf_counter() - t0

    def _decide(self, obs: Any) -> VelocitySetpointENU:
        env = self.env
        action = self.act(obs).reshape(1, 4).to(env.device, torch.float32)
        bad = ~torch.isfinite(action).all(-1, keepdim=True)
        action = torch.where(bad, 0.0, action).clamp(-1.0, 1.0)
        self._action = action
        filtered, _ = env.filter_action(action.view(1, 1, 4))
        vel, yaw_rate = scale_action(filtered.reshape(4), env.limits)
        self.decisions += 1
        return VelocitySetpointENU(vel.cpu().numpy().astype(np.float64), float(yaw_rate))

    @torch.no_grad()
    def __call__(self, odom: OdometryENU, t_s: float) -> VelocitySetpointENU | None:
        """The setpoint for this client tick (a new decision once per control period)."""
        if self.episode is not None:
            return None
        if t_s < self._next_s and self._setpoint is not None:
            return self._setpoint  # hold the setpoint between control periods
        self._next_s = (t_s if self._next_s == -math.inf else self._next_s) + self.control_dt_s
        self.vehicle.stage(odom)
        env = self.env
        if self._obs is None:
            obs = env.reset(seed=self.seed)
            reward = 0.0
            if self.recorder is not None:
                self.recorder.record_reset()
        else:
            obs, r, term, trunc, info = env.step(self._action)
            reward = float(r[0])
            if self.recorder is not None:
                self.recorder.record_step(self._action, r, term, trunc, info)
            if bool(info["done"][0]):
                if self.recorder is not None:
                    self.recorder.close()  # the env has auto-reset the drone: log the final pose
                self.episode = {k: float(v[0]) for k, v in info["episode"].items()}
                self.episode["terminated"] = float(term[0])
                self._record(t_s, reward, self.vehicle.stepped_pos_enu_m)
                return None
        self._obs = obs
        self._setpoint = self._decide(obs)
        self._record(t_s, reward)
        return self._setpoint

    def _record(self, t_s: float, reward: float, pos: Tensor | None = None) -> None:
        pos = self.vehicle.state.pos_enu_m[0, 0] if pos is None else pos
        self.trace.append(
            {
                "t_s": round(t_s, 3),
                "pos_enu_m": [round(float(v), 3) for v in pos],
                "reward": reward,
                "setpoint": None
                if self._setpoint is None or self.episode is not None
                else [round(float(v), 3) for v in self._setpoint.vel_enu_m_s]
                + [round(self._setpoint.yaw_rate_enu_rad_s, 4)],
            }
        )


class BackgroundPilot:
    """A FLY policy run on a worker thread, so that the offboard tick never waits for it.

    Args:
        build: ``() -> (fly policy, PolicyPilot or None)`` (e.g. ``lambda: make_fly_policy(...)``);
            called on the worker, followed by the pilot's :meth:`PolicyPilot.warm_up`.
        wait_s: how long a tick waits for a decision it handed over (then the last setpoint is
            held and the decision is used by a later tick).

    :meth:`ready` is true once build and warm-up are done (:attr:`error` holds their failure, and
    ``ready`` then raises). ``__call__`` is the client's FLY policy.
    """

    def __init__(
        self,
        build: Callable[[], tuple[Callable[[OdometryENU, float], Any], PolicyPilot | None]],
        wait_s: float = 0.02,
    ) -> None:
        self.wait_s = float(wait_s)
        self.fly: Callable[[OdometryENU, float], Any] | None = None
        self.pilot: PolicyPilot | None = None
        self.error = ""
        """Why build or warm-up failed (empty otherwise)."""
        self.warm_up_s = math.nan
        """Seconds the dry run took."""
        self.build_s = math.nan
        """Seconds the build (policy load, environment) took."""
        self.late_ticks = 0
        """FLY ticks that held the last setpoint because a decision was still running."""
        self.decision_s: list[float] = []
        """Worker seconds per call of the FLY policy."""
        self._requests: queue.Queue = queue.Queue(maxsize=1)
        self._done = threading.Event()
        self._ready = threading.Event()
        self._busy = False
        self._ended = False
        self._result: Any = None
        self._setpoint = VelocitySetpointENU(np.zeros(3), 0.0)
        self._thread = threading.Thread(target=self._run, args=(build,), daemon=True)
        self._thread.start()

    def ready(self) -> bool:
        """Whether the policy is built and warmed up; raises RuntimeError if that failed."""
        if self.error:
            raise RuntimeError(self.error)
        return self._ready.is_set()

    def _run(self, build: Callable[[], Any]) -> None:
        try:
            t0 = time.perf_counter()
            self.fly, self.pilot = build()
            self.build_s = time.perf_counter() - t0
            self.warm_up_s = self.pilot.warm_up() if self.pilot is not None else 0.0
        except Exception as exc:  # reported through ready() and error
            self.error = f"policy build/warm-up failed: {type(exc).__name__}: {exc}"
            return
        self._ready.set()
        while True:
            odom, t_s = self._requests.get()
            t0 = time.perf_counter()
            try:
                self._result = self.fly(odom, t_s)
            except Exception as exc:  # the episode ends; the client lands
                self.error = f"policy step failed: {type(exc).__name__}: {exc}"
                self._result = None
            self.decision_s.append(time.perf_counter() - t0)
            self._done.set()

    def _collect(self) -> None:
        self._busy = False
        if self._result is None:
            self._ended = True
        else:
            self._setpoint = self._result

    def __call__(self, odom: OdometryENU, t_s: float) -> VelocitySetpointENU | None:
        """The setpoint for this tick: the newest decision, else the last one held."""
        if not self._ready.is_set():
            return self._setpoint  # (the client only flies once ready; kept safe regardless)
        if self._busy and self._done.is_set():
            self._collect()
        if not self._busy and not self._ended:
            self._busy = True
            self._done.clear()
            self._requests.put((odom, t_s))
            if self._done.wait(self.wait_s):
                self._collect()
        if self._busy:
            self.late_ticks += 1
        return None if self._ended else self._setpoint

    def stats(self) -> dict[str, Any]:
        """Build, warm-up and decision timings (seconds) for the result file."""
        d = np.asarray(self.decision_s) if self.decision_s else np.zeros(1)
        return {
            "build_s": self.build_s,
            "warm_up_s": self.warm_up_s,
            "decisions": len(self.decision_s),
            "decision_max_s": float(d.max()),
            "decision_p99_s": float(np.percentile(d, 99)),
            "late_ticks": self.late_ticks,
            "error": self.error,
        }


def odometry_from_ros(msg: Any) -> OdometryENU:
    """A ``nav_msgs/Odometry`` (ENU pose, body twist; REP 105) as the pilot's odometry.

    The odometry of ``direct_dynamics_node`` (or any node of the graph) -> :class:`OdometryENU`.
    """
    from isr_sim_bridge.rosmsg import odometry_to_numpy

    d = odometry_to_numpy(msg)
    yaw = float(yaw_from_quat_wxyz(d["quat_wxyz"]))
    return OdometryENU(
        int(round(float(d["t_s"]) * 1e6)), d["pos_enu_m"], d["vel_enu_m_s"], d["quat_wxyz"],
        d["body_rates_flu_rad_s"], yaw,
    )  # fmt: skip


def pilot_episode_fields(pilot: PolicyPilot, world_seed: int) -> dict[str, Any]:
    """``isr_msgs/EpisodeMetrics`` fields of the pilot's finished episode (empty while none)."""
    ep = pilot.episode
    if ep is None:
        return {}
    dt = pilot.control_dt_s
    out = {
        "world_index": int(world_seed),
        "drone_index": 0,
        "episode_return": ep["return"],
        "episode_length_s": ep["length"] * dt,
        "targets_found_fraction": ep["targets_found"],
        "coverage_fraction": ep["coverage"],
        "collisions": int(ep["collisions"]),
        "geofence_breaches": int(ep["geofence_breaches"]),
        "safety_interventions": int(ep["safety_interventions"]),
        "terminated": bool(ep["terminated"]),
        "truncated": not bool(ep["terminated"]),
    }
    if math.isfinite(ep["time_to_first_detection_s"]):
        out["time_to_first_detection_s"] = ep["time_to_first_detection_s"]
    return out


__all__ = [
    "BackgroundPilot",
    "ExternalVehicle",
    "PolicyPilot",
    "odometry_from_ros",
    "pilot_episode_fields",
]
