"""Seeded, batched domain randomization of images, ground textures, targets and camera intrinsics.

Every function draws from the ``torch.Generator`` it is given and nothing else, so the same
generator state gives the same result. Random numbers are drawn on the generator's device and
moved to the data's device (pass a generator on the data's device to avoid the copy for large
draws such as per-pixel noise). Functions that change a :class:`WorldBatch` take an optional
``world_ids`` (only those worlds change, for masked resets) and an optional ``base`` (the
unrandomized batch the values are drawn around, so that repeated randomization at every reset does
not drift and targets dropped at one reset can come back at the next).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from isr_sim_bridge.world import FIELD, ROAD, WATER, advance_targets
from isr_sim_bridge.world_batch import TARGET_CLASSES, WorldBatch

VEHICLE, PERSON, STRUCTURE = (TARGET_CLASSES.index(c) for c in ("vehicle", "person", "structure"))
_TARGET_FIELDS = tuple(
    f.name for f in dataclasses.fields(WorldBatch) if f.name.startswith("target_")
)


def _uniform(
    shape: tuple[int, ...], lo: float, hi: float, gen: torch.Generator, device: torch.device
) -> Tensor:
    """``U(lo, hi)`` of ``shape`` drawn with ``gen`` (on its device), returned on ``device``."""
    u = torch.rand(shape, generator=gen, device=gen.device)
    return (lo + (hi - lo) * u).to(device)


def _world_mask(batch: WorldBatch, world_ids: Tensor | list[int] | None) -> Tensor:
    """(W,) bool: True for the worlds to randomize."""
    mask = torch.zeros(batch.num_worlds, dtype=torch.bool, device=batch.device)
    if world_ids is None:
        mask[:] = True
    else:
        mask[torch.as_tensor(world_ids, dtype=torch.long, device=batch.device)] = True
    return mask


# ------------------------------------------------------------------------------------- images


@dataclass
class ImageAugParams:
    """Per-image photometric parameters (sampled by :func:`sample_image_params`)."""

    brightness_gain: Tensor  # (N,) float32
    """Multiplier of every pixel, in ``[1 - brightness, 1 + brightness]``."""
    contrast_gain: Tensor  # (N,) float32
    """Scale of the deviation from the image's mean grey, in ``[1 - contrast, 1 + contrast]``."""
    channel_gain: Tensor  # (N, 3) float32
    """Per-channel (R, G, B) multiplier, in ``[1 - color_jitter, 1 + color_jitter]``."""
    noise_std: Tensor  # (N,) float32
    """Std of additive Gaussian pixel noise, fraction of full scale, in ``[0, noise_std]``."""


def sample_image_params(
    n: int,
    gen: torch.Generator,
    brightness: float = 0.2,
    contrast: float = 0.2,
    color_jitter: float = 0.05,
    noise_std: float = 0.02,
    device: torch.device | str | None = None,
) -> ImageAugParams:
    """Draw :class:`ImageAugParams` for ``n`` images (uniform in the documented ranges)."""
    dev = torch.device(device) if device is not None else gen.device
    return ImageAugParams(
        brightness_gain=_uniform((n,), 1.0 - brightness, 1.0 + brightness, gen, dev),
        contrast_gain=_uniform((n,), 1.0 - contrast, 1.0 + contrast, gen, dev),
        channel_gain=_uniform((n, 3), 1.0 - color_jitter, 1.0 + color_jitter, gen, dev),
        noise_std=_uniform((n,), 0.0, noise_std, gen, dev),
    )


def apply_image_params(
    images: Tensor, params: ImageAugParams, gen: torch.Generator | None = None
) -> Tensor:
    """Apply ``params`` to ``images (N, H, W, 3) uint8``; returns a new uint8 tensor.

    Order: contrast about the image's mean grey, then brightness and channel gains, then noise
    (drawn with ``gen``; skipped when ``gen`` is None or every ``noise_std`` is 0), round, clamp.
    """
    x = images.float()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * params.contrast_gain.view(-1, 1, 1, 1) + mean
    x = x * (params.brightness_gain.view(-1, 1, 1, 1) * params.channel_gain.view(-1, 1, 1, 3))
    if gen is not None and bool((params.noise_std > 0).any()):
        noise = torch.randn(images.shape, generator=gen, device=gen.device).to(images.device)
        x = x + noise * (255.0 * params.noise_std.view(-1, 1, 1, 1))
    return x.round_().clamp_(0.0, 255.0).to(torch.uint8)


def randomize_images(
    images: Tensor,
    gen: torch.Generator,
    brightness: float = 0.2,
    contrast: float = 0.2,
    color_jitter: float = 0.05,
    noise_std: float = 0.02,
) -> Tensor:
    """Photometric randomization of camera images ``(N, H, W, 3) uint8`` -> new uint8 tensor.

    Changes per image: contrast (gain about the mean grey), brightness (gain), colour balance
    (per-channel gain) and sensor noise (Gaussian, std up to ``noise_std`` of full scale), with
    the ranges of :func:`sample_image_params`. Geometry is untouched. Same generator state, same
    output.
    """
    params = sample_image_params(
        images.shape[0], gen, brightness, contrast, color_jitter, noise_std, device=images.device
    )
    return apply_image_params(images, params, gen)


# ---------------------------------------------------------------------------- ground texture


def randomize_ground_texture(
    batch: WorldBatch,
    gen: torch.Generator,
    noise: float = 0.03,
    brightness: float = 0.1,
    class_color_jitter: float = 0.08,
    world_ids: Tensor | list[int] | None = None,
    base_rgb: Tensor | None = None,
    chunk_worlds: int = 8,
) -> None:
    """Randomize ``batch.ground_rgb`` in place (``ground_class`` is left unchanged).

    For every selected world: one brightness gain in ``[1 - brightness, 1 + brightness]``, one
    per-channel gain per ground class in ``[1 - class_color_jitter, 1 + class_color_jitter]``
    (greener or browner fields, darker forest, ...), and per-texel grey noise uniform in
    ``[-noise, noise]`` of full scale. Values are computed from ``base_rgb`` (default: the current
    texture) so a stored original keeps repeated calls from drifting. Processed ``chunk_worlds``
    worlds at a time to bound memory.
    """
    mask = _world_mask(batch, world_ids)
    ids = torch.nonzero(mask).flatten()
    n_cls = 4
    src = batch.ground_rgb if base_rgb is None else base_rgb
    dev = batch.device
    gains = _uniform((len(ids), 1, 1), 1.0 - brightness, 1.0 + brightness, gen, dev) * _uniform(
        (len(ids), n_cls, 3), 1.0 - class_color_jitter, 1.0 + class_color_jitter, gen, dev
    )  # (K, 4, 3)
    _, hy, hx, _ = batch.ground_rgb.shape
    for start in range(0, len(ids), chunk_worlds):
        sel = ids[start : start + chunk_worlds]
        g = gains[start : start + chunk_worlds]
        cls = batch.ground_class[sel].long()  # (k, Hy, Hx)
        texel_gain = g[torch.arange(len(sel), device=dev).view(-1, 1, 1), cls]  # (k, Hy, Hx, 3)
        x = src[sel].float() * texel_gain
        if noise > 0:
            nz = _uniform((len(sel), hy, hx, 1), -noise * 255.0, noise * 255.0, gen, dev)
            x = x + nz
        batch.ground_rgb[sel] = x.round_().clamp_(0.0, 255.0).to(torch.uint8)


# ------------------------------------------------------------------------------------ targets


def _aabb_half(size_m: Tensor, yaw: Tensor) -> Tensor:
    """Half extents (x, y) of the axis-aligned bounds of oriented footprints: (..., 2)."""
    c, s = yaw.cos().abs(), yaw.sin().abs()
    return 0.5 * torch.stack(
        [size_m[..., 0] * c + size_m[..., 1] * s, size_m[..., 0] * s + size_m[..., 1] * c], dim=-1
    )


def _ground_class_at(batch: WorldBatch, xy: Tensor) -> Tensor:
    """Ground class (W, T, K) at points ``xy (W, T, K, 2)``."""
    _, hy, hx = batch.ground_class.shape
    ix = ((xy[..., 0] - batch.x_min_m) / batch.texture_res_m).floor().long().clamp(0, hx - 1)
    iy = ((xy[..., 1] - batch.y_min_m) / batch.texture_res_m).floor().long().clamp(0, hy - 1)
    w = torch.arange(batch.num_worlds, device=xy.device).view(-1, *([1] * (xy.dim() - 2)))
    return batch.ground_class[w, iy, ix].long()


def randomize_targets(
    batch: WorldBatch,
    gen: torch.Generator,
    color_jitter: float = 0.1,
    keep_prob: float = 1.0,
    min_keep: int = 1,
    position_jitter_m: float = 0.0,
    yaw_jitter_rad: float = 0.0,
    randomize_path_phase: bool = True,
    world_ids: Tensor | list[int] | None = None,
    base: WorldBatch | None = None,
) -> None:
    """Randomize the targets of the selected worlds in place, drawn around ``base``.

    Changes (``base`` defaults to ``batch`` as it is before the call):

    - colours: per-target, per-channel gain in ``[1 - color_jitter, 1 + color_jitter]`` of the base
      colour;
    - count: each base target is kept (``target_valid``) with probability ``keep_prob``, but at
      least ``min_keep`` per world (or all of them, when fewer);
    - placement of static targets: a shift uniform in the disc of radius ``position_jitter_m``
      and, for persons and structures, a yaw change in ``[-yaw_jitter_rad, yaw_jitter_rad]``; a
      move is kept only when it satisfies the generator's constraints (vehicles on a road, persons
      off water, structures on fields, inside the geofence, no overlap with a box or another
      static target), else the target keeps its base pose;
    - moving targets: with ``randomize_path_phase`` a uniform new position along their
      back-and-forth path (``target_path_s_m``, pose re-derived with :func:`advance_targets`).

    Classes, sizes, speeds and paths never change.
    """
    if base is None:  # snapshot of the target fields (the texture is shared, not copied)
        base = dataclasses.replace(batch, **{f: getattr(batch, f).clone() for f in _TARGET_FIELDS})
    dev = batch.device
    n_w, n_t = batch.target_valid.shape
    sel = _world_mask(batch, world_ids)  # (W,)
    valid0 = base.target_valid

    # Colours.
    gain = _uniform((n_w, n_t, 3), 1.0 - color_jitter, 1.0 + color_jitter, gen, dev)
    rgb = (base.target_rgb.float() * gain).round().clamp(0.0, 255.0).to(torch.uint8)

    # Count: keep with keep_prob, and the min_keep valid targets of smallest draw in any case.
    u = _uniform((n_w, n_t), 0.0, 1.0, gen, dev)
    u_valid = torch.where(valid0, u, torch.full_like(u, 2.0))
    rank = torch.argsort(torch.argsort(u_valid, dim=1), dim=1)
    keep = valid0 & ((u < keep_prob) | (rank < min_keep))

    # Static placement jitter with constraint checks.
    static = valid0 & (base.target_speed_m_s <= 0)
    r = position_jitter_m * _uniform((n_w, n_t), 0.0, 1.0, gen, dev).sqrt()
    phi = _uniform((n_w, n_t), -math.pi, math.pi, gen, dev)
    cand_xy = base.target_pos_enu_m[..., :2] + torch.stack([r * phi.cos(), r * phi.sin()], -1)
    dyaw = _uniform((n_w, n_t), -yaw_jitter_rad, yaw_jitter_rad, gen, dev)
    turnable = base.target_class != VEHICLE
    turned = torch.remainder(base.target_yaw_rad + dyaw + math.pi, 2.0 * math.pi) - math.pi
    cand_yaw = torch.where(turnable, turned, base.target_yaw_rad)
    half = _aabb_half(base.target_size_m, cand_yaw)  # (W, T, 2)
    base_half = _aabb_half(base.target_size_m, base.target_yaw_rad)

    lo, hi = cand_xy - half, cand_xy + half
    ok = (lo >= base.geofence_min_m[:, None, :2]).all(-1) & (
        hi <= base.geofence_max_m[:, None, :2]
    ).all(-1)
    corners = torch.stack(
        [
            cand_xy,
            lo,
            hi,
            torch.stack([lo[..., 0], hi[..., 1]], -1),
            torch.stack([hi[..., 0], lo[..., 1]], -1),
        ],
        dim=2,
    )  # (W, T, 5, 2)
    gcls = _ground_class_at(base, corners)  # (W, T, 5)
    cls = base.target_class
    ok &= torch.where(cls == VEHICLE, gcls[..., 0] == ROAD, torch.ones_like(ok))
    ok &= torch.where(
        cls == PERSON, ((gcls != WATER) & (gcls != ROAD)).all(-1), torch.ones_like(ok)
    )
    ok &= torch.where(cls == STRUCTURE, (gcls == FIELD).all(-1), torch.ones_like(ok))
    # Boxes: (W, T, B) overlap of the target's bounds with valid boxes.
    b_lo, b_hi = base.box_min_m[:, None, :, :2], base.box_max_m[:, None, :, :2]
    hit_box = ((lo[:, :, None] < b_hi) & (hi[:, :, None] > b_lo)).all(-1) & base.box_valid[
        :, None, :
    ]
    ok &= ~hit_box.any(-1)
    # Other static targets, at their base and at their candidate pose: (W, T, T).
    other = static[:, None, :] & ~torch.eye(n_t, dtype=torch.bool, device=dev)[None]

    def overlap(c2: Tensor, h2: Tensor) -> Tensor:
        d = (cand_xy[:, :, None] - c2[:, None, :]).abs()
        return (d < half[:, :, None] + h2[:, None, :]).all(-1) & other

    ok &= ~(overlap(base.target_pos_enu_m[..., :2], base_half).any(-1))
    ok &= ~(overlap(cand_xy, half).any(-1))
    move = static & ok & (position_jitter_m > 0 or yaw_jitter_rad > 0)
    new_pos = base.target_pos_enu_m.clone()
    new_pos[..., :2] = torch.where(move.unsqueeze(-1), cand_xy, base.target_pos_enu_m[..., :2])
    new_yaw = torch.where(move, cand_yaw, base.target_yaw_rad)

    # Moving targets: new phase along the back-and-forth path.
    new_s = base.target_path_s_m.clone()
    if randomize_path_phase:
        seg = base.target_path_xy_m[:, :, 1:] - base.target_path_xy_m[:, :, :-1]
        seg_ok = torch.arange(seg.shape[2], device=dev) < (base.target_path_len - 1).unsqueeze(-1)
        total = torch.where(
            seg_ok, torch.linalg.vector_norm(seg, dim=-1), torch.zeros((), device=dev)
        ).sum(-1)
        moving = valid0 & (base.target_speed_m_s > 0) & (total > 0)
        phase = _uniform((n_w, n_t), 0.0, 1.0, gen, dev) * 2.0 * total
        new_s = torch.where(moving, phase, new_s)

    s3 = sel.view(-1, 1, 1)
    s2 = sel.view(-1, 1)
    batch.target_rgb.copy_(torch.where(s3, rgb, batch.target_rgb))
    batch.target_valid.copy_(torch.where(s2, keep, batch.target_valid))
    batch.target_pos_enu_m.copy_(torch.where(s3, new_pos, batch.target_pos_enu_m))
    batch.target_yaw_rad.copy_(torch.where(s2, new_yaw, batch.target_yaw_rad))
    batch.target_path_s_m.copy_(torch.where(s2, new_s, batch.target_path_s_m))
    pos, yaw = batch.target_pos_enu_m.clone(), batch.target_yaw_rad.clone()
    advance_targets(batch, 0.0)  # moving poses from the (new) path state
    batch.target_pos_enu_m.copy_(torch.where(s3, batch.target_pos_enu_m, pos))
    batch.target_yaw_rad.copy_(torch.where(s2, batch.target_yaw_rad, yaw))


# --------------------------------------------------------------------------------- intrinsics


@dataclass
class CameraIntrinsics:
    """Sampled pinhole intrinsics of ``n`` cameras (square pixels, no distortion)."""

    fov_deg: Tensor  # (n,) float32
    """Horizontal field of view, degrees."""
    principal_offset_px: Tensor  # (n, 2) float32
    """Shift (x, y) of the principal point from the image centre, pixels."""
    fx_px: Tensor  # (n,) float32
    """Focal length along x, pixels: ``(width_px / 2) / tan(fov / 2)``."""
    fy_px: Tensor  # (n,) float32
    """Focal length along y, pixels (= ``fx_px``)."""
    cx_px: Tensor  # (n,) float32
    """Principal point x, pixels: ``width_px / 2 + offset_x`` (the image spans [0, width_px])."""
    cy_px: Tensor  # (n,) float32
    """Principal point y, pixels: ``height_px / 2 + offset_y``."""

    def matrix(self) -> Tensor:
        """Camera matrices ``K`` of shape ``(n, 3, 3)``."""
        k = torch.zeros(self.fx_px.shape[0], 3, 3, device=self.fx_px.device)
        k[:, 0, 0], k[:, 1, 1] = self.fx_px, self.fy_px
        k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = self.cx_px, self.cy_px, 1.0
        return k


def sample_camera_intrinsics(
    base_fov_deg: float,
    n: int,
    gen: torch.Generator,
    fov_noise_deg: float = 0.0,
    principal_point_noise_px: float = 0.0,
    width_px: int = 64,
    height_px: int = 64,
    device: torch.device | str | None = None,
) -> CameraIntrinsics:
    """Draw ``n`` camera intrinsics around a nominal horizontal field of view.

    Changes: the FOV, uniform in ``base_fov_deg +- fov_noise_deg`` (which sets the focal length),
    and the principal point, uniform in ``+- principal_point_noise_px`` on each axis about the
    image centre.
    """
    if not (0.0 < base_fov_deg - fov_noise_deg and base_fov_deg + fov_noise_deg < 180.0):
        raise ValueError(
            f"field of view {base_fov_deg} +- {fov_noise_deg} deg must stay in (0, 180)"
        )
    dev = torch.device(device) if device is not None else gen.device
    fov = _uniform((n,), base_fov_deg - fov_noise_deg, base_fov_deg + fov_noise_deg, gen, dev)
    off = _uniform((n, 2), -principal_point_noise_px, principal_point_noise_px, gen, dev)
    fx = (0.5 * width_px) / torch.tan(torch.deg2rad(fov) * 0.5)
    return CameraIntrinsics(
        fov_deg=fov,
        principal_offset_px=off,
        fx_px=fx,
        fy_px=fx.clone(),
        cx_px=0.5 * width_px + off[:, 0],
        cy_px=0.5 * height_px + off[:, 1],
    )
