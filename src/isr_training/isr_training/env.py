"""The batched ISR environment: W worlds x D drones, every drone an independent agent.

Contract (torch, all tensors on ``env.device``; ``N = num_worlds * drones_per_world``, world-major,
so drone ``i`` lives in world ``i // D``):

- ``reset(seed=None) -> obs``: resets every drone; episode step counters are staggered
  (uniform in ``[0, max_episode_steps)``) unless ``stagger=False``, so that time-outs spread out.
- ``step(action (N, 4)) -> (obs, reward (N,), terminated (N,) bool, truncated (N,) bool, info)``.
  Drones that are done are reset automatically before the call returns: ``obs`` holds their first
  observation of the next episode and ``info["final_obs"]`` their last one (rows of done drones;
  other rows are the current observation). ``terminated`` (crash, geofence breach if configured)
  and ``truncated`` (time limit) are never merged.
- ``obs`` is a float tensor ``(N, obs_dim)``, or with the camera a dict ``{"state": (N, obs_dim),
  "image": (N, H, W, 3) uint8}``. The image is the last rendered frame (fresh on perception steps;
  ``info["rendered"]`` says whether this step rendered).
- ``info`` keys: ``final_obs``; ``reward_terms`` (dict of ``(N,)`` per-step values, unweighted);
  ``interventions`` (dict of ``(N,)`` bool); ``rendered`` (bool); ``episode`` (dict of ``(N,)``
  tensors valid where ``done``: return, length, per-term sums ``r/<term>``, targets_found,
  targets_detected (detected at any range, found or not), coverage, collisions,
  geofence_breaches, safety_interventions, time_to_first_detection_s);
  ``done`` (N,) bool; ``nonfinite_actions`` (running count); ``nonfinite_action`` (N,) bool (this
  step's action of the drone had a NaN/inf entry and was replaced by the zero command).

Choices made at construction (never branched on per step): vehicle model (direct/quadrotor),
perception (ground truth, or the YOLO detector on rendered images with ``perception="yolo"`` and
``detector_weights``; see :mod:`isr_training.perception`; any :class:`Perception` can be passed
in), camera on or off, perception interval (``render_interval``).

Bad input: an action of the wrong shape raises ``ValueError`` naming both shapes; NaN/inf entries
make that drone's command a zero command and are counted.

State read by baselines and recorders: ``det_boxes (W, D, T, 4)`` (valid where ``det_visible``),
``det_visible``, ``found (W, D, T)``, ``detected (W, D, T)``, ``lead_pos (W, D, T, 3)``,
``seen (W, D, G*G)``, ``step_count (W, D)``.

On CPU the step runs as numba kernels (``EnvConfig.cpu_kernels``, :mod:`isr_training.cpu_kernels`)
with the torch code's results; on CUDA the torch code runs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from isr_direct_dynamics import InitialState, make_vehicle_model
from isr_direct_dynamics.config import ConfigError, check, check_memory, validate_tree
from isr_direct_dynamics.cpu_kernels import as_numpy, threads_for
from isr_sim_bridge.camera import CameraConfig
from isr_sim_bridge.detections import DetectionConfig
from isr_sim_bridge.world import WorldSpec, advance_targets, generate_worlds
from isr_sim_bridge.world_batch import TARGET_CLASSES, WorldBatch

from . import cpu_kernels
from .perception import GroundTruthPerception, Perception, YoloPerception
from .task.config import TASK_VERSION, TaskConfig
from .task.coverage import (
    camera_corner_rays_body,
    cell_centres,
    cells_in_footprint,
    footprint_corners,
    pool_coverage,
)
from .task.rewards import (
    REWARD_TERMS,
    action_smoothness_term,
    altitude_band_term,
    collision_term,
    coverage_term,
    geofence_term,
    lead_approach_term,
    new_target_term,
    time_term,
    weighted_sum,
)
from .task.safety import INTERVENTION_KINDS, build_keep_out, safety_filter

COVERAGE_RANGE_M = 80.0
"""Ground farther than this from the drone does not count as covered."""

DET_FEATURES = 6 + len(TARGET_CLASSES)
"""Features per top-K detection: valid flag, class one-hot, box centre (x, y) and size (w, h) in
normalized image coordinates, already-found flag (see :func:`detection_features`)."""


LEAD_FEATURES = 4 + len(TARGET_CLASSES)
"""Features per remembered lead: valid flag, offset forward, left and up (m / :data:`LEAD_SCALE_M`)
in the drone's heading frame, class one-hot (see :func:`lead_features`)."""

LEAD_SCALE_M = 50.0
"""Length scale of the lead offsets in the observation, metres."""


def observation_size(task: TaskConfig) -> int:
    """Length of the state observation for ``task`` (layout in the module docstring).

    18 fixed features, the coverage grid, the top-k detections and the top-k leads.
    """
    oc = task.observation
    return (
        3 + 3 + 2 + 1 + 1 + 6 + 2
        + oc.obs_coverage_cells**2
        + oc.top_k_detections * DET_FEATURES
        + oc.top_k_leads * LEAD_FEATURES
    )  # fmt: skip


MAX_WORLDS = 100_000
"""Most worlds of one environment (memory is checked too: see ``WorldSpec.memory_bytes``)."""


@dataclass
class EnvConfig:
    """Configuration of :class:`ISREnv` (what is built at construction)."""

    num_worlds: int = 16
    """Number of worlds W."""
    drones_per_world: int = 1
    """Drones per world D (1 to 32); they share the world, each is its own agent."""
    vehicle: Literal["direct", "quadrotor"] = "direct"
    """Vehicle model: fast-mode direct dynamics or the full-fidelity quadrotor."""
    dynamics: dict[str, Any] = field(default_factory=dict)
    """Config of the vehicle model (keys of DirectDynamicsConfig / QuadrotorConfig)."""
    perception: Literal["gt", "yolo"] = "gt"
    """Detections from ground truth or from the YOLO detector (``detector_weights``)."""
    detector_weights: str | None = None
    """Trained YOLO weights (``best.pt`` of ``isr yolo train``); needed by ``perception: yolo``."""
    detector_conf: float = 0.25
    """Confidence threshold of the YOLO detector."""
    detector_match_iou: float = 0.5
    """IoU a YOLO detection needs with a target's projected ground-truth box (same class) to
    count as detecting that target."""
    camera: bool = False
    """Render camera images into the observation."""
    camera_resolution: str = "80x80"
    """Camera resolution (also of ground-truth detections): a preset (training, evaluation, full)
    or WxH."""
    camera_fov_deg: float = 70.0
    """Horizontal field of view of the camera."""
    camera_pitch_deg: float = 60.0
    """Camera mount pitch below the body's forward axis (90 = straight down)."""
    detection_min_box_px: float = 1.5
    """A target is detected when its box is at least this many pixels wide and high (and it is
    in view and not occluded). Finding it needs ``task.found_min_box_px``."""
    world: WorldSpec = field(default_factory=WorldSpec)
    """Procedural world spec."""
    world_seeds: list[int] | None = None
    """Seeds of the W worlds; None = seed, seed+1, ..."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """The task (reward, safety, observation, episode)."""
    seed: int = 0
    """Seed of every random stream (spawns, dynamics noise, stagger)."""
    stagger: bool = True
    """Stagger initial episode lengths at reset."""
    cpu_kernels: bool | None = None
    """On CPU, run the step as numba kernels (:mod:`isr_training.cpu_kernels`: safety filter,
    coverage, found targets, crashes, rewards, episode statistics, resets, observation; the
    ground-truth detector's fused ``visible_targets`` without a camera; the target motion), the
    same results as the torch code, which CUDA runs. ``None`` = automatic: on CPU whenever numba
    can be imported. The camera, the detector and the vehicle models have their own
    ``cpu_kernels`` settings (automatic too)."""
    compile: bool = False
    """Compile the per-step task kernels (safety filter, collisions) with ``torch.compile``:
    faster at thousands of drones, a slow first step (compilation), results equal to the eager
    ones up to float rounding. Applies to the torch step (CUDA, or ``cpu_kernels=False``).
    Ground-truth detections compile on their own (``DetectionConfig.compile``, automatic for
    large batches)."""

    def validate(self) -> None:
        """Check ranges; raises ConfigError naming the field."""
        check(
            1 <= self.num_worlds <= MAX_WORLDS,
            "num_worlds",
            f"must be in 1..{MAX_WORLDS}, got {self.num_worlds}",
        )
        check(
            1 <= self.drones_per_world <= 32,
            "drones_per_world",
            f"must be in 1..32, got {self.drones_per_world}",
        )
        check(
            self.perception in ("gt", "yolo"),
            "perception",
            f"must be 'gt' or 'yolo', got {self.perception!r}",
        )
        check(0.0 <= self.detector_conf <= 1.0, "detector_conf", "must be in [0, 1]")
        check(0.0 < self.detector_match_iou <= 1.0, "detector_match_iou", "must be in (0, 1]")
        if self.perception == "yolo":
            weights = self.detector_weights
            check(bool(weights), "detector_weights", "perception 'yolo' needs trained weights")
            check(Path(weights).is_file(), "detector_weights", f"file not found: {weights}")
        from isr_sim_bridge.camera import parse_resolution

        try:
            parse_resolution(self.camera_resolution)
        except ConfigError as exc:
            check(False, "camera_resolution", exc.reason or str(exc))
        check(
            0.0 < self.camera_fov_deg < 180.0,
            "camera_fov_deg",
            f"must be in (0, 180) degrees, got {self.camera_fov_deg}",
        )
        check(
            -90.0 <= self.camera_pitch_deg <= 90.0,
            "camera_pitch_deg",
            f"must be in [-90, 90] degrees, got {self.camera_pitch_deg}",
        )
        check_memory(
            self.num_worlds * self.world.memory_bytes(),
            f"{self.num_worlds} worlds of {self.world.size_x_m:g} x {self.world.size_y_m:g} m "
            f"at {self.world.texture_res_m:g} m/px",
            "num_worlds",
        )
        if self.world_seeds is not None:
            check(
                len(self.world_seeds) == self.num_worlds,
                "world_seeds",
                f"needs {self.num_worlds} seeds, got {len(self.world_seeds)}",
            )


def detection_features(
    boxes: Tensor,
    visible: Tensor,
    found: Tensor,
    target_class: Tensor,
    k: int,
    size: tuple[int, int],
) -> Tensor:
    """Top-``k`` detections as features ``(W, D, k * DET_FEATURES)``.

    Unfound targets rank first, then larger boxes, then lower slot indices (stable order, as
    :func:`isr_training.cpu_kernels.task_step`). Per detection: valid flag, class one-hot, box
    centre (x, y) and size (w, h) in image-normalized coordinates ([-1, 1] for the centre, [0, 2]
    for the size), already-found flag. Empty slots are all zero.
    """
    w_px, h_px = size
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])  # (W, D, T)
    bonus = 2.0 * w_px * h_px  # above any box area (exact in float32 at image sizes)
    score = torch.where(visible, area + torch.where(found, 0.0, bonus), -1.0)
    t = score.shape[-1]
    k_eff = min(k, t)
    top, idx = torch.sort(score, dim=-1, descending=True, stable=True)
    top, idx = top[..., :k_eff], idx[..., :k_eff]  # (W, D, k)
    valid = top >= 0
    b = torch.gather(boxes, 2, idx.unsqueeze(-1).expand(*idx.shape, 4))
    cls = torch.gather(target_class.unsqueeze(1).expand_as(score), 2, idx)
    onehot = torch.nn.functional.one_hot(cls, len(TARGET_CLASSES)).float()
    scale = boxes.new_tensor([w_px, h_px])
    centre = (b[..., :2] + b[..., 2:]) / scale - 1.0
    extent = (b[..., 2:] - b[..., :2]) / scale * 2.0
    fnd = torch.gather(found, 2, idx).float()
    feats = torch.cat((valid.float().unsqueeze(-1), onehot, centre, extent, fnd.unsqueeze(-1)), -1)
    feats = feats * valid.unsqueeze(-1)
    if k_eff < k:
        pad = feats.new_zeros(*feats.shape[:2], k - k_eff, feats.shape[-1])
        feats = torch.cat((feats, pad), 2)
    return feats.reshape(*feats.shape[:2], -1)


def lead_features(
    pos: Tensor,
    sin_yaw: Tensor,
    cos_yaw: Tensor,
    lead_pos: Tensor,
    active: Tensor,
    target_class: Tensor,
    k: int,
) -> Tensor:
    """Top-``k`` remembered leads as features ``(W, D, k * LEAD_FEATURES)``.

    ``lead_pos (W, D, T, 3)``: where each drone last detected each target; ``active (W, D, T)``:
    detected and not found yet. Nearest (horizontal distance) first, ties by lower slot index
    (as :func:`isr_training.cpu_kernels.task_step`). Per lead: valid flag, offset to it forward,
    left and up in the drone's heading frame (yaw ENU, counter-clockwise from east, given by its
    sine and cosine: those of the observation's head) divided by :data:`LEAD_SCALE_M`, class
    one-hot. Empty slots are all zero.
    """
    rel = lead_pos - pos.unsqueeze(2)  # (W, D, T, 3)
    d2 = rel[..., 0] * rel[..., 0] + rel[..., 1] * rel[..., 1]
    score = torch.where(active, d2, torch.inf)
    t = score.shape[-1]
    k_eff = min(k, t)
    top, idx = torch.sort(score, dim=-1, stable=True)
    top, idx = top[..., :k_eff], idx[..., :k_eff]
    valid = torch.isfinite(top)
    r = torch.gather(rel, 2, idx.unsqueeze(-1).expand(*idx.shape, 3))
    c, s = cos_yaw.unsqueeze(-1), sin_yaw.unsqueeze(-1)
    fwd = (c * r[..., 0] + s * r[..., 1]) / LEAD_SCALE_M
    left = (c * r[..., 1] - s * r[..., 0]) / LEAD_SCALE_M
    up = r[..., 2] / LEAD_SCALE_M
    cls = torch.gather(target_class.unsqueeze(1).expand_as(score), 2, idx)
    onehot = torch.nn.functional.one_hot(cls, len(TARGET_CLASSES)).float()
    feats = torch.cat(
        (valid.float().unsqueeze(-1), fwd.unsqueeze(-1), left.unsqueeze(-1), up.unsqueeze(-1),
         onehot), -1,
    )  # fmt: skip
    feats = feats * valid.unsqueeze(-1)
    if k_eff < k:
        pad = feats.new_zeros(*feats.shape[:2], k - k_eff, feats.shape[-1])
        feats = torch.cat((feats, pad), 2)
    return feats.reshape(*feats.shape[:2], -1)


def _cells_in_view(
    pos_enu_m: Tensor,
    quat_wxyz: Tensor,
    rays_body: Tensor,
    centres: Tensor,
    max_range_m: float,
    cpu_kernel: bool = False,
) -> Tensor:
    """Coverage cells ``(W, D, G*G)`` inside each drone's ground footprint (and in range).

    ``cpu_kernel`` (CPU tensors): the numba loop nest :func:`isr_training.cpu_kernels.
    cells_in_view` instead of the batched torch code.
    """
    if cpu_kernel:
        out = torch.empty(*pos_enu_m.shape[:2], centres.shape[0], dtype=torch.bool)
        with threads_for(pos_enu_m.shape[0] * pos_enu_m.shape[1], 128):
            cpu_kernels.cells_in_view(
                as_numpy(pos_enu_m), as_numpy(quat_wxyz), as_numpy(rays_body), as_numpy(centres),
                float(max_range_m), out.numpy(),
            )  # fmt: skip
        return out
    corners = footprint_corners(pos_enu_m, quat_wxyz, rays_body, max_range_m)
    return cells_in_footprint(corners, pos_enu_m, centres, max_range_m)


class ISREnv:
    """Batched ISR search environment (see the module docstring for the contract)."""

    render_mode: str | None = None
    """No on-screen rendering (camera images are part of the observation when enabled)."""

    def __init__(
        self,
        config: EnvConfig | None = None,
        device: torch.device | str = "cpu",
        perception: Perception | None = None,
        world: WorldBatch | None = None,
    ) -> None:
        cfg = config or EnvConfig()
        validate_tree(cfg)
        self.cfg = cfg
        self.task = cfg.task
        self.device = torch.device(device)
        self.num_worlds = cfg.num_worlds
        self.drones_per_world = cfg.drones_per_world
        self.num_envs = cfg.num_worlds * cfg.drones_per_world
        self.max_episode_steps = self.task.max_episode_steps
        self.task_version = TASK_VERSION
        shape = (self.num_worlds, self.drones_per_world)
        self._shape = shape

        seeds = cfg.world_seeds or [cfg.seed + i for i in range(cfg.num_worlds)]
        self.world_seeds = list(seeds)
        self.world = world if world is not None else generate_worlds(cfg.world, seeds, self.device)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        w0 = self.world  # moving targets start where the generator put them at every reset()
        self._targets_at_start = (
            w0.target_pos_enu_m.clone(),
            w0.target_yaw_rad.clone(),
            w0.target_path_s_m.clone(),
        )
        self.vehicle = make_vehicle_model(
            cfg.vehicle,
            cfg.num_worlds,
            cfg.drones_per_world,
            self.task.control_dt_s,
            self.device,
            seed=cfg.seed + 1,
            config=cfg.dynamics or None,
        )
        self.limits = self.vehicle.config.limits
        if perception is None:
            perception = make_perception(cfg, self.world, self.device)
        self.perception = perception
        self.keep_out = build_keep_out(self.world, self.task.safety)
        from isr_sim_bridge.camera import maybe_compile

        want = cfg.cpu_kernels is None or bool(cfg.cpu_kernels)
        self.cpu_kernels = self.device.type == "cpu" and want and cpu_kernels.AVAILABLE
        """Whether the task's numba kernels run (``EnvConfig.cpu_kernels``)."""
        self._safety_fn = (
            functools.partial(safety_filter, cpu_kernel=True)
            if self.cpu_kernels
            else maybe_compile(safety_filter, cfg.compile)
        )
        # the numba target motion updates the world's tensors in place through NumPy views
        wt = self.world
        self._targets_numba = self.cpu_kernels and all(
            t.is_contiguous()
            for t in (wt.target_path_xy_m, wt.target_path_len, wt.target_speed_m_s,
                      wt.target_valid, wt.target_path_s_m, wt.target_pos_enu_m, wt.target_yaw_rad)
        )  # fmt: skip
        self._gt_fused = (
            self.cpu_kernels
            and isinstance(perception, GroundTruthPerception)
            and perception.camera is None
            and perception.detector.cpu_kernel
        )
        """The CPU step computes ground-truth detections with the fused ``visible_targets``."""
        if self.cpu_kernels and REWARD_TERMS != cpu_kernels.KERNEL_TERMS:
            raise RuntimeError(f"reward terms {REWARD_TERMS} differ from the kernel's order")
        self._reward_weights = np.asarray(
            [getattr(self.task.reward, k) for k in REWARD_TERMS], dtype=np.float32
        )
        # (the coverage footprint stays eager: its compiled version is slower than the GEMM)
        self._collisions_fn = maybe_compile(self._collisions, cfg.compile)
        oc = self.task.observation
        w = self.world
        self._cells = oc.coverage_cells
        self._centres = cell_centres(
            w.x_min_m, w.y_min_m, w.size_x_m, w.size_y_m, oc.coverage_cells, self.device
        )
        self._rays_body = camera_corner_rays_body(
            perception.hfov_deg, perception.vfov_deg, perception.pitch_down_deg
        ).to(self.device)
        self._max_range_m = COVERAGE_RANGE_M
        self._found_range2 = torch.tensor(self.task.found_range_m, device=self.device) ** 2
        self._found_range = self._found_range2.sqrt()  # (the kernel's sqrt of found_range2)
        self._drone_hit_m = 2.0 * self.task.drone_radius_m if self.task.drone_collisions else 0.0
        self._area_centre = torch.tensor(
            [w.x_min_m + w.size_x_m / 2, w.y_min_m + w.size_y_m / 2], device=self.device
        )
        self._area_half = torch.tensor([w.size_x_m / 2, w.size_y_m / 2], device=self.device)
        self._alt_scale = float(w.geofence_max_m[:, 2].max())
        self.num_targets = w.target_valid.sum(-1).clamp(min=1).float()  # (W,)
        self.obs_dim = observation_size(self.task)
        self.image_shape = (perception.image_size[1], perception.image_size[0], 3)
        self.action_dim = 4

        t = w.target_valid.shape[1]
        z = torch.zeros
        self.step_count = z(shape, dtype=torch.long, device=self.device)
        self.global_step = 0
        self.found = z(*shape, t, dtype=torch.bool, device=self.device)
        self.seen = z(*shape, oc.coverage_cells**2, dtype=torch.bool, device=self.device)
        self.prev_action = z(*shape, 4, device=self.device)
        self.det_boxes = z(*shape, t, 4, device=self.device)
        self.det_visible = z(*shape, t, dtype=torch.bool, device=self.device)
        self.detected = z(*shape, t, dtype=torch.bool, device=self.device)
        """Targets each drone detected in this episode (with ``found``: the leads)."""
        self.lead_pos = z(*shape, t, 3, device=self.device)
        """Where each drone last detected each target (valid where ``detected``)."""
        self.lead_near_idx = torch.full(shape, -1, dtype=torch.long, device=self.device)
        """Each drone's nearest remembered lead after the last step (-1: none)."""
        self.lead_near_dist = z(shape, device=self.device)
        """Its 3D distance beyond its recognition range, m (the ``lead_approach`` term's memory)."""
        self.image = (
            z(self.num_worlds, self.drones_per_world, *self.image_shape, dtype=torch.uint8,
              device=self.device)
            if cfg.camera else None
        )  # fmt: skip
        self.ep_return = z(shape, device=self.device)
        # per-term episode sums: views of one (terms, W, D) tensor (one add, fill and copy)
        self._ep_terms_all = z(len(REWARD_TERMS), *shape, device=self.device)
        self.ep_terms = dict(zip(REWARD_TERMS, self._ep_terms_all.unbind(0), strict=True))
        self.ep_collisions = z(shape, device=self.device)
        self.ep_breaches = z(shape, device=self.device)
        self.ep_interventions = z(shape, device=self.device)
        self.ep_first_detection = torch.full(shape, float("nan"), device=self.device)
        self.nonfinite_action_count = z((), dtype=torch.long, device=self.device)
        self._obs_tail: Tensor | None = None  # perception part of the last observation
        # Pay the first call's one-time costs of the footprint ops (~0.4 s of lazy library
        # initialization in torch) here rather than in the first perception step.
        _cells_in_view(
            self.vehicle.state.pos_enu_m, self.vehicle.state.quat_wxyz, self._rays_body,
            self._centres, self._max_range_m, self.cpu_kernels,
        )  # fmt: skip

    # ------------------------------------------------------------------ helpers
    def _flat(self, x: Tensor) -> Tensor:
        return x.reshape(self.num_envs, *x.shape[2:])

    def _spawn(self, mask: Tensor) -> None:
        """Reset the vehicle state of masked drones to random spawn poses."""
        w = self.world
        shape = self._shape
        u = torch.rand(*shape, 4, generator=self.gen, device=self.device)
        lo, hi = w.spawn_min_m[:, None], w.spawn_max_m[:, None]
        xy = lo + (hi - lo) * u[..., :2]
        a0, a1 = self.task.spawn_altitude_m
        z = a0 + (a1 - a0) * u[..., 2]
        yaw = (u[..., 3] * 2 - 1) * math.pi
        self.vehicle.reset(
            mask, InitialState(pos_enu_m=torch.cat((xy, z.unsqueeze(-1)), -1), yaw_rad=yaw)
        )

    def _reset_drones(self, mask: Tensor) -> None:
        """Masked reset of everything that belongs to a drone's episode."""
        self._spawn(mask)
        m = mask
        self.step_count.masked_fill_(m, 0)
        self.found.masked_fill_(m.unsqueeze(-1), False)
        self.seen.masked_fill_(m.unsqueeze(-1), False)
        self.prev_action.masked_fill_(m.unsqueeze(-1), 0.0)
        self.det_visible.masked_fill_(m.unsqueeze(-1), False)
        self.detected.masked_fill_(m.unsqueeze(-1), False)
        self.lead_near_idx.masked_fill_(m, -1)
        self.ep_return.masked_fill_(m, 0.0)
        self._ep_terms_all.masked_fill_(m, 0.0)
        self.ep_collisions.masked_fill_(m, 0.0)
        self.ep_breaches.masked_fill_(m, 0.0)
        self.ep_interventions.masked_fill_(m, 0.0)
        self.ep_first_detection.masked_fill_(m, float("nan"))

    def _perceive(self) -> Tensor:
        """Run perception for every drone; return the coverage cells in view now.

        Stores the detections (and the image); returns ``(W, D, G*G)`` bool. The caller updates
        ``seen`` and ``found``.
        """
        st = self.vehicle.state
        out = self.perception(self.world, st.pos_enu_m, st.quat_wxyz)
        self.det_boxes = out.boxes_xyxy_px
        self.det_visible = out.visible & self.world.target_valid[:, None]
        if out.image is not None and self.image is not None:
            self.image = out.image
        return _cells_in_view(
            st.pos_enu_m, st.quat_wxyz, self._rays_body, self._centres, self._max_range_m,
            self.cpu_kernels,
        )  # fmt: skip

    def _observe(self) -> Tensor | dict[str, Tensor]:
        self._obs_tail = self._observe_tail()
        return self._assemble(self._observe_head(), self._obs_tail)

    def _observe_head(self) -> Tensor:
        """Kinematic part of the observation ``(W, D, 18)``: pose, velocity, time, fences."""
        st = self.vehicle.state
        w = self.world
        if self.cpu_kernels:  # the same in one numba loop (isr_training.cpu_kernels)
            out = torch.empty(*self._shape, 18)
            a = as_numpy
            with threads_for(self.num_envs, 4096):
                cpu_kernels.observe_head(
                    a(st.pos_enu_m), a(st.vel_enu_m_s), a(st.yaw_rad), a(self.step_count),
                    int(self.max_episode_steps), a(self._area_centre), a(self._area_half),
                    float(self._alt_scale), float(self.limits.max_velocity_m_s),
                    a(w.geofence_min_m), a(w.geofence_max_m), a(w.nfz_min_m), a(w.nfz_max_m),
                    a(w.nfz_valid), out.numpy(),
                )  # fmt: skip
            return out
        pos = st.pos_enu_m
        rel = (pos[..., :2] - self._area_centre) / self._area_half
        alt = pos[..., 2:3] / self._alt_scale
        vel = st.vel_enu_m_s / self.limits.max_velocity_m_s
        yaw = st.yaw_rad.unsqueeze(-1)
        time_left = 1.0 - self.step_count.unsqueeze(-1).float() / self.max_episode_steps
        gmin, gmax = w.geofence_min_m[:, None], w.geofence_max_m[:, None]
        fence = torch.cat((pos - gmin, gmax - pos), -1) / self._area_half.max()  # (W, D, 6)
        nfz = self._nearest_nfz(pos)
        return torch.cat(
            (rel, alt, vel, torch.sin(yaw), torch.cos(yaw), alt, time_left, fence, nfz), -1
        )

    def _observe_tail(self) -> Tensor:
        """Perception part of the observation: pooled coverage and top-K detection features.

        All zeros for a drone just reset (nothing seen, found or detected yet).
        """
        cover = pool_coverage(self.seen, self._cells, self.task.observation.obs_coverage_cells)
        dets = detection_features(
            self.det_boxes, self.det_visible, self.found, self.world.target_class,
            self.task.observation.top_k_detections, self.perception.image_size,
        )  # fmt: skip
        return torch.cat((cover, dets), -1)

    def _lead_approach(self, pos: Tensor) -> Tensor:
        """The ``lead_approach`` term: metres gained on identifying the nearest remembered lead.

        A lead's distance is its 3D distance beyond its class's recognition range (0 within it);
        the nearest is the one of smallest such distance (ties: lower index). Updates
        ``lead_near_idx`` / ``lead_near_dist``.
        """
        rel = self.lead_pos - pos.unsqueeze(2)
        d = (
            rel[..., 0] * rel[..., 0] + rel[..., 1] * rel[..., 1] + rel[..., 2] * rel[..., 2]
        ).sqrt()
        beyond = (d - self._found_range[self.world.target_class][:, None]).clamp(min=0.0)
        beyond = torch.where(self.detected & ~self.found, beyond, torch.inf)
        best, idx = beyond.min(-1)
        has = torch.isfinite(best)
        idx = torch.where(has, idx, -1)
        dist = torch.where(has, best, 0.0)
        term = lead_approach_term(self.lead_near_dist, dist, has & (idx == self.lead_near_idx))
        self.lead_near_idx, self.lead_near_dist = idx, dist
        return term

    def _observe_leads(self, head: Tensor) -> Tensor:
        """Remembered leads ``(W, D, top_k_leads * LEAD_FEATURES)`` (see :func:`lead_features`).

        They move with the drone, so they are recomputed every step, in the heading of ``head``
        (its sin/cos yaw features).
        """
        return lead_features(
            self.vehicle.state.pos_enu_m, head[..., 6], head[..., 7], self.lead_pos,
            self.detected & ~self.found, self.world.target_class,
            self.task.observation.top_k_leads,
        )  # fmt: skip

    def _assemble(self, head: Tensor, tail: Tensor) -> Tensor | dict[str, Tensor]:
        state = self._flat(torch.cat((head, tail, self._observe_leads(head)), -1))
        if self.image is None:
            return state
        return {"state": state, "image": self._flat(self.image)}

    def _nearest_nfz(self, pos: Tensor) -> Tensor:
        """Vector to the nearest point of the nearest no-fly zone, normalized, ``(W, D, 2)``."""
        w = self.world
        if w.nfz_valid.shape[1] == 0:
            return pos.new_zeros(*pos.shape[:2], 2)
        p = pos[..., None, :2]
        q = torch.maximum(torch.minimum(p, w.nfz_max_m[:, None]), w.nfz_min_m[:, None])
        delta = q - p
        d = torch.linalg.vector_norm(delta, dim=-1)
        d = torch.where(w.nfz_valid[:, None], d, float("inf"))
        idx = d.argmin(-1, keepdim=True)
        best = torch.gather(delta, 2, idx.unsqueeze(-1).expand(*idx.shape, 2)).squeeze(2)
        any_valid = w.nfz_valid.any(-1)[:, None, None]
        return torch.where(any_valid, best / self._area_half.max(), 0.0)

    def _collisions(self, pos: Tensor) -> Tensor:
        """Crash flags ``(W, D)``: ground, building/obstacle boxes, other drones of the world."""
        r = self.task.drone_radius_m
        w = self.world
        ground = (pos[..., 2] <= r) | self.vehicle.state.ground_contact
        p = pos[..., None, :]  # (W, D, 1, 3)
        lo, hi = w.box_min_m[:, None] - r, w.box_max_m[:, None] + r
        in_box = ((p >= lo) & (p <= hi)).all(-1) & w.box_valid[:, None]
        hit_box = in_box.any(-1)
        if self.drones_per_world > 1 and self._drone_hit_m > 0:
            d2 = ((pos[:, :, None] - pos[:, None]) ** 2).sum(-1)  # (W, D, D)
            eye = torch.eye(self.drones_per_world, dtype=torch.bool, device=self.device)
            hit_drone = ((d2 < self._drone_hit_m**2) & ~eye).any(-1)
        else:
            hit_drone = torch.zeros_like(hit_box)
        return ground | hit_box | hit_drone

    def _breach(self, pos: Tensor) -> Tensor:
        w = self.world
        gmin, gmax = w.geofence_min_m[:, None], w.geofence_max_m[:, None]
        outside = (pos[..., :2] < gmin[..., :2]) | (pos[..., :2] > gmax[..., :2])
        return outside.any(-1) | (pos[..., 2] > gmax[..., 2])

    # ------------------------------------------------------------------ contract
    def reset(self, seed: int | None = None) -> Tensor | dict[str, Tensor]:
        """Reset every drone and the worlds' moving targets; return observations.

        Episode counters are staggered unless ``stagger=False``. With ``seed``, the spawn and
        dynamics-noise streams restart from it, so the same seed gives the same rollout.
        """
        if seed is not None:
            self.gen.manual_seed(seed)
            self.vehicle.generator.manual_seed(seed + 1)
        pos, yaw, path_s = self._targets_at_start
        self.world.target_pos_enu_m.copy_(pos)
        self.world.target_yaw_rad.copy_(yaw)
        self.world.target_path_s_m.copy_(path_s)
        everyone = torch.ones(self._shape, dtype=torch.bool, device=self.device)
        self._reset_drones(everyone)
        if self.cfg.stagger:
            self.step_count = torch.randint(
                0, self.max_episode_steps, self._shape, generator=self.gen, device=self.device
            )
        self.global_step = 0
        self.seen |= self._perceive()
        return self._observe()

    def filter_action(self, action: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The safety filter on a clean action ``(W, D, 4)`` at the current state.

        Returns the action the vehicle gets and the ``(W, D)`` interventions per kind. :meth:`step`
        applies exactly this; a caller that must send the command before stepping (an external
        vehicle such as PX4) gets the same result by calling it at the same state.
        """
        if not self.task.safety.enabled:
            z = torch.zeros
            return action, {
                k: z(self._shape, dtype=torch.bool, device=self.device) for k in INTERVENTION_KINDS
            }
        w = self.world
        return self._safety_fn(
            action, self.vehicle.state.pos_enu_m, w.geofence_min_m, w.geofence_max_m,
            self.keep_out, self.task.safety, self.limits, self.task.min_altitude_m,
        )  # fmt: skip

    def _step_cpu(self, action: Tensor) -> tuple[Any, Tensor, Tensor, Tensor, dict[str, Any]]:
        """:meth:`step` on CPU as numba kernels (``EnvConfig.cpu_kernels``), same results.

        :func:`~isr_training.cpu_kernels.filter_actions` (sanitize, scale, safety filter), the
        vehicle model's step, the target motion, the perception (the ground-truth detector's
        :func:`~isr_sim_bridge.cpu_kernels.visible_targets` without a camera, else the
        perception backend), :func:`~isr_training.cpu_kernels.task_step` (coverage, found
        targets, crashes, rewards, episode sums and statistics, done flags, observation) and, when
        drones finished, their vehicle reset and :func:`~isr_training.cpu_kernels.task_reset`.
        """
        if self._obs_tail is None:
            self._obs_tail = self._observe_tail()
        w = self.world
        shape = self._shape
        n = self.num_envs
        a = as_numpy
        sc, lim = self.task.safety, self.limits
        filtered = torch.empty(*shape, 4)
        flags = torch.empty(4, *shape, dtype=torch.bool)
        bad = torch.empty(shape, dtype=torch.bool)
        head = self._head_args  # the world's constant arrays (NumPy views) and scalars
        v = Tensor.numpy  # the task state updated in place: a view even when strided
        with threads_for(n, 2048):
            cpu_kernels.filter_actions(
                a(action), a(self.vehicle.state.pos_enu_m), head[5], head[6], *self._keep_out_np,
                bool(sc.enabled), float(sc.horizon_s), float(sc.geofence_margin_m),
                float(sc.altitude_margin_m), float(self.task.min_altitude_m),
                float(lim.max_velocity_m_s), float(lim.max_vertical_velocity_m_s),
                math.radians(lim.max_yaw_rate_deg_s), bool(lim.clip_horizontal_norm), 2,
                filtered.numpy(), flags.numpy(), bad.numpy(),
            )  # fmt: skip
        self.nonfinite_action_count += bad.sum()
        interventions = dict(zip(INTERVENTION_KINDS, flags.unbind(0), strict=True))
        st = self.vehicle.step(filtered)
        advance_targets(w, self.task.control_dt_s, cpu_kernel=self._targets_numba)
        self.global_step += 1
        rendered = self.global_step % self.task.perception_interval == 0
        if rendered:
            # fresh tensors: callers may keep the previous step's detections
            if self._gt_fused:
                self.det_boxes = torch.empty_like(self.det_boxes)
                self.det_visible = torch.empty_like(self.det_visible)
                self.perception.detect_into(
                    st.pos_enu_m, st.quat_wxyz, self.det_boxes, self.det_visible
                )
            else:
                out = self.perception(w, st.pos_enu_m, st.quat_wxyz)
                self.det_boxes = out.boxes_xyxy_px.contiguous()
                self.det_visible = (out.visible & w.target_valid[:, None]).contiguous()
                if out.image is not None and self.image is not None:
                    self.image = out.image

        oc = self.task.observation
        obs = torch.empty(*shape, self.obs_dim)
        final_obs = torch.empty(*shape, self.obs_dim)  # the same values; the resets change obs
        reward = torch.empty(shape)
        terms = torch.empty(len(REWARD_TERMS), *shape)
        done_flags = torch.empty(3, *shape, dtype=torch.bool)
        episode = torch.empty(len(cpu_kernels.EPISODE_STATS) + len(REWARD_TERMS), *shape)
        with threads_for(n, 1024):
            cpu_kernels.task_step(
                rendered, a(st.pos_enu_m), a(st.vel_enu_m_s), a(st.yaw_rad), a(st.quat_wxyz),
                a(st.ground_contact), filtered.numpy(), v(self.prev_action), flags.numpy(),
                a(self.det_boxes), v(self.det_visible), a(w.target_pos_enu_m),
                *self._task_np, head[5], head[6], head[7], head[8], head[9],
                *self._coverage_np, float(self._max_range_m), v(self.seen),
                v(self.found), float(self.task.drone_radius_m), self._drone_hit_m,
                *self.task.altitude_band_m,
                self._reward_weights, bool(self.task.terminate_on_geofence),
                int(self.max_episode_steps), float(self.task.control_dt_s), v(self.step_count),
                v(self.ep_return), v(self._ep_terms_all), v(self.ep_collisions),
                v(self.ep_breaches), v(self.ep_interventions), v(self.ep_first_detection),
                *head[1:5], self._cells, oc.obs_coverage_cells, oc.top_k_detections,
                len(TARGET_CLASSES), *self.perception.image_size, v(self._obs_tail),
                v(self.detected), v(self.lead_pos), oc.top_k_leads, LEAD_SCALE_M,
                v(self.lead_near_idx), v(self.lead_near_dist),
                obs.numpy(), final_obs.numpy(), reward.numpy(), terms.numpy(),
                done_flags.numpy(), episode.numpy(),
            )  # fmt: skip
        terminated, truncated, done = done_flags.unbind(0)
        if bool(done.any()):
            self._spawn(done)
            st = self.vehicle.state
            cpu_kernels.task_reset(
                done.numpy(), a(st.pos_enu_m), a(st.vel_enu_m_s), a(st.yaw_rad),
                v(self.step_count), *head, v(self.found), v(self.seen), v(self.prev_action),
                v(self.det_visible), v(self.detected), v(self.lead_near_idx), v(self.ep_return),
                v(self._ep_terms_all),
                v(self.ep_collisions), v(self.ep_breaches), v(self.ep_interventions),
                v(self.ep_first_detection), v(self._obs_tail), obs.numpy(),
            )  # fmt: skip
        final_obs, obs = final_obs.view(n, -1), obs.view(n, -1)
        if self.image is not None:
            final_obs = {"state": final_obs, "image": self._flat(self.image)}
            obs = {"state": obs, "image": final_obs["image"]}
        names = (*cpu_kernels.EPISODE_STATS, *(f"r/{k}" for k in REWARD_TERMS))
        info = {
            "final_obs": final_obs,
            "done": done.view(n),
            "episode": dict(zip(names, episode.view(len(names), n).unbind(0), strict=True)),
            "reward_terms": dict(zip(REWARD_TERMS, terms.view(-1, n).unbind(0), strict=True)),
            "interventions": {k: v.reshape(n) for k, v in interventions.items()},
            "rendered": rendered,
            "nonfinite_actions": self.nonfinite_action_count,
            "nonfinite_action": bad.view(n),
        }
        return obs, reward.view(n), terminated.reshape(n), truncated.reshape(n), info

    @functools.cached_property
    def _head_args(self) -> tuple:
        """Arguments of the observation-head kernels after the state.

        ``(max_steps, area_centre, area_half, alt_scale, max_velocity, geofence_min,
        geofence_max, nfz_min, nfz_max, nfz_valid)``, the world's as NumPy views (made once: the
        world's geometry tensors are never replaced).
        """
        w = self.world
        a = as_numpy
        return (
            int(self.max_episode_steps), a(self._area_centre), a(self._area_half),
            float(self._alt_scale), float(self.limits.max_velocity_m_s), a(w.geofence_min_m),
            a(w.geofence_max_m), a(w.nfz_min_m), a(w.nfz_max_m), a(w.nfz_valid),
        )  # fmt: skip

    @functools.cached_property
    def _keep_out_np(self) -> tuple:
        """The safety filter's keep-out rectangles as NumPy views (min, max, top, nfz, valid)."""
        ko = self.keep_out
        return tuple(as_numpy(t) for t in (ko.min_xy, ko.max_xy, ko.top_z, ko.is_nfz, ko.valid))

    @functools.cached_property
    def _task_np(self) -> tuple:
        """The constant world arrays of :func:`~isr_training.cpu_kernels.task_step`.

        Target class, target count, found ranges, occluder boxes, as NumPy views.
        """
        w = self.world
        return tuple(
            as_numpy(t)
            for t in (w.target_class, self.num_targets, self._found_range2, w.box_min_m,
                      w.box_max_m, w.box_valid)
        )  # fmt: skip

    @functools.cached_property
    def _coverage_np(self) -> tuple:
        """The camera's corner rays and the coverage cell centres as NumPy views."""
        return as_numpy(self._rays_body), as_numpy(self._centres)

    def step(self, action: Tensor) -> tuple[Any, Tensor, Tensor, Tensor, dict[str, Any]]:
        """Advance every drone one control step (see the module docstring)."""
        if tuple(action.shape) != (self.num_envs, 4):
            raise ValueError(
                f"action has shape {tuple(action.shape)}, expected ({self.num_envs}, 4)"
            )
        action = action.to(self.device, torch.float32).view(*self._shape, 4)
        if self.cpu_kernels:
            return self._step_cpu(action)
        bad = ~torch.isfinite(action).all(-1)
        self.nonfinite_action_count += bad.sum()
        action = torch.where(bad.unsqueeze(-1), 0.0, action).clamp(-1.0, 1.0)

        w = self.world
        action, interventions = self.filter_action(action)
        st = self.vehicle.step(action)
        advance_targets(w, self.task.control_dt_s, cpu_kernel=self._targets_numba)
        self.step_count += 1
        self.global_step += 1

        rendered = self.global_step % self.task.perception_interval == 0
        if rendered:
            seen_now = self._perceive()
            seen_new = seen_now & ~self.seen
            self.seen |= seen_now
            dist2 = ((w.target_pos_enu_m[:, None] - st.pos_enu_m[:, :, None]) ** 2).sum(-1)
            close = dist2 <= self._found_range2[w.target_class][:, None]  # (W, D, T)
            found_new = self.det_visible & close & ~self.found
            self.found |= found_new
            self.detected |= self.det_visible
            self.lead_pos = torch.where(
                self.det_visible.unsqueeze(-1), w.target_pos_enu_m[:, None], self.lead_pos
            )
        else:
            seen_new = torch.zeros_like(self.seen)
            found_new = torch.zeros_like(self.found)

        pos = st.pos_enu_m
        approach = self._lead_approach(pos)
        crashed = self._collisions_fn(pos)
        breached = self._breach(pos)
        terms = {
            "new_target": new_target_term(found_new),
            "coverage": coverage_term(seen_new),
            "time": time_term(crashed),
            "collision": collision_term(crashed),
            "geofence": geofence_term(breached),
            "altitude_band": altitude_band_term(pos[..., 2], self.task.altitude_band_m),
            "action_smoothness": action_smoothness_term(action, self.prev_action),
            "lead_approach": approach,
        }
        reward = weighted_sum(terms, self.task.reward)
        self.prev_action = action

        any_intervention = torch.zeros_like(bad)
        for v in interventions.values():
            any_intervention |= v
        self.ep_return += reward
        self._ep_terms_all += torch.stack([terms[name] for name in REWARD_TERMS])
        self.ep_collisions += crashed.float()
        self.ep_breaches += breached.float()
        self.ep_interventions += any_intervention.float()
        first = found_new.any(-1) & torch.isnan(self.ep_first_detection)
        t_now = self.step_count.float() * self.task.control_dt_s
        self.ep_first_detection = torch.where(first, t_now, self.ep_first_detection)

        terminated = crashed | (
            breached if self.task.terminate_on_geofence else torch.zeros_like(crashed)
        )
        truncated = (self.step_count >= self.max_episode_steps) & ~terminated
        done = terminated | truncated

        stats = (
            self.ep_return.clone(),
            self.step_count.float(),
            self.found.float().sum(-1) / self.num_targets[:, None],
            self.seen.float().mean(-1),
            self.ep_collisions.clone(),
            self.ep_breaches.clone(),
            self.ep_interventions.clone(),
            self.ep_first_detection.clone(),
            self.detected.float().sum(-1) / self.num_targets[:, None],
        )  # in the order of cpu_kernels.EPISODE_STATS (the names of both paths)
        episode = {
            **dict(zip(cpu_kernels.EPISODE_STATS, stats, strict=True)),
            **dict(zip((f"r/{k}" for k in REWARD_TERMS), self._ep_terms_all.clone(), strict=True)),
        }
        if rendered or self._obs_tail is None:
            obs = self._observe()
        else:  # no perception this step: seen, found and detections (the tail) are unchanged
            obs = self._assemble(self._observe_head(), self._obs_tail)
        # The reset below changes no tensor of ``obs`` in place (the state vector is rebuilt by
        # _assemble and the image is not re-rendered), so the last observation needs no copy.
        final_obs = obs
        if bool(done.any()):
            self._reset_drones(done)
            # Only the kinematic part changes for the others; the perception part of a reset
            # drone is all zeros (see _observe_tail), so it is not recomputed.
            self._obs_tail = torch.where(done.unsqueeze(-1), 0.0, self._obs_tail)
            obs = self._assemble(self._observe_head(), self._obs_tail)
        info = {
            "final_obs": final_obs,
            "done": self._flat(done),
            "episode": {k: self._flat(v) for k, v in episode.items()},
            "reward_terms": {k: self._flat(v) for k, v in terms.items()},
            "interventions": {k: self._flat(v) for k, v in interventions.items()},
            "rendered": rendered,
            "nonfinite_actions": self.nonfinite_action_count,
            "nonfinite_action": self._flat(bad),
        }
        return obs, self._flat(reward), self._flat(terminated), self._flat(truncated), info


def make_perception(
    cfg: Any,
    world: WorldBatch,
    device: torch.device | str = "cpu",
    *,
    weights: str | Path | None = None,
    drones_per_world: int | None = None,
    render_images: bool | None = None,
    conf: float | None = None,
    match_iou: float | None = None,
) -> GroundTruthPerception | YoloPerception:
    """The perception backend a config asks for.

    Two ways to call it:

    - ``make_perception(env_config, world, device)``: everything from an
      :class:`~isr_training.env.EnvConfig` (``perception``, ``detector_weights``,
      ``detector_conf``, ``detector_match_iou``, camera and detection fields);
    - ``make_perception("gt" | "yolo", world, device, weights=PATH, drones_per_world=D, ...)``:
      a kind name, the other settings from the defaults of ``EnvConfig``.

    Keyword arguments override the config in both forms (``weights`` is the YOLO weights file;
    ``render_images`` whether the returned output carries the image). ``"yolo"`` without weights,
    or with a file that does not exist, raises :class:`~isr_direct_dynamics.config.ConfigError`
    naming ``detector_weights`` and the path.
    """
    if isinstance(cfg, str):
        check(cfg in ("gt", "yolo"), "perception", f"must be 'gt' or 'yolo', got {cfg!r}")
        cfg = EnvConfig(perception=cfg, num_worlds=world.num_worlds)  # type: ignore[arg-type]
    d = drones_per_world if drones_per_world is not None else cfg.drones_per_world
    camera = CameraConfig(
        resolution=cfg.camera_resolution,
        horizontal_fov_deg=cfg.camera_fov_deg,
        mount_pitch_deg=cfg.camera_pitch_deg,
    )
    detection = DetectionConfig(min_box_size_px=cfg.detection_min_box_px)
    images = cfg.camera if render_images is None else render_images
    if cfg.perception == "gt":
        return GroundTruthPerception(world, d, camera, images, device, detection)
    if cfg.perception == "yolo":
        path = weights if weights is not None else cfg.detector_weights
        check(path is not None and str(path) != "", "detector_weights",
              "perception 'yolo' needs the path of trained YOLO weights")  # fmt: skip
        check(Path(path).is_file(), "detector_weights", f"file not found: {path}")
        return YoloPerception(
            world, d, camera, path, device, detection,
            conf=cfg.detector_conf if conf is None else conf,
            match_iou=cfg.detector_match_iou if match_iou is None else match_iou,
            render_images=images,
        )  # fmt: skip
    raise ValueError(f"unknown perception {cfg.perception!r} (expected 'gt' or 'yolo')")
