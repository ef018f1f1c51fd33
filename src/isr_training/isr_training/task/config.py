"""Typed configuration of the ISR search task (shared by training and evaluation)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from isr_direct_dynamics.config import check

TASK_VERSION = "isr-search-v2"
"""Version of the task definition (observation layout, action meaning, reward terms). A policy file
records it; evaluation refuses a policy trained on another version."""


@dataclass
class RewardWeights:
    """Weight of every named reward term (the reward is the weighted sum)."""

    new_target: float = 10.0
    """Per target detected for the first time by this drone."""
    coverage: float = 0.5
    """Per coverage cell seen for the first time by this drone."""
    time: float = -0.01
    """Per control step (a cost: keep it <= 0)."""
    collision: float = -20.0
    """On a crash (terrain, building/obstacle or another drone)."""
    geofence: float = -20.0
    """On a geofence breach."""
    altitude_band: float = -0.05
    """Per step, times the distance (m, capped at 10) outside the preferred altitude band."""
    action_smoothness: float = -0.01
    """Per step, times the squared change of the normalized action."""
    lead_approach: float = 0.0
    """Per metre the drone came closer to identifying its nearest remembered lead (a target it
    detected and has not found yet): the lead's distance beyond its class's recognition range
    (``found_range_m``), in 3D, so that descending towards a person counts; moving away costs the
    same. A shaping term towards identification (0: off)."""

    def validate(self) -> None:
        """Check the signs of the costs."""
        for name in ("time", "collision", "geofence", "altitude_band", "action_smoothness"):
            check(getattr(self, name) <= 0, name, "is a cost and must be <= 0")
        for name in ("new_target", "coverage", "lead_approach"):
            check(getattr(self, name) >= 0, name, "is a gain and must be >= 0")


@dataclass
class SafetyConfig:
    """The safety filter (the original plan's ontology/behaviour layer), applied to every action."""

    enabled: bool = True
    """Apply the filter (training and evaluation alike)."""
    horizon_s: float = 2.6
    """Velocity barrier horizon: the speed towards a boundary is limited to (distance - margin) /
    horizon. About 4x the horizontal time constant makes the approach critically damped."""
    geofence_margin_m: float = 4.0
    """Keep-out distance inside the geofence walls."""
    altitude_margin_m: float = 2.0
    """Keep-out distance above the minimum and below the maximum altitude."""
    nfz_margin_m: float = 4.0
    """Keep-out distance around no-fly zones."""
    obstacle_margin_m: float = 3.0
    """Keep-out distance around buildings/obstacles, horizontally, while below roof + margin."""

    def validate(self) -> None:
        """Check ranges."""
        check(self.horizon_s > 0, "horizon_s", f"must be > 0, got {self.horizon_s}")
        for name in ("geofence_margin_m", "altitude_margin_m", "nfz_margin_m", "obstacle_margin_m"):
            v = getattr(self, name)
            check(math.isfinite(v) and v >= 0, name, f"must be >= 0, got {v}")


@dataclass
class ObservationConfig:
    """What the policy observes."""

    coverage_cells: int = 16
    """Coverage grid resolution per axis over the area (cells seen by each drone)."""
    obs_coverage_cells: int = 8
    """Resolution of the coverage grid in the observation (block averages of ``coverage_cells``)."""
    top_k_detections: int = 4
    """Number of current detections in the observation (largest boxes of unfound targets first)."""
    top_k_leads: int = 3
    """Number of remembered leads in the observation: targets this drone detected but has not
    found yet (not yet within recognition range), nearest first, at the position where it last
    detected them, relative to the drone in its heading frame. The drone keeps them after they
    leave the camera's view (a detection memory: a target seen far away is worth flying to)."""
    camera: bool = False
    """Also return the camera image (``Dict`` observation ``{"state", "image"}``)."""

    def validate(self) -> None:
        """Check ranges."""
        check(self.coverage_cells >= 2, "coverage_cells", "must be >= 2")
        check(
            self.obs_coverage_cells >= 1 and self.coverage_cells % self.obs_coverage_cells == 0,
            "obs_coverage_cells",
            f"must divide coverage_cells ({self.coverage_cells}), got {self.obs_coverage_cells}",
        )
        check(self.top_k_detections >= 0, "top_k_detections", "must be >= 0")
        check(self.top_k_leads >= 0, "top_k_leads", f"must be >= 0, got {self.top_k_leads}")


MAX_EPISODE_STEPS = 1_000_000
"""Longest episode in control steps (a day at 0.1 s is 864,000): buffers such as the
demonstrations are sized by the episode, so a longer one is refused at validation."""


@dataclass
class TaskConfig:
    """The ISR search task: find targets and cover the area, safely, before the time runs out."""

    control_dt_s: float = 0.1
    """Control period (one environment step), seconds."""
    episode_length_s: float = 120.0
    """Time limit of an episode (truncation), seconds."""
    perception_interval: int = 2
    """Detections and coverage are updated every Nth control step (and the camera renders then:
    the original plan's ``render_interval``). Between perception steps the observation keeps the
    last detections and coverage."""
    spawn_altitude_m: tuple[float, float] = (25.0, 40.0)
    """Altitude range of spawned drones."""
    altitude_band_m: tuple[float, float] = (20.0, 50.0)
    """Preferred altitude band (outside it the altitude_band term costs)."""
    min_altitude_m: float = 5.0
    """Minimum altitude enforced by the safety filter (the geofence floor if higher)."""
    drone_radius_m: float = 0.5
    """Collision radius of a drone (drone-drone and drone-obstacle contacts)."""
    drone_collisions: bool = True
    """Drones of one world crash into each other (closer than two radii). Off in training with
    several drones per world whose policies do not observe each other: a crash caused by a drone
    the policy cannot see is noise, and evaluation flies one drone per world."""
    terminate_on_geofence: bool = True
    """A geofence breach ends the episode (``terminated``); otherwise only the cost applies."""
    found_range_m: tuple[float, ...] = (50.0, 25.0, 60.0)
    """A detected target counts as found (identified) when the drone is within this distance of it,
    per class (vehicle, person, structure): a recognition range, independent of the camera's
    resolution. Farther detections still appear in the observation, as leads to approach."""
    reward: RewardWeights = field(default_factory=RewardWeights)
    """Weights of the reward terms."""
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    """The safety filter."""
    observation: ObservationConfig = field(default_factory=ObservationConfig)
    """Observation layout."""

    @property
    def max_episode_steps(self) -> int:
        """Episode length in control steps."""
        return max(1, round(self.episode_length_s / self.control_dt_s))

    def validate(self) -> None:
        """Check ranges; raises ConfigError naming the field."""
        check(self.control_dt_s > 0, "control_dt_s", f"must be > 0, got {self.control_dt_s}")
        check(
            self.episode_length_s >= self.control_dt_s,
            "episode_length_s",
            f"must be >= control_dt_s, got {self.episode_length_s}",
        )
        steps = self.episode_length_s / self.control_dt_s
        check(
            steps <= MAX_EPISODE_STEPS,
            "episode_length_s",
            f"{self.episode_length_s:g} s at {self.control_dt_s:g} s per step is {steps:.3g} "
            f"steps; at most {MAX_EPISODE_STEPS:,} per episode",
        )
        check(self.perception_interval >= 1, "perception_interval", "must be >= 1")
        lo, hi = self.spawn_altitude_m
        check(0 < lo <= hi, "spawn_altitude_m", f"must be 0 < min <= max, got {lo}, {hi}")
        lo, hi = self.altitude_band_m
        check(0 <= lo < hi, "altitude_band_m", f"must be 0 <= min < max, got {lo}, {hi}")
        check(self.min_altitude_m >= 0, "min_altitude_m", "must be >= 0")
        check(self.drone_radius_m > 0, "drone_radius_m", "must be > 0")
        check(
            len(self.found_range_m) == 3 and all(r > 0 for r in self.found_range_m),
            "found_range_m",
            f"needs 3 positive ranges (vehicle, person, structure), got {self.found_range_m}",
        )
