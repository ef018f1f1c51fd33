"""Baseline policies: uniform random, and a scripted expert (lawnmower, then approach).

The expert is privileged (it reads the world geometry and the detections of the environment): it
flies a lawnmower pattern over the geofenced area at a good altitude, heading along its track so
that the down-forward camera sweeps the ground, skips waypoints inside no-fly zones, and when it
sees a target that is detected but not yet found (its box still too small), it approaches it.
It is used for baselines, for imitation-learning demonstrations and as a sanity check of the task.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from isr_direct_dynamics.config import check
from isr_direct_dynamics.math3d import wrap_angle

from .env import ISREnv


class RandomPolicy:
    """Uniform random actions in ``[-1, 1]`` (seeded)."""

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", seed: int = 0) -> None:
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.gen = torch.Generator(device=self.device).manual_seed(seed)

    def __call__(self, obs: object) -> Tensor:
        """Random actions ``(N, 4)``."""
        return torch.rand(self.num_envs, 4, generator=self.gen, device=self.device) * 2 - 1


class ScriptedExpert:
    """Lawnmower coverage at ``altitude_m``, then approach detected targets (batched, privileged).

    Args:
        env: the environment it flies (its world, state and detections are read every step).
        altitude_m: cruise altitude.
        spacing_m: distance between lawnmower strips; None = twice the task's smallest recognition
            range (``found_range_m``: persons, 25 m), so that every point of the ground passes
            within recognition range of the track.
        speed_m_s: cruise speed; None = the vehicle's horizontal speed limit.
        approach_altitude_m: altitude while approaching a detected target that is not yet found.

    The defaults were chosen by measurement on 200 validation worlds (seeds 90000-90199, one drone
    each, direct model): strips 2 x 25 m apart at the speed limit find 0.694 of the targets
    (coverage 0.835); strips from the camera footprint (0.8 x its width, 32 m) at 9 m/s found
    0.612 (0.703), the pattern then cannot be finished in the 120 s episode. Altitudes 24-26 m,
    approach altitudes 10-21 m and strips 40 or 60 m apart score within 0.02 of the default.
        action_noise: std of Gaussian noise added to the normalized action (demonstrations).
        seed: seed of the noise.
    """

    def __init__(
        self,
        env: ISREnv,
        altitude_m: float = 25.0,
        spacing_m: float | None = None,
        speed_m_s: float | None = None,
        approach_altitude_m: float = 14.0,
        action_noise: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.env = env
        # Drones of one world fly at different altitudes and start at different strips, so that
        # they neither collide nor cover the same ground.
        d = torch.arange(env.drones_per_world, device=env.device, dtype=torch.float32)
        self.altitude_m = (altitude_m + 3.0 * (d - d.mean())).clamp(min=approach_altitude_m + 2)
        self.approach_altitude_m = approach_altitude_m
        self.speed_m_s = env.limits.max_velocity_m_s if speed_m_s is None else speed_m_s
        self.action_noise = action_noise
        self.gen = torch.Generator(device=env.device).manual_seed(seed)
        if spacing_m is None:
            spacing_m = 2.0 * min(env.task.found_range_m)
        check(spacing_m > 0, "spacing_m", f"must be > 0, got {spacing_m}")
        check(self.speed_m_s > 0, "speed_m_s", f"must be > 0, got {self.speed_m_s}")
        self.spacing_m = float(spacing_m)
        self.waypoints, self.wp_valid = self._lawnmower()
        z = torch.zeros
        self.wp_index = z(env._shape, dtype=torch.long, device=env.device)
        self.wp_dir = torch.ones(env._shape, dtype=torch.long, device=env.device)
        self._started = z(env._shape, dtype=torch.bool, device=env.device)
        self._best_dist = torch.full(env._shape, float("inf"), device=env.device)
        self._stall_steps = z(env._shape, dtype=torch.long, device=env.device)
        self._stall_limit = max(1, round(3.0 / env.task.control_dt_s))

    def _lawnmower(self) -> tuple[Tensor, Tensor]:
        """Waypoints ``(W, P, 2)`` of a boustrophedon over the geofence (minus a margin)."""
        w = self.env.world
        margin = self.env.task.safety.geofence_margin_m + 6.0
        lo = w.geofence_min_m[:, :2] + margin
        hi = w.geofence_max_m[:, :2] - margin
        width = float((hi[:, 1] - lo[:, 1]).max())
        strips = max(2, int(math.ceil(width / self.spacing_m)) + 1)
        frac = torch.linspace(0, 1, strips, device=w.device)
        ys = lo[:, 1:2] + (hi[:, 1:2] - lo[:, 1:2]) * frac  # (W, S)
        left, right = lo[:, 0:1].expand_as(ys), hi[:, 0:1].expand_as(ys)
        even = torch.arange(strips, device=w.device) % 2 == 0
        x0 = torch.where(even, left, right)
        x1 = torch.where(even, right, left)
        wps = torch.stack((torch.stack((x0, ys), -1), torch.stack((x1, ys), -1)), 2)  # (W,S,2,2)
        wps = wps.reshape(w.num_worlds, -1, 2)
        # Waypoints inside a no-fly zone (plus margin) are skipped.
        m = self.env.task.safety.nfz_margin_m + 3.0
        p = wps[:, :, None]
        inside = ((p >= w.nfz_min_m[:, None] - m) & (p <= w.nfz_max_m[:, None] + m)).all(-1)
        inside &= w.nfz_valid[:, None]
        return wps, ~inside.any(-1)

    def reset_mask(self, mask: Tensor) -> None:
        """Forget the progress of drones whose episode restarted (``(W, D)`` bool)."""
        self._started &= ~mask

    def _start(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        """Start index and direction of every drone.

        Drone d of D sweeps the d-th part of the pattern, from the end of that part nearer to it
        towards the other end.
        """
        p_count = self.waypoints.shape[1]
        dist = ((pos[..., None, :2] - self.waypoints[:, None]) ** 2).sum(-1)  # (W, D, P)
        n = self.env.drones_per_world
        # Part d holds the waypoints a with d <= a * D / P < d + 1; with more drones than
        # waypoints (D > P) several drones share one waypoint (they fly at different altitudes).
        d = torch.arange(n, device=pos.device)
        first = ((d * p_count + n - 1) // n).clamp(max=p_count - 1)  # (D,)
        last = torch.maximum(first, ((d + 1) * p_count + n - 1) // n - 1)
        d_first = torch.gather(dist, 2, first.expand(*dist.shape[:2]).unsqueeze(-1)).squeeze(-1)
        d_last = torch.gather(dist, 2, last.expand(*dist.shape[:2]).unsqueeze(-1)).squeeze(-1)
        forward = d_first <= d_last
        index = torch.where(forward, first, last)
        return index, torch.where(forward, 1, -1)

    def __call__(self, obs: object = None) -> Tensor:
        """Expert actions ``(N, 4)`` for the current state of the environment."""
        env = self.env
        st = env.vehicle.state
        pos = st.pos_enu_m
        new = ~self._started | (env.step_count == 0)
        if bool(new.any()):
            index, direction = self._start(pos)
            self.wp_index = torch.where(new, index, self.wp_index)
            self.wp_dir = torch.where(new, direction, self.wp_dir)
            self._best_dist = torch.where(new, float("inf"), self._best_dist)
            self._started |= True
        p_count = self.waypoints.shape[1]
        wp = torch.gather(
            self.waypoints[:, None].expand(-1, env.drones_per_world, -1, -1),
            2,
            self.wp_index[..., None, None].expand(*self.wp_index.shape, 1, 2),
        ).squeeze(2)
        dist_wp = torch.linalg.vector_norm(wp - pos[..., :2], dim=-1)
        # No progress for 3 s (e.g. the safety filter holds it at a no-fly zone): skip the waypoint.
        progress = dist_wp < self._best_dist - 1.0
        self._stall_steps = torch.where(progress, 0, self._stall_steps + 1)
        self._best_dist = torch.where(progress, dist_wp, self._best_dist)
        reached = (dist_wp < 4.0) | (self._stall_steps >= self._stall_limit)
        nxt = (self.wp_index + self.wp_dir) % p_count
        for _ in range(3):  # skip up to 3 invalid waypoints in a row
            ok = torch.gather(self.wp_valid[:, None].expand(-1, env.drones_per_world, -1), 2,
                              nxt.unsqueeze(-1)).squeeze(-1)  # fmt: skip
            nxt = torch.where(ok, nxt, (nxt + self.wp_dir) % p_count)
        self.wp_index = torch.where(reached, nxt, self.wp_index)
        self._best_dist = torch.where(reached, float("inf"), self._best_dist)
        self._stall_steps = torch.where(reached, 0, self._stall_steps)
        goal = wp

        # Approach a detected-but-not-found target (its ground position is known to the expert).
        vis = env.det_visible & ~env.found
        if bool(vis.any()):
            b = env.det_boxes
            area = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
            score = torch.where(vis, area, -1.0)
            best = score.argmax(-1)  # (W, D)
            tpos = torch.gather(
                env.world.target_pos_enu_m[:, None, :, :2].expand(-1, env.drones_per_world, -1, -1),
                2,
                best[..., None, None].expand(*best.shape, 1, 2),
            ).squeeze(2)
            has = vis.any(-1, keepdim=True)
            goal = torch.where(has, tpos, goal)
            approaching = has.squeeze(-1)
        else:
            approaching = torch.zeros_like(reached)

        delta = goal - pos[..., :2]
        dist = torch.linalg.vector_norm(delta, dim=-1, keepdim=True).clamp(min=1e-6)
        speed = torch.clamp(0.8 * dist, max=self.speed_m_s)
        v_xy = delta / dist * speed
        # Cruise altitude, lower when approaching a target that is still too small to be found.
        alt = torch.where(approaching, self.approach_altitude_m, self.altitude_m)
        v_z = torch.clamp(1.0 * (alt - pos[..., 2]), -3.0, 3.0).unsqueeze(-1)
        heading = torch.atan2(delta[..., 1], delta[..., 0])
        yaw_rate = torch.clamp(2.0 * wrap_angle(heading - st.yaw_rad), -math.pi / 2, math.pi / 2)
        lim = env.limits
        action = torch.cat(
            (
                v_xy / lim.max_velocity_m_s,
                v_z / lim.max_vertical_velocity_m_s,
                (yaw_rate / math.radians(lim.max_yaw_rate_deg_s)).unsqueeze(-1),
            ),
            -1,
        )
        if self.action_noise > 0:
            action = action + self.action_noise * torch.randn(
                action.shape, generator=self.gen, device=action.device
            )
        return action.clamp(-1.0, 1.0).reshape(env.num_envs, 4)


SE_METRICS = ("targets_found", "return")
"""Episode metrics whose standard error over the episodes :func:`run_policy` also reports
(``<name>_se``): how far a mean over a few worlds can be trusted."""

PER_EPISODE_METRICS = ("targets_found", "coverage", "return")
"""Episode metrics :func:`run_policy` lists per drone with ``per_episode=True``."""


def run_policy(
    env: ISREnv,
    policy,
    episodes_per_drone: int = 1,
    max_steps: int | None = None,
    per_episode: bool = False,
) -> dict[str, Any]:
    """Run ``policy`` until every drone finished ``episodes_per_drone`` episodes; mean metrics.

    The environment should be built with ``stagger=False`` so that episodes are complete. Also
    ``targets_found_se`` and ``return_se``: standard errors of those means over the episodes.
    ``per_episode``: also ``"per_episode"``, ``{metric: list}`` of every drone's first episode
    (:data:`PER_EPISODE_METRICS`, drone order), so that two policies flown on the same worlds
    can be compared world by world (:func:`paired_difference`).
    """
    obs = env.reset()
    if isinstance(policy, ScriptedExpert):
        policy.reset_mask(torch.ones(env._shape, dtype=torch.bool, device=env.device))
    done_count = torch.zeros(env.num_envs, dtype=torch.long, device=env.device)
    sums: dict[str, Tensor] = {}
    first = {  # every drone's first episode, when asked for
        k: torch.full((env.num_envs,), math.nan, device=env.device)
        for k in (PER_EPISODE_METRICS if per_episode else ())
    }
    limit = max_steps or env.max_episode_steps * episodes_per_drone + 1
    for _ in range(limit):
        obs, _, _, _, info = env.step(policy(obs))
        done = info["done"] & (done_count < episodes_per_drone)
        if bool(done.any()):
            for k, v in info["episode"].items():
                vals = torch.nan_to_num(v, nan=0.0) if k == "time_to_first_detection_s" else v
                sums[k] = sums.get(k, torch.zeros((), device=env.device)) + (vals * done).sum()
            if "time_to_first_detection_s" in info["episode"]:
                has = ~torch.isnan(info["episode"]["time_to_first_detection_s"]) & done
                sums["_ttfd_count"] = (
                    sums.get("_ttfd_count", torch.zeros((), device=env.device)) + has.sum()
                )
            sums["_terminated"] = (
                sums.get("_terminated", torch.zeros((), device=env.device))
                + (info["episode"]["collisions"].gt(0) & done).sum()
            )
            for k, v in first.items():
                first[k] = torch.where(done & torch.isnan(v), info["episode"][k].float(), v)
            for k in SE_METRICS:  # second moments for the standard errors
                if k in info["episode"]:
                    v = info["episode"][k].double()
                    sums[f"_sq_{k}"] = (
                        sums.get(f"_sq_{k}", torch.zeros((), device=env.device))
                        + (v * v * done).sum()
                    )
            if isinstance(policy, ScriptedExpert):
                policy.reset_mask(info["done"].view(env._shape))
        done_count += info["done"].long()
        if bool((done_count >= episodes_per_drone).all()):
            break
    n = float(
        min(int(done_count.clamp(max=episodes_per_drone).sum()), env.num_envs * episodes_per_drone)
    )
    if n == 0:
        raise RuntimeError("no episode finished; raise max_steps")
    out = {k: float(v) / n for k, v in sums.items() if not k.startswith("_")}
    ttfd_n = float(sums.get("_ttfd_count", 0))
    out["time_to_first_detection_s"] = (
        float(sums.get("time_to_first_detection_s", 0.0)) / ttfd_n if ttfd_n else float("nan")
    )
    out["crash_rate"] = float(sums.get("_terminated", 0.0)) / n
    out["episodes"] = n
    for k in SE_METRICS:
        if f"_sq_{k}" in sums:
            var = max(0.0, float(sums[f"_sq_{k}"]) / n - out[k] ** 2) * (
                n / (n - 1) if n > 1 else 0
            )
            out[f"{k}_se"] = math.sqrt(var / n) if n > 1 else float("nan")
    if per_episode:
        out["per_episode"] = {k: v.tolist() for k, v in first.items()}
    return out


def paired_difference(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean of ``a - b`` over paired episodes (the same worlds) and its standard error.

    Also how many episodes each side won; NaN pairs (an episode that did not finish) are left out.
    """
    d = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    d = d[~torch.isnan(d)]
    n = int(d.numel())
    se = float(d.std() / math.sqrt(n)) if n > 1 else math.nan
    return {
        "mean": float(d.mean()) if n else math.nan,
        "se": se,
        "n": n,
        "a_better": int((d > 0).sum()),
        "b_better": int((d < 0).sum()),
    }
