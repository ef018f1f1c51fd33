"""Batched tiled camera: every drone of every world rendered in one call (embedded renderer).

This is the embedded stand-in for Isaac Sim's tiled camera (``CameraView``): one
:meth:`TiledCamera.render` call draws the view of all ``W x D`` drones (``W`` worlds, ``D``
drones per world) of a :class:`~isr_sim_bridge.world_batch.WorldBatch`.

Frames and conventions
----------------------
- World ENU, body FLU (REP-103). The camera is rigidly mounted on the body at
  :attr:`CameraConfig.mount_offset_flu_m`, looking forward and pitched down by
  :attr:`CameraConfig.mount_pitch_deg`.
- Camera optical frame as in ROS (REP-103 ``*_optical``): x right, y down, z forward.
- Intrinsics (OpenCV / ROS ``CameraInfo`` convention, integer pixel coordinates at pixel
  centres): ``fx = fy = (width / 2) / tan(hfov / 2)``, ``cx = (width - 1) / 2``,
  ``cy = (height - 1) / 2``; see :meth:`TiledCamera.camera_matrix`. Pixel ``(u, v)`` (column,
  row) looks along the optical-frame ray ``((u - cx) / fx, (v - cy) / fy, 1)``.
- Image-plane boxes (culling rects, detections) use *pixel-edge* coordinates: column ``u``
  spans ``x in [u, u + 1)``, so an OpenCV coordinate ``u`` is ``x = u + 0.5``.
- Output layout: ``rgb`` is ``(W, D, H, W_px, 3)`` uint8 (row-major HWC per drone, like
  ``sensor_msgs/Image`` ``rgb8`` and Isaac's ``get_rgb()``); it is a zero-copy view of the
  contiguous ``rgba`` ``(W, D, H, W_px, 4)`` (alpha 255), so its pixel stride is 4 bytes
  (``.contiguous()`` packs it; ``permute(..., 3, 1, 2)`` for a CNN works on the view). ``depth``
  is ``(W, D, H, W_px)`` float32 metres along the optical axis (REP-118 "z" depth), ``inf`` for
  sky or beyond the far clip.

Frame skipping (the original plan's ``render_interval``)
-------------------------------------------------------
:meth:`TiledCamera.step` counts control steps and renders on every ``render_interval``-th one;
on the other steps it computes nothing and returns the last frame again with
``rendered=False`` (the environment builds its state-only observation then, or reuses the
stale image). :meth:`TiledCamera.render` always renders.

What is drawn
-------------
- Terrain: the plane ``z = 0`` with the world's ground texture, nearest texel of the nearest
  mip level: ``level = floor(log2(sqrt(2) * depth / (fx * texture_res_m)) + mip_bias)``
  clamped to the pyramid, i.e. the level whose texel best matches the pixel footprint
  ``depth / fx`` (levels are 2x2 box filters of the level below with integer rounding,
  :func:`mip_pyramid`). Outside the world area the ground has :attr:`CameraConfig.outside_rgb`
  (per level: outside the level's texels, which may extend up to ``2**level - 1`` texels beyond
  the area's east/north edge).
- Buildings and obstacles: solid axis-aligned boxes; targets: solid yaw-oriented boxes. Each
  face is the box colour times a fixed shade (:data:`FACE_SHADE`, a sun in the south-east), so
  roofs and walls differ. Boxes occlude each other and the ground exactly.
- Sky: a vertical gradient from :attr:`CameraConfig.sky_horizon_rgb` to
  :attr:`CameraConfig.sky_zenith_rgb` over the elevation of the ray (uniform, and ~5% cheaper,
  when the two are equal).

Algorithm (exact geometry, all batched)
---------------------------------------
1. Camera pose of every drone (one batched quaternion -> matrix product).
2. Binning: every box (buildings + targets, ``P = B + T`` per world) is projected into every
   camera (8 corners, edges clipped at the near plane); its screen rectangle marks the
   ``16 x 4``-pixel tiles it may cover. Each (drone, tile, box) triple is a work item.
3. Box pass: for each work item an exact ray/box slab test at the tile's pixel centres; the
   nearest hit per pixel is kept in a tile-major z-buffer and colour buffer (the colour of the
   entry face). Work items are split into *layers* by their rank among the items of the same
   tile, so a layer writes each tile at most once: an in-place depth test without atomics, and
   deterministic (ties keep the earlier box). The layer loop is a Python loop over at most
   ``P`` layers (a data-dependent count: one host sync per frame, free on CPU).
4. Shading pass, one fused per-pixel kernel: ray/ground-plane intersection, depth test against
   the box z-buffer, mip-mapped texture lookup (one gather into an ``int32``-packed RGBA table),
   sky gradient; writes packed RGBA (and depth).

The per-pixel ray directions (camera frame) are precomputed at construction. Compared with the
exact reference (:mod:`isr_sim_bridge.raycast_reference`, float64) the only differences come
from float32 arithmetic (a texel or mip-level boundary can flip for a pixel).

Speed: on CPU (and numba importable, :attr:`CameraConfig.cpu_kernels`) steps 2-4 run as numba
loop nests parallel over drones (:mod:`isr_sim_bridge.cpu_kernels`), bit-identical to the torch
kernels and 2x faster on 2 cores. Otherwise (CUDA), the kernels are plain batched torch
functions. With :attr:`CameraConfig.compile` (by
default for batches of at least :data:`COMPILE_AUTO_MIN_PIXELS` pixels) they are compiled by
``torch.compile`` (inductor: fused C++/OpenMP loops on CPU, Triton on CUDA); the first render then
takes tens of seconds. If compilation fails, the camera warns and runs the same functions
eagerly. On CPU, run with ``OMP_WAIT_POLICY=PASSIVE`` when other processes share the cores: with
libgomp's default busy-waiting every parallel region can stall for a scheduler time slice.

Static vs moving: the boxes of buildings/obstacles, the ground texture and all colours are read
once at construction; target poses and sizes (``target_pos_enu_m``, ``target_yaw_rad``,
``target_size_m``, ``target_valid``) are read from the ``WorldBatch`` at every render, so
targets moved in place (e.g. by :func:`isr_sim_bridge.world.advance_targets`) are drawn where
they are. Build a new camera after replacing the world (or randomising its colours).
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from isr_direct_dynamics.config import ConfigError, check
from isr_direct_dynamics.math3d import quat_to_rotmat
from isr_sim_bridge import cpu_kernels
from isr_sim_bridge.world_batch import WorldBatch

RESOLUTION_PRESETS: dict[str, tuple[int, int]] = {
    "training": (128, 128),
    "evaluation": (320, 240),
    "full": (640, 480),
}
"""Named resolutions ``(width, height)`` of the original plan."""

FACE_SHADE: tuple[float, ...] = (0.86, 0.70, 0.78, 0.62, 1.00, 0.50)
"""Brightness factor of box faces by face index: ``+x`` (east), ``-x``, ``+y`` (north), ``-y``,
``+z`` (roof/top), ``-z`` (bottom), in the box's own frame (targets: length axis = x)."""

TILE_WIDTH_PX: int = cpu_kernels.TILE_W
"""Width of the screen tiles that boxes are binned to (one 16-lane vector of pixels)."""
TILE_HEIGHT_PX: int = cpu_kernels.TILE_H
"""Height of the screen tiles."""

CORNER_SIGNS: tuple[tuple[float, ...], ...] = tuple(
    tuple(1.0 if (i >> k) & 1 else -1.0 for k in range(3)) for i in range(8)
)
"""Corner ``i`` of a box lies at sign ``CORNER_SIGNS[i][k]`` times the half extent along axis
``k`` (``+`` where bit ``k`` of ``i`` is set)."""


def parse_resolution(text: str) -> tuple[int, int]:
    """``(width, height)`` of a preset name (``training``...) or a ``"WxH"`` string (``"80x80"``).

    Raises :class:`ConfigError` for anything else.
    """
    name = str(text).strip().lower()
    if name in RESOLUTION_PRESETS:
        return RESOLUTION_PRESETS[name]
    m = re.fullmatch(r"(\d+)\s*[x*]\s*(\d+)", name)
    if m is None:
        reason = (
            f"unknown resolution {text!r}; use one of {sorted(RESOLUTION_PRESETS)} or "
            "'WIDTHxHEIGHT' such as '80x80'"
        )
        raise ConfigError(f"invalid config field 'resolution': {reason}", "resolution", reason)
    w, h = int(m.group(1)), int(m.group(2))
    check(1 <= w <= 8192 and 1 <= h <= 8192, "resolution", f"{w}x{h} is out of range 1..8192")
    return w, h


@dataclass
class CameraConfig:
    """Configuration of the tiled camera (one per camera model; all drones share it)."""

    resolution: str = "training"
    """Image size: a preset name (``training`` 128x128, ``evaluation`` 320x240, ``full``
    640x480) or ``"WIDTHxHEIGHT"`` (e.g. ``"80x80"``, the plan's phase-3 size)."""
    horizontal_fov_deg: float = 90.0
    """Horizontal field of view, degrees; the vertical one follows from square pixels."""
    mount_pitch_deg: float = 45.0
    """Downward pitch of the optical axis below the body's forward axis, degrees (90 = nadir)."""
    mount_offset_flu_m: tuple[float, float, float] = (0.10, 0.0, -0.05)
    """Position of the optical centre in the body FLU frame, metres."""
    near_clip_m: float = 0.1
    """Surfaces closer than this (along the optical axis) are not drawn, metres."""
    far_clip_m: float = 1000.0
    """Surfaces farther than this (along the optical axis) are not drawn (sky instead), metres."""
    depth: bool = False
    """Also output a depth image (float32 metres along the optical axis, ``inf`` = none)."""
    render_interval: int = 1
    """Render only every Nth control step in :meth:`TiledCamera.step` (1 = every step)."""
    compile: bool | None = None
    """Compile the kernels with ``torch.compile`` (10-20x faster on CPU for big batches, but the
    first render then takes tens of seconds). ``None`` = automatic: compile when one render holds
    at least :data:`COMPILE_AUTO_MIN_PIXELS` pixels (all drones together)."""
    cpu_kernels: bool | None = None
    """On CPU, run the setup and box pass as one numba kernel parallel over drones
    (:func:`isr_sim_bridge.cpu_kernels.render_boxes`, the same float32 arithmetic as the torch
    kernels) instead of torch's binning, sort and layer loop. ``None`` = automatic: on CPU
    whenever numba can be imported; ignored on CUDA."""
    mip_levels: int = 8
    """Maximum number of ground-texture mip levels (1 = no mip-mapping)."""
    mip_bias: float = 0.0
    """Added to the mip level before rounding down (+1 = one level coarser: blurrier ground,
    fewer cache misses, ~10% faster on CPU; -1 = sharper, more aliasing)."""
    sky_horizon_rgb: tuple[int, int, int] = (200, 222, 240)
    """Sky colour at the horizon."""
    sky_zenith_rgb: tuple[int, int, int] = (70, 125, 200)
    """Sky colour straight up."""
    outside_rgb: tuple[int, int, int] = (118, 124, 96)
    """Ground colour outside the world area."""

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> CameraConfig:
        """Config with ``resolution=name`` (preset or ``"WxH"``) and other fields overridden."""
        cfg = cls(resolution=name, **overrides)
        cfg.validate()
        return cfg

    @property
    def width_px(self) -> int:
        """Image width in pixels."""
        return parse_resolution(self.resolution)[0]

    @property
    def height_px(self) -> int:
        """Image height in pixels."""
        return parse_resolution(self.resolution)[1]

    def validate(self) -> None:
        """Check ranges; raises :class:`ConfigError` naming the field."""
        parse_resolution(self.resolution)
        f = self.horizontal_fov_deg
        check(math.isfinite(f) and 1.0 <= f <= 170.0, "horizontal_fov_deg", f"{f} not in [1, 170]")
        p = self.mount_pitch_deg
        check(math.isfinite(p) and -90.0 <= p <= 90.0, "mount_pitch_deg", f"{p} not in [-90, 90]")
        check(len(self.mount_offset_flu_m) == 3, "mount_offset_flu_m", "needs 3 values")
        check(
            all(math.isfinite(v) for v in self.mount_offset_flu_m),
            "mount_offset_flu_m",
            "must be finite",
        )
        n, fa = self.near_clip_m, self.far_clip_m
        check(math.isfinite(n) and n > 0.0, "near_clip_m", f"must be > 0, got {n}")
        check(
            math.isfinite(fa) and n < fa <= 1.0e6,
            "far_clip_m",
            f"must be in (near_clip_m, 1e6], got {fa}",
        )
        check(
            self.render_interval >= 1,
            "render_interval",
            f"must be >= 1, got {self.render_interval}",
        )
        check(
            1 <= self.mip_levels <= 16, "mip_levels", f"must be in [1, 16], got {self.mip_levels}"
        )
        check(-4.0 <= self.mip_bias <= 4.0, "mip_bias", f"must be in [-4, 4], got {self.mip_bias}")
        for name in ("sky_horizon_rgb", "sky_zenith_rgb", "outside_rgb"):
            c = getattr(self, name)
            check(
                len(c) == 3 and all(0 <= int(v) <= 255 for v in c),
                name,
                f"{c} is not an (r, g, b) triple in 0..255",
            )


def camera_intrinsics(config: CameraConfig) -> tuple[float, float, float, float]:
    """``(fx, fy, cx, cy)`` in pixels (OpenCV convention, see the module doc)."""
    w, h = parse_resolution(config.resolution)
    fx = (w / 2.0) / math.tan(math.radians(config.horizontal_fov_deg) / 2.0)
    return fx, fx, (w - 1) / 2.0, (h - 1) / 2.0


def fields_of_view_deg(config: CameraConfig) -> tuple[float, float]:
    """``(horizontal, vertical)`` field of view in degrees (square pixels, from the intrinsics)."""
    _, h = parse_resolution(config.resolution)
    _, fy, _, _ = camera_intrinsics(config)
    return config.horizontal_fov_deg, math.degrees(2.0 * math.atan(h / 2.0 / fy))


def mount_rotation(config: CameraConfig) -> Tensor:
    """Rotation ``(3, 3)`` float64 taking camera-optical vectors to body FLU.

    Optical ``(x right, y down, z forward)`` is FLU ``(-y, -z, x)`` for an unpitched camera; the
    mount then pitches it down by ``mount_pitch_deg`` (positive rotation about body +y).
    """
    opt_to_flu = torch.tensor(
        [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64
    )
    p = math.radians(config.mount_pitch_deg)
    c, s = math.cos(p), math.sin(p)
    pitch = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64)
    return pitch @ opt_to_flu


@dataclass
class CameraPose:
    """Pose of every camera, leading dims ``(W, D)``."""

    pos_enu_m: Tensor  # (W, D, 3)
    """Optical centre in world ENU, metres."""
    rot_world_from_cam: Tensor  # (W, D, 3, 3)
    """Rotation camera optical -> world ENU (columns: optical x, y, z axes in ENU)."""


def camera_pose(
    pos_enu_m: Tensor, quat_wxyz: Tensor, mount_rot: Tensor, mount_offset_flu_m: Tensor
) -> CameraPose:
    """Batched camera pose from body poses ``(W, D, 3)``/``(W, D, 4)`` and the mount."""
    rot_wb = quat_to_rotmat(quat_wxyz)  # (W, D, 3, 3)
    rot_wc = rot_wb @ mount_rot
    org = pos_enu_m + (rot_wb @ mount_offset_flu_m.unsqueeze(-1)).squeeze(-1)
    return CameraPose(pos_enu_m=org, rot_world_from_cam=rot_wc)


def box_corners(center_m: Tensor, half_extent_m: Tensor, yaw_rad: Tensor) -> Tensor:
    """World corners ``(..., 8, 3)`` of yaw-oriented boxes.

    From centres and half extents ``(..., 3)`` and yaw ``(...)``; corner ``i`` has sign ``+``
    along axis ``k`` where bit ``k`` of ``i`` is set.
    """
    signs = center_m.new_tensor(CORNER_SIGNS)  # (8, 3)
    local = half_extent_m.unsqueeze(-2) * signs  # (..., 8, 3)
    c, s = torch.cos(yaw_rad).unsqueeze(-1), torch.sin(yaw_rad).unsqueeze(-1)
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    return center_m.unsqueeze(-2) + torch.stack((x, y, local[..., 2]), dim=-1)


def project_boxes(
    corners_enu_m: Tensor,
    cam_pos_enu_m: Tensor,
    rot_world_from_cam: Tensor,
    intrinsics: tuple[float, float, float, float],
    near_clip_m: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Image bounds of boxes in every camera, exact for the part in front of the near plane.

    Args:
        corners_enu_m: ``(W, K, 8, 3)`` box corners (order of :func:`box_corners`).
        cam_pos_enu_m: ``(W, D, 3)`` optical centres.
        rot_world_from_cam: ``(W, D, 3, 3)``.
        intrinsics: ``(fx, fy, cx, cy)``.
        near_clip_m: the near plane (optical z).

    Returns:
        See :func:`project_clipped`, with leading dims ``(W, D, K)``.
    """
    rel = corners_enu_m.unsqueeze(1) - cam_pos_enu_m.unsqueeze(2).unsqueeze(3)  # (W, D, K, 8, 3)
    # p_cam = R^T rel  ->  p_cam[k] = sum_i R[i, k] rel[i]
    rot = rot_world_from_cam.unsqueeze(2).unsqueeze(3)  # (W, D, 1, 1, 3, 3)
    p = (rel.unsqueeze(-1) * rot).sum(-2)  # (W, D, K, 8, 3)
    return project_clipped(p, intrinsics, near_clip_m)


def project_clipped(
    corners_cam_m: Tensor, intrinsics: tuple[float, float, float, float], near_clip_m: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Image bounds of boxes given by their 8 corners in the camera optical frame ``(..., 8, 3)``.

    Returns ``xyxy (..., 4)``: unclipped bounds in pixel-edge coordinates of the projection of the
    box clipped to ``z >= near`` (the corners in front plus the points where the 12 edges cross
    the near plane); ``in_front (...)``: some part lies beyond the near plane (else ``xyxy`` is
    meaningless); ``min_depth_m (...)``: the smallest optical z of the box.
    """
    c = corners_cam_m.unbind(-2)
    u0, v0, u1, v1, front, zmin = project_clipped_soa(
        [p[..., 0] for p in c],
        [p[..., 1] for p in c],
        [p[..., 2] for p in c],
        intrinsics,
        near_clip_m,
    )
    return torch.stack((u0, v0, u1, v1), dim=-1), front, zmin


def project_clipped_soa(
    x: list[Tensor],
    y: list[Tensor],
    z: list[Tensor],
    intrinsics: tuple[float, float, float, float],
    near: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """:func:`project_clipped` on lists of the 8 corners' coordinates.

    Elementwise ops only, so that a compiled kernel vectorizes over the boxes. Returns ``u0, v0,
    u1, v1, in_front, min_depth``.
    """
    fx, fy, cx, cy = intrinsics
    inf = math.inf
    u0 = v0 = u1 = v1 = zmin = None
    front_any = None

    def add(px: Tensor, py: Tensor, pz: Tensor, ok: Tensor) -> None:
        nonlocal u0, v0, u1, v1
        pz = torch.where(ok, pz, 1.0)
        u = fx * px / pz + (cx + 0.5)
        v = fy * py / pz + (cy + 0.5)
        lo_u, hi_u = torch.where(ok, u, inf), torch.where(ok, u, -inf)
        lo_v, hi_v = torch.where(ok, v, inf), torch.where(ok, v, -inf)
        u0 = lo_u if u0 is None else torch.minimum(u0, lo_u)
        u1 = hi_u if u1 is None else torch.maximum(u1, hi_u)
        v0 = lo_v if v0 is None else torch.minimum(v0, lo_v)
        v1 = hi_v if v1 is None else torch.maximum(v1, hi_v)

    for i in range(8):
        ok = z[i] >= near
        front_any = ok if front_any is None else front_any | ok
        zmin = z[i] if zmin is None else torch.minimum(zmin, z[i])
        add(x[i], y[i], z[i], ok)
    for i in range(8):  # the 12 edges: corners i and i | bit k
        for k in range(3):
            j = i | (1 << k)
            if j == i:
                continue
            dz = z[j] - z[i]
            cross = (z[i] - near) * (z[j] - near) < 0
            t = (near - z[i]) / torch.where(cross, dz, 1.0)
            add(x[i] + t * (x[j] - x[i]), y[i] + t * (y[j] - y[i]), torch.full_like(t, near), cross)
    return u0, v0, u1, v1, front_any, zmin


@dataclass
class CameraOutput:
    """One (possibly reused) camera frame of all drones, leading dims ``(W, D)``."""

    rgb: Tensor  # (W, D, H, W_px, 3) uint8
    """Colour images, row-major HWC (``rgb8``): a zero-copy view of :attr:`rgba` (pixel stride 4
    bytes, so not contiguous; ``.contiguous()`` makes a packed copy)."""
    rgba: Tensor  # (W, D, H, W_px, 4) uint8
    """The same images with an alpha byte of 255 (``rgba8``), contiguous."""
    depth_m: Tensor | None  # (W, D, H, W_px) float32
    """Depth along the optical axis, metres (``inf`` = sky / beyond far clip); ``None`` when
    :attr:`CameraConfig.depth` is off."""
    pose: CameraPose
    """Camera poses the frame was rendered from."""
    rendered: bool
    """True when this frame was rendered at this step; False on a skipped step, where every
    tensor is the *same* object as at the last rendered step (a stale frame)."""
    frame_step: int
    """Control step index (of :meth:`TiledCamera.step`) at which the frame was rendered; -1 for
    direct :meth:`TiledCamera.render` calls."""
    detections: Any = None
    """Ground-truth detections of the same frame (a :class:`~isr_sim_bridge.detections.Detections`)
    when the camera has a detector, else ``None``."""


class FrameDetector(Protocol):
    """Anything that turns camera poses into detections (e.g. ``GroundTruthDetector``)."""

    def detect(self, pose: CameraPose) -> Any:
        """Detections for the given camera poses."""


COMPILE_AUTO_MIN_PIXELS: int = 1_000_000
"""``CameraConfig.compile=None`` compiles when ``W * D * H * W_px`` reaches this (e.g. 256 drones
at 80x80); smaller batches (tests, single views) run eagerly and start at once."""

_COMPILE_OPTIONS = {"assert_indirect_indexing": False}
"""Inductor options of the camera kernels: their gather indices are clamped in range by
construction, so the per-element bounds assertions are skipped."""


def maybe_compile(
    fn: Callable[..., Any], enabled: bool, dynamic: bool | None = False
) -> Callable[..., Any]:
    """``torch.compile(fn)`` when ``enabled``, else ``fn`` itself.

    If the compilation fails at the first call, warns and runs ``fn`` eagerly from then on.
    """
    if not enabled:
        return fn
    state: dict[str, Any] = {
        "fn": torch.compile(fn, dynamic=dynamic, options=dict(_COMPILE_OPTIONS)),
        "ok": False,
    }

    def call(*args: Any) -> Any:
        if state["ok"]:
            return state["fn"](*args)
        try:
            out = state["fn"](*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: run eagerly instead
            if state["fn"] is fn:
                raise
            warnings.warn(
                f"torch.compile of {fn.__name__} failed ({type(exc).__name__}: {exc}); "
                "running it eagerly",
                RuntimeWarning,
                stacklevel=2,
            )
            state["fn"] = fn
            out = fn(*args)
        state["ok"] = True
        return out

    return call


_ALPHA = -(1 << 24)  # 0xFF000000 as int32: alpha byte 255


def pack_rgba(rgb: Tensor) -> Tensor:
    """``(..., 3)`` integer RGB -> ``(...)`` int32 whose 4 bytes are ``R, G, B, 255`` in memory.

    Little-endian: the value is ``R | G << 8 | B << 16 | 255 << 24``.
    """
    rgb = rgb.to(torch.int32)
    return rgb[..., 0] | (rgb[..., 1] << 8) | (rgb[..., 2] << 16) | _ALPHA


def mip_pyramid(ground_rgb: Tensor, levels: int) -> list[Tensor]:
    """Mip levels of ``(W, Hy, Hx, 3)`` uint8 textures as int32 ``(W, Hl, Wl, 3)`` tensors.

    Level ``l + 1`` texel ``(i, j)`` is ``(a + b + c + d + 2) // 4`` of level ``l`` texels
    ``(2i..2i+1, 2j..2j+1)``, the last row/column replicated where the size is odd (so level
    ``l`` has ``ceil(Hy / 2**l)`` rows). Stops at ``levels`` levels or when a side of the level
    below is under 4 texels.
    """
    out = [ground_rgb.to(torch.int32)]
    while len(out) < levels:
        cur = out[-1]
        h, w = cur.shape[1], cur.shape[2]
        if min(h, w) < 4:
            break
        if h % 2:
            cur = torch.cat((cur, cur[:, -1:]), dim=1)
        if w % 2:
            cur = torch.cat((cur, cur[:, :, -1:]), dim=2)
        s = cur[:, 0::2, 0::2] + cur[:, 1::2, 0::2] + cur[:, 0::2, 1::2] + cur[:, 1::2, 1::2]
        out.append(torch.div(s + 2, 4, rounding_mode="floor"))
    return out


def shade_face_colors(rgb: Tensor) -> Tensor:
    """``(..., 3)`` uint8 box colours -> ``(..., 8)`` face colours ``R | G << 8 | B << 16``.

    Faces 0..5 (6, 7 unused), no alpha byte; channel ``floor(c * FACE_SHADE[f] + 0.5)``.
    """
    shade = torch.tensor(FACE_SHADE + (0.0, 0.0), dtype=torch.float32, device=rgb.device)
    c = torch.floor(rgb.to(torch.float32).unsqueeze(-2) * shade.unsqueeze(-1) + 0.5)  # (..., 8, 3)
    c = c.clamp(0, 255).to(torch.int32)
    return c[..., 0] | (c[..., 1] << 8) | (c[..., 2] << 16)


def sky_color(
    horizon: tuple[int, int, int], zenith: tuple[int, int, int], sin_elev: Tensor
) -> Tensor:
    """Packed RGBA sky colour for rays of elevation sine ``sin_elev`` (any shape).

    Channel ``floor(h + (z - h) * clamp(sin_elev, 0, 1) + 0.5)``.
    """
    s = sin_elev.clamp(0.0, 1.0)
    ch = [
        torch.floor(horizon[i] + (zenith[i] - horizon[i]) * s + 0.5).to(torch.int32)
        for i in range(3)
    ]
    return ch[0] | (ch[1] << 8) | (ch[2] << 16) | _ALPHA


@dataclass(frozen=True)
class _Spec:
    """Constants of one camera, passed to its kernels (hashable: cheap compiled-code guards)."""

    width_px: int
    height_px: int
    tiles_x: int
    tiles_y: int
    intrinsics: tuple[float, float, float, float]
    near_clip_m: float
    far_clip_m: float
    depth: bool
    num_boxes: int
    drones_per_world: int
    tex_hx: int
    tex_hy: int
    tex_level_sizes: tuple[int, int, int]
    num_mip_levels: int
    lod_scale: float
    x_min_m: float
    y_min_m: float
    texture_res_m: float
    sky_horizon_rgb: tuple[int, int, int]
    sky_zenith_rgb: tuple[int, int, int]


def _setup_kernel(
    sp: _Spec,
    pos: Tensor,
    quat: Tensor,
    mount_rot: Tensor,
    mount_off: Tensor,
    bld_center: Tensor,
    bld_half: Tensor,
    bld_valid: Tensor,
    tgt_pos: Tensor,
    tgt_size: Tensor,
    tgt_yaw: Tensor,
    tgt_valid: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Camera poses, per-(drone, box) slab constants and screen tile rectangles.

    Returns ``rot (N, 9)``, ``org (N, 3)``, ``table (N * P, 16)`` (rows: the camera -> box frame
    rotation (9), ``-h - o_box`` (3), ``h - o_box`` (3), pad) and ``tile_rect (4, N * P)`` int64
    ``(tx0, ty0, tiles wide, number of tiles)``; 0 tiles = culled. The screen rectangle is the
    exact bounds of the box's projection (clipped at the near plane).
    """
    w, d = pos.shape[0], pos.shape[1]
    pose = camera_pose(pos, quat, mount_rot, mount_off)
    rot, org = pose.rot_world_from_cam, pose.pos_enu_m  # (W, D, 3, 3), (W, D, 3)
    # Struct-of-arrays over (W, D, P) so that the compiled kernel vectorizes over boxes.
    center = torch.cat((bld_center, tgt_pos), dim=1)  # (W, P, 3)
    half = torch.cat((bld_half, 0.5 * tgt_size), dim=1)
    yaw = torch.cat((torch.zeros_like(bld_center[..., 0]), tgt_yaw), dim=1)  # (W, P)
    valid = torch.cat((bld_valid, tgt_valid), dim=1).unsqueeze(1)  # (W, 1, P)
    p = center.shape[1]
    cs, sn = torch.cos(yaw).unsqueeze(1), torch.sin(yaw).unsqueeze(1)  # (W, 1, P)
    rr = [[rot[:, :, i, j].unsqueeze(-1) for j in range(3)] for i in range(3)]  # (W, D, 1)
    # box frame: x_b = Rz(-yaw) (x - c); row k of (camera -> box) = box axis k in camera coords
    m0 = [cs * rr[0][j] + sn * rr[1][j] for j in range(3)]
    m1 = [cs * rr[1][j] - sn * rr[0][j] for j in range(3)]
    m2 = [rr[2][j].expand_as(m0[0]) for j in range(3)]
    rel = [org[:, :, i].unsqueeze(-1) - center[:, :, i].unsqueeze(1) for i in range(3)]
    o_box = [cs * rel[0] + sn * rel[1], cs * rel[1] - sn * rel[0], rel[2]]  # camera in box frame
    hb = [half[:, :, i].unsqueeze(1) for i in range(3)]  # (W, 1, P)
    cols = [*m0, *m1, *m2]
    cols += [-hb[i] - o_box[i] for i in range(3)] + [hb[i] - o_box[i] for i in range(3)]
    cols.append(torch.zeros_like(o_box[0]))
    table = torch.stack(cols, dim=-1)  # (W, D, P, 16)
    # corners in camera coordinates: centre - sum_k o_k m_k, plus sum_k +-h_k m_k
    mm = (m0, m1, m2)
    cc = [-(m0[j] * o_box[0] + m1[j] * o_box[1] + m2[j] * o_box[2]) for j in range(3)]
    ax = [[hb[k] * mm[k][j] for j in range(3)] for k in range(3)]
    xs, ys, zs = [], [], []
    for sg in CORNER_SIGNS:
        xs.append(cc[0] + sg[0] * ax[0][0] + sg[1] * ax[1][0] + sg[2] * ax[2][0])
        ys.append(cc[1] + sg[0] * ax[0][1] + sg[1] * ax[1][1] + sg[2] * ax[2][1])
        zs.append(cc[2] + sg[0] * ax[0][2] + sg[1] * ax[1][2] + sg[2] * ax[2][2])
    u0, v0, u1, v1, in_front, min_depth = project_clipped_soa(
        xs, ys, zs, sp.intrinsics, sp.near_clip_m
    )
    wf, hf = float(sp.width_px), float(sp.height_px)
    vis = (
        valid
        & in_front
        & (min_depth <= sp.far_clip_m)
        & (u1 > 0)
        & (u0 < wf)
        & (v1 > 0)
        & (v0 < hf)
    )
    tx0 = torch.floor(u0.clamp(0, wf - 1) * (1.0 / TILE_WIDTH_PX))
    tx1 = torch.floor(u1.clamp(0, wf - 1) * (1.0 / TILE_WIDTH_PX))
    ty0 = torch.floor(v0.clamp(0, hf - 1) * (1.0 / TILE_HEIGHT_PX))
    ty1 = torch.floor(v1.clamp(0, hf - 1) * (1.0 / TILE_HEIGHT_PX))
    span_x = (tx1 - tx0 + 1).to(torch.int64)
    count = torch.where(vis, span_x * (ty1 - ty0 + 1).to(torch.int64), 0)
    tile_rect = torch.stack((tx0.to(torch.int64), ty0.to(torch.int64), span_x, count)).view(
        4, w * d * p
    )
    return rot.reshape(w * d, 9), org.reshape(w * d, 3), table.reshape(w * d * p, 16), tile_rect


def _layer_kernel(
    sp: _Spec,
    zbuf: Tensor,
    cbuf: Tensor,
    table: Tensor,
    colors: Tensor,
    tile_ray_x: Tensor,
    tile_ray_y: Tensor,
    pair: Tensor,
    row: Tensor,
    tile: Tensor,
) -> None:
    """One layer of work items (no two on the same drone tile), updating the buffers in place.

    Exact slab tests of the tile's pixel rays against the item's box; nearer hits are written
    into ``zbuf`` / ``cbuf``.

    ``zbuf``/``cbuf`` are tile-major ``(N * T, th * tw)``; an item covers row ``row = n * T +
    tile``. ``colors (W * P, 8)`` holds the packed face colours of every box; ``tile_ray_*
    (T, th * tw)`` the camera-frame rays of every tile.
    """
    m = pair.shape[0]
    tb = table[pair].view(m, 16, 1)
    rx = tile_ray_x[tile]  # (M, S)
    ry = tile_ray_y[tile]

    def col(i: int) -> Tensor:
        return tb[:, i]

    dx = col(0) * rx + col(1) * ry + col(2)  # ray direction in the box frame
    dy = col(3) * rx + col(4) * ry + col(5)
    dz = col(6) * rx + col(7) * ry + col(8)
    ix, iy, iz = 1.0 / dx, 1.0 / dy, 1.0 / dz
    ax, bx = col(9) * ix, col(12) * ix
    ay, by = col(10) * iy, col(13) * iy
    az, bz = col(11) * iz, col(14) * iz
    nx, fx_ = torch.minimum(ax, bx), torch.maximum(ax, bx)
    ny, fy_ = torch.minimum(ay, by), torch.maximum(ay, by)
    nz, fz_ = torch.minimum(az, bz), torch.maximum(az, bz)
    t_yz = torch.maximum(ny, nz)
    t_in = torch.maximum(nx, t_yz)
    t_out = torch.minimum(torch.minimum(fx_, fy_), fz_)
    t_hit = torch.clamp(t_in, min=sp.near_clip_m)
    old = zbuf[row]  # (M, S)
    upd = (t_out >= t_hit) & (t_hit <= sp.far_clip_m) & (t_hit < old)
    # colour of the entry face: the axis of t_in; moving +axis enters the -axis face (odd id)
    p = sp.num_boxes
    box_row = torch.div(pair, sp.drones_per_world * p, rounding_mode="floor") * p + torch.remainder(
        pair, p
    )
    fc = colors[box_row].view(m, 8, 1)
    cx_ = torch.where(dx > 0, fc[:, 1], fc[:, 0])
    cy_ = torch.where(dy > 0, fc[:, 3], fc[:, 2])
    cz_ = torch.where(dz > 0, fc[:, 5], fc[:, 4])
    color = torch.where(nx >= t_yz, cx_, torch.where(ny >= nz, cy_, cz_))
    zbuf[row] = torch.where(upd, t_hit, old)
    cbuf[row] = torch.where(upd, color, cbuf[row])


def _shade_kernel(
    sp: _Spec,
    zbuf: Tensor,
    cbuf: Tensor,
    rot: Tensor,
    org: Tensor,
    ray_x: Tensor,
    ray_y: Tensor,
    ray_inv_norm: Tensor,
    tex: Tensor,
    drone_world: Tensor,
) -> tuple[Tensor, Tensor | None]:
    """Per-pixel ground intersection, texture, box colour and sky over the padded image.

    Computed in tile-major pixel order (``zbuf``, ``cbuf``: ``(N, T * th * tw)``, rays
    ``(T * th * tw,)``); returns row-major packed RGBA ``(N, Hp, Wp)`` int32 and depth (or None).
    """
    n = rot.shape[0]
    r = rot.view(n, 9, 1)
    dx = r[:, 0] * ray_x + r[:, 1] * ray_y + r[:, 2]
    dy = r[:, 3] * ray_x + r[:, 4] * ray_y + r[:, 5]
    dz = r[:, 6] * ray_x + r[:, 7] * ray_y + r[:, 8]
    o = org.view(n, 3, 1)
    t_g = -o[:, 2] / dz
    ground_ok = (dz < 0) & (t_g >= sp.near_clip_m) & (t_g <= sp.far_clip_m)
    box_hit = zbuf <= sp.far_clip_m
    ground = ground_ok & (t_g < zbuf)
    tg = torch.where(ground, t_g, 1.0)
    gx = o[:, 0] + tg * dx
    gy = o[:, 1] + tg * dy
    # mip level = floor(log2(x)) from the float exponent bits of x (exact and cheap)
    fp = tg * sp.lod_scale
    lvl = ((fp.view(torch.int32) >> 23) - 127).clamp(0, sp.num_mip_levels - 1)
    sc = ((127 - lvl) << 23).view(torch.float32) * (1.0 / sp.texture_res_m)  # 2**-lvl / res
    wl = ((sp.tex_hx - 1) >> lvl) + 1  # texels of the level (without the border)
    hl = ((sp.tex_hy - 1) >> lvl) + 1
    # texel index + 1 (the border): truncation equals floor after clamping at 0
    ix = ((gx - sp.x_min_m) * sc + 1.0).clamp(0, 1 << 24).to(torch.int32)
    iy = ((gy - sp.y_min_m) * sc + 1.0).clamp(0, 1 << 24).to(torch.int32)
    ix = torch.minimum(ix, wl + 1)
    iy = torch.minimum(iy, hl + 1)
    # level block offset (closed form, see TiledCamera.__init__) and 4x4-block addressing
    s0, s1, s2 = sp.tex_level_sizes
    off = (lvl > 0).to(torch.int32) * (s0 - s2) + (lvl > 1).to(torch.int32) * (s1 - s2) + lvl * s2
    bx = (wl + 5) >> 2  # 4x4 blocks per row of the padded level
    by = (hl + 5) >> 2
    world = drone_world.view(n, 1)
    blk = (world * by + (iy >> 2)) * bx + (ix >> 2)
    c_ground = tex[off + (blk << 4) + ((iy & 3) << 2) + (ix & 3)]
    if sp.sky_horizon_rgb == sp.sky_zenith_rgb:  # uniform sky (decided at trace time)
        c_sky = sky_color(sp.sky_horizon_rgb, sp.sky_zenith_rgb, torch.zeros_like(dz))
    else:
        sin_elev = dz * ray_inv_norm  # rotations keep the norm of the camera-frame ray
        c_sky = sky_color(sp.sky_horizon_rgb, sp.sky_zenith_rgb, sin_elev)
    rgba = torch.where(ground, c_ground, torch.where(box_hit, cbuf | _ALPHA, c_sky))
    tiles = (n, sp.tiles_y, sp.tiles_x, TILE_HEIGHT_PX, TILE_WIDTH_PX)
    image = (n, sp.tiles_y * TILE_HEIGHT_PX, sp.tiles_x * TILE_WIDTH_PX)
    rgba = rgba.view(tiles).permute(0, 1, 3, 2, 4).reshape(image)
    if not sp.depth:
        return rgba, None
    depth = torch.where(ground, t_g, torch.where(box_hit, zbuf, math.inf))
    return rgba, depth.view(tiles).permute(0, 1, 3, 2, 4).reshape(image)


class TiledCamera:
    """Renders all drones of a :class:`WorldBatch` in one batched call (see the module doc).

    Args:
        world: the worlds (buildings are read once; targets at every render).
        drones_per_world: ``D``.
        config: camera configuration (validated here).
        device: where rendering runs (the world is moved there if needed).
        detector: optional object with ``detect(pose) -> detections``; its result is attached to
            every rendered :class:`CameraOutput` (e.g. a
            :class:`~isr_sim_bridge.detections.GroundTruthDetector`).
    """

    def __init__(
        self,
        world: WorldBatch,
        drones_per_world: int,
        config: CameraConfig | None = None,
        device: torch.device | str = "cpu",
        detector: FrameDetector | None = None,
    ) -> None:
        if sys.byteorder != "little":  # pragma: no cover - the RGBA packing assumes it
            raise RuntimeError("TiledCamera needs a little-endian machine")
        self.config = config if config is not None else CameraConfig()
        self.config.validate()
        check(drones_per_world >= 1, "drones_per_world", f"must be >= 1, got {drones_per_world}")
        self.device = torch.device(device)
        self.world = world if world.device == self.device else world.to(self.device)
        self.detector = detector
        cfg = self.config
        self.num_worlds = self.world.num_worlds
        self.drones_per_world = int(drones_per_world)
        self.width_px, self.height_px = parse_resolution(cfg.resolution)
        self.intrinsics = camera_intrinsics(cfg)
        fx, fy, cx, cy = self.intrinsics
        dev = self.device
        self._mount_rot = mount_rotation(cfg).to(dev, torch.float32)
        self._mount_off = torch.tensor(cfg.mount_offset_flu_m, dtype=torch.float32, device=dev)

        # ---- tiles (tw x th pixels, tile-major buffers) and per-pixel rays (camera frame, z = 1)
        tw, th = TILE_WIDTH_PX, TILE_HEIGHT_PX
        self.tiles_x = -(-self.width_px // tw)
        self.tiles_y = -(-self.height_px // th)
        self.num_tiles = self.tiles_x * self.tiles_y
        self._pad_w, self._pad_h = self.tiles_x * tw, self.tiles_y * th
        u = torch.arange(self._pad_w, dtype=torch.float64, device=dev)
        v = torch.arange(self._pad_h, dtype=torch.float64, device=dev)
        rx = ((u - cx) / fx).to(torch.float32)
        ry = ((v - cy) / fy).to(torch.float32)
        tshape = (self.tiles_y, self.tiles_x, th, tw)  # tile-major (TY, TX, th, tw)
        self._tile_ray_x = (
            rx.view(1, self.tiles_x, 1, tw)
            .expand(tshape)
            .reshape(self.num_tiles, th * tw)
            .contiguous()
        )
        self._tile_ray_y = (
            ry.view(self.tiles_y, 1, th, 1)
            .expand(tshape)
            .reshape(self.num_tiles, th * tw)
            .contiguous()
        )
        self._ray_x, self._ray_y = rx.contiguous(), ry.contiguous()
        xx, yy = self._tile_ray_x.double(), self._tile_ray_y.double()
        self._tile_ray_inv_norm = torch.rsqrt(xx * xx + yy * yy + 1.0).float()

        # ---- static boxes (buildings / obstacles)
        wb = self.world
        self._bld_center = 0.5 * (wb.box_min_m + wb.box_max_m)
        self._bld_half = 0.5 * (wb.box_max_m - wb.box_min_m)
        self._bld_valid = wb.box_valid.clone()
        # face colours of every box, buildings then targets (W * P, 8)
        self._colors = torch.cat(
            (shade_face_colors(wb.box_rgb), shade_face_colors(wb.target_rgb)), dim=1
        )
        self._colors = self._colors.reshape(-1, 8).contiguous()
        self.num_boxes = int(wb.box_min_m.shape[1]) + int(wb.target_pos_enu_m.shape[1])

        # ---- ground texture pyramid, packed RGBA, each level with a 1-texel outside border,
        # stored in 4x4-texel blocks (see _shade_kernel for the addressing)
        levels = mip_pyramid(wb.ground_rgb, cfg.mip_levels)
        outside = int(pack_rgba(torch.tensor(cfg.outside_rgb)))
        blocks = []
        for lvl in levels:
            nw_, hl, wl = lvl.shape[0], lvl.shape[1], lvl.shape[2]
            by, bx = (hl + 2 + 3) // 4, (wl + 2 + 3) // 4  # 4x4 blocks per world
            packed = torch.nn.functional.pad(
                pack_rgba(lvl), (1, 4 * bx - wl - 1, 1, 4 * by - hl - 1), value=outside
            )  # (W, 4 by, 4 bx)
            blocks.append(packed.view(nw_, by, 4, bx, 4).permute(0, 1, 3, 2, 4).reshape(-1))
        sizes = [b.numel() for b in blocks] + [0, 0]
        # level 0 at 0, level 1 at S0, level l >= 2 at S0 + S1 + (l - 2) * S2 (closed form)
        total = sizes[0] + sizes[1] + max(len(levels) - 2, 0) * sizes[2]
        check(total < 2**31, "world", "ground texture too large for int32 indexing")
        self._tex = torch.full((total,), outside, dtype=torch.int32, device=dev)
        for i, b in enumerate(blocks):
            off = 0 if i == 0 else sizes[0] if i == 1 else sizes[0] + sizes[1] + (i - 2) * sizes[2]
            self._tex[off : off + b.numel()] = b
        self._tex_sizes = (sizes[0], sizes[1], sizes[2])
        self._tex_hy, self._tex_hx = int(wb.ground_rgb.shape[1]), int(wb.ground_rgb.shape[2])
        self._lod_scale = math.sqrt(2.0) * 2.0**cfg.mip_bias / (fx * wb.texture_res_m)
        self.num_mip_levels = len(levels)

        n = self.num_worlds * self.drones_per_world
        self._drone_world = torch.arange(
            self.num_worlds, device=dev, dtype=torch.int32
        ).repeat_interleave(self.drones_per_world)
        # box pass output, tile-major (N * T, th * tw): nearest box depth and its colour
        self._zbuf = torch.full((n * self.num_tiles, th * tw), math.inf, device=dev)
        self._cbuf = torch.zeros((n * self.num_tiles, th * tw), dtype=torch.int32, device=dev)

        self._spec = _Spec(
            width_px=self.width_px,
            height_px=self.height_px,
            tiles_x=self.tiles_x,
            tiles_y=self.tiles_y,
            intrinsics=self.intrinsics,
            near_clip_m=float(cfg.near_clip_m),
            far_clip_m=float(cfg.far_clip_m),
            depth=bool(cfg.depth),
            num_boxes=self.num_boxes,
            drones_per_world=self.drones_per_world,
            tex_hx=self._tex_hx,
            tex_hy=self._tex_hy,
            tex_level_sizes=self._tex_sizes,
            num_mip_levels=self.num_mip_levels,
            lod_scale=self._lod_scale,
            x_min_m=float(wb.x_min_m),
            y_min_m=float(wb.y_min_m),
            texture_res_m=float(wb.texture_res_m),
            sky_horizon_rgb=tuple(int(c) for c in cfg.sky_horizon_rgb),
            sky_zenith_rgb=tuple(int(c) for c in cfg.sky_zenith_rgb),
        )
        pixels = n * self.width_px * self.height_px
        self.compiled = (
            bool(cfg.compile) if cfg.compile is not None else pixels >= COMPILE_AUTO_MIN_PIXELS
        )
        """Whether the kernels are compiled (``CameraConfig.compile``, resolved)."""
        want_numba = cfg.cpu_kernels is None or bool(cfg.cpu_kernels)
        if cfg.cpu_kernels and not cpu_kernels.AVAILABLE:
            warnings.warn(
                "CameraConfig.cpu_kernels=True but numba cannot be imported; using torch",
                stacklevel=2,
            )
        self.numba_kernels = dev.type == "cpu" and want_numba and cpu_kernels.AVAILABLE
        """Whether setup, box pass and shading run as the numba CPU kernels
        (``CameraConfig.cpu_kernels``); the torch kernels are then not compiled."""
        self._corner_signs = torch.tensor(CORNER_SIGNS, dtype=torch.float32).numpy()
        # per-box arrays of the numba setup (W, P): buildings (yaw 0) then targets
        zeros = torch.zeros_like
        tgt = self.world.target_yaw_rad
        self._box_arrays = (
            torch.cat((self._bld_center, zeros(self.world.target_pos_enu_m)), 1),
            torch.cat((self._bld_half, zeros(self.world.target_size_m)), 1),
            torch.cat((torch.ones_like(self._bld_center[..., 0]), zeros(tgt)), 1),
            torch.cat((zeros(self._bld_center[..., 0]), zeros(tgt)), 1),
            torch.cat((self._bld_valid, zeros(self.world.target_valid)), 1),
        )
        self._no_depth = torch.zeros((1, 1, 1), dtype=torch.float32)
        torch_compiled = self.compiled and not self.numba_kernels
        self._setup_fn = maybe_compile(_setup_kernel, torch_compiled)
        self._layer_fn = maybe_compile(_layer_kernel, torch_compiled, dynamic=None)
        self._shade_fn = maybe_compile(_shade_kernel, torch_compiled)

        self._step_count = 0
        self._last: CameraOutput | None = None
        self.last_work_items = 0
        """Number of (drone, tile, box) work items of the last render (statistics)."""
        self.collect_timings = False
        """When set, :meth:`render` synchronises after each stage and fills :attr:`timings`."""
        self.timings: dict[str, float] = {}
        """Seconds per stage of the last render (``setup``, ``box_pass``, ``shade``,
        ``detections``; with the numba kernels ``setup_box_pass``, ``shade``, ``detections``)
        when :attr:`collect_timings` is set."""

    # ------------------------------------------------------------------ public API

    @property
    def num_drones(self) -> int:
        """Total number of cameras ``W * D``."""
        return self.num_worlds * self.drones_per_world

    def _clock(self) -> float:
        """Wall clock for :attr:`timings` (synchronising CUDA first); 0 when not collecting."""
        if not self.collect_timings:
            return 0.0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def camera_matrix(self) -> tuple[float, float, float, float]:
        """``(fx, fy, cx, cy)`` in pixels, OpenCV/ROS convention, consistent with the renderer.

        ``sensor_msgs/CameraInfo``: ``k = [fx, 0, cx, 0, fy, cy, 0, 0, 1]``, zero distortion.
        """
        return self.intrinsics

    def camera_pose(self, pos_enu_m: Tensor, quat_wxyz: Tensor) -> CameraPose:
        """Camera poses for body poses ``(W, D, 3)`` / ``(W, D, 4)`` (FLU -> ENU quaternions)."""
        return camera_pose(pos_enu_m, quat_wxyz, self._mount_rot, self._mount_off)

    def reset(self) -> None:
        """Forget the last frame and restart the step counter (next :meth:`step` renders)."""
        self._step_count = 0
        self._last = None

    def step(
        self, pos_enu_m: Tensor, quat_wxyz: Tensor, force_render: bool = False
    ) -> CameraOutput:
        """Frame for control step ``k`` (an internal counter, +1 per call, 0 after :meth:`reset`).

        Renders when ``k % render_interval == 0``, when ``force_render`` is set, or when no frame
        exists yet; the result has ``rendered=True`` and ``frame_step=k``. On every other step
        nothing is computed and the last rendered frame is returned again with ``rendered=False``
        (the same tensors, ``frame_step`` of that render): the environment then builds a
        state-only observation, or reuses the stale image, as it chooses. The poses passed on a
        skipped step are ignored.
        """
        k = self._step_count
        self._step_count += 1
        if force_render or self._last is None or k % self.config.render_interval == 0:
            out = self.render(pos_enu_m, quat_wxyz)
            out.frame_step = k
            self._last = out
            return out
        return dataclasses.replace(self._last, rendered=False)

    def render(self, pos_enu_m: Tensor, quat_wxyz: Tensor) -> CameraOutput:
        """Render every drone now; returns a fresh :class:`CameraOutput` (``rendered=True``).

        Args:
            pos_enu_m: ``(W, D, 3)`` body positions, world ENU, metres.
            quat_wxyz: ``(W, D, 4)`` attitudes, body FLU -> world ENU.
        """
        shape = (self.num_worlds, self.drones_per_world)
        if tuple(pos_enu_m.shape) != (*shape, 3) or tuple(quat_wxyz.shape) != (*shape, 4):
            raise ValueError(
                f"pose shapes {tuple(pos_enu_m.shape)}, {tuple(quat_wxyz.shape)} do not match "
                f"(W, D) = {shape}"
            )
        wb = self.world
        clock = self._clock
        t0 = clock()
        pos = pos_enu_m.to(self.device, torch.float32)
        quat = quat_wxyz.to(self.device, torch.float32)
        if self.numba_kernels:
            rot, org = self._render_boxes_numba(pos, quat)
            t1 = clock()
            t2 = t1
            rgba, depth = self._shade_numba(rot, org)
        else:
            rot, org, table, tile_rect = self._setup_fn(
                self._spec,
                pos,
                quat,
                self._mount_rot,
                self._mount_off,
                self._bld_center,
                self._bld_half,
                self._bld_valid,
                wb.target_pos_enu_m,
                wb.target_size_m,
                wb.target_yaw_rad,
                wb.target_valid,
            )
            t1 = clock()
            self._zbuf.fill_(math.inf)
            self._box_pass(table, self._colors, tile_rect)
            t2 = clock()
            rgba, depth = self._shade_fn(
                self._spec,
                self._zbuf.view(self.num_drones, -1),
                self._cbuf.view(self.num_drones, -1),
                rot,
                org,
                self._tile_ray_x.view(-1),
                self._tile_ray_y.view(-1),
                self._tile_ray_inv_norm.view(-1),
                self._tex,
                self._drone_world,
            )
        nw, nd = shape
        h, w = self.height_px, self.width_px
        if (h, w) != (self._pad_h, self._pad_w):
            rgba = rgba[:, :h, :w].contiguous()
            depth = depth[:, :h, :w].contiguous() if depth is not None else None
        rgba8 = rgba.view(torch.uint8).view(nw, nd, h, w, 4)
        pose = CameraPose(pos_enu_m=org.view(nw, nd, 3), rot_world_from_cam=rot.view(nw, nd, 3, 3))
        t3 = clock()
        det = self.detector.detect(pose) if self.detector is not None else None
        if self.collect_timings:
            self.timings = {
                "setup": t1 - t0,
                "box_pass": t2 - t1,
                "shade": t3 - t2,
                "detections": clock() - t3,
            }
            if self.numba_kernels:  # one kernel does the setup and the box pass
                self.timings["setup_box_pass"] = self.timings.pop("setup")
                del self.timings["box_pass"]
        return CameraOutput(
            rgb=rgba8[..., :3],
            rgba=rgba8,
            depth_m=depth.view(nw, nd, h, w) if depth is not None else None,
            pose=pose,
            rendered=True,
            frame_step=-1,
            detections=det,
        )

    def _shade_numba(self, rot: Tensor, org: Tensor) -> tuple[Tensor, Tensor | None]:
        """The shading pass as the numba kernel (:func:`isr_sim_bridge.cpu_kernels.shade`).

        Returns fresh row-major padded ``rgba (N, Hp, Wp)`` int32 and ``depth`` (or None).
        """
        n, h, w = self.num_drones, self._pad_h, self._pad_w
        sp = self._spec
        rgba = torch.empty((n, h, w), dtype=torch.int32)
        depth = torch.empty((n, h, w), dtype=torch.float32) if sp.depth else None
        cpu_kernels.shade(
            self._zbuf.numpy(),
            self._cbuf.numpy(),
            rot.numpy(),
            org.numpy(),
            self._ray_x.numpy(),
            self._ray_y.numpy(),
            self._tile_ray_inv_norm.numpy(),
            self._tex.numpy(),
            self.drones_per_world,
            self.tiles_x,
            sp.near_clip_m,
            sp.far_clip_m,
            sp.lod_scale,
            sp.num_mip_levels,
            sp.tex_hx,
            sp.tex_hy,
            sp.tex_level_sizes,
            sp.x_min_m,
            sp.y_min_m,
            sp.texture_res_m,
            sp.sky_horizon_rgb,
            sp.sky_zenith_rgb,
            rgba.numpy(),
            (depth if depth is not None else self._no_depth).numpy(),
            depth is not None,
        )
        return rgba, depth

    def _render_boxes_numba(self, pos: Tensor, quat: Tensor) -> tuple[Tensor, Tensor]:
        """Setup + box pass as one numba kernel (:func:`isr_sim_bridge.cpu_kernels.render_boxes`).

        Returns the camera rotations ``(N, 9)`` and origins ``(N, 3)`` for the shading pass.
        """
        wb = self.world
        pose = camera_pose(pos, quat, self._mount_rot, self._mount_off)
        n = self.num_drones
        rot = pose.rot_world_from_cam.reshape(n, 3, 3).contiguous()
        org = pose.pos_enu_m.reshape(n, 3).contiguous()
        # boxes (W, P): the buildings' part was filled at construction, targets may have moved
        b = self._bld_center.shape[1]
        center, half, cos_yaw, sin_yaw, valid = self._box_arrays
        center[:, b:] = wb.target_pos_enu_m
        torch.mul(wb.target_size_m, 0.5, out=half[:, b:])
        torch.cos(wb.target_yaw_rad, out=cos_yaw[:, b:])
        torch.sin(wb.target_yaw_rad, out=sin_yaw[:, b:])
        valid[:, b:] = wb.target_valid
        fx, fy, cx, cy = self.intrinsics
        self.last_work_items = int(
            cpu_kernels.render_boxes(
                rot.numpy(),
                org.numpy(),
                center.numpy(),
                half.numpy(),
                cos_yaw.numpy(),
                sin_yaw.numpy(),
                valid.numpy(),
                self._colors.numpy(),
                self._corner_signs,
                self._tile_ray_x.numpy(),
                self._tile_ray_y.numpy(),
                self._zbuf.numpy(),
                self._cbuf.numpy(),
                self.drones_per_world,
                self.tiles_x,
                self.tiles_y,
                fx,
                fy,
                cx,
                cy,
                self._spec.near_clip_m,
                self._spec.far_clip_m,
                self.width_px,
                self.height_px,
            )
        )
        return rot.view(n, 9), org

    def _box_pass(self, table: Tensor, colors: Tensor, tile_rect: Tensor) -> None:
        """Exact box hits of all (drone, tile, box) work items into the z and colour buffers.

        A work item's layer is its rank among the items of the same drone tile, so no layer
        touches a tile twice. (On CPU with numba, :meth:`_render_boxes_numba` replaces the setup
        kernel and this pass.)
        """
        p = self.num_boxes
        tx0, ty0, tw, count = tile_rect.unbind(0)
        pairs = count.nonzero().squeeze(1)  # (Q,) index n * P + box
        self.last_work_items = 0
        if pairs.numel() == 0:
            return
        c = count[pairs]
        m = int(c.sum())  # host sync: number of work items
        self.last_work_items = m
        item_pair = torch.repeat_interleave(pairs, c, output_size=m)
        first = torch.cumsum(c, 0) - c
        k = torch.arange(m, device=c.device) - torch.repeat_interleave(first, c, output_size=m)
        twi = tw[item_pair]
        ty = ty0[item_pair] + torch.div(k, twi, rounding_mode="floor")
        tx = tx0[item_pair] + torch.remainder(k, twi)
        row = (
            torch.div(item_pair, p, rounding_mode="floor") * self.num_tiles + ty * self.tiles_x + tx
        )
        rs, order = torch.sort(row, stable=True)
        new = torch.ones_like(rs, dtype=torch.bool)
        new[1:] = rs[1:] != rs[:-1]
        idx = torch.arange(m, device=c.device)
        rank = idx - torch.cummax(torch.where(new, idx, 0), 0).values
        rank_sorted, order2 = torch.sort(rank, stable=True)
        sel = order[order2]
        sizes = torch.bincount(rank_sorted).tolist()  # host sync: layer sizes
        item_pair, row = item_pair[sel], row[sel]
        tile = torch.remainder(row, self.num_tiles)
        start = 0
        for size in sizes:
            sl = slice(start, start + size)
            args = (item_pair[sl], row[sl], tile[sl])
            if self.compiled:
                for a in args:
                    torch._dynamo.mark_dynamic(a, 0)
            self._layer_fn(
                self._spec,
                self._zbuf,
                self._cbuf,
                table,
                colors,
                self._tile_ray_x,
                self._tile_ray_y,
                *args,
            )
            start += size
