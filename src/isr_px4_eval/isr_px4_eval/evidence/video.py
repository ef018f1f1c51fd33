"""Annotated H.264 videos of recorded runs (``isr video BAG -o OUT.mp4``).

Reads any rosbag2 bag (directory, ``.mcap`` or ``.db3``; recorded by :mod:`.recording` or live
with ``ros2 bag record``) by topic *type*: ``sensor_msgs/Image`` per drone namespace,
``vision_msgs/Detection2DArray`` (topics containing ``gt`` or ``ground_truth`` are ground truth),
``nav_msgs/Odometry``, and when present ``/isr/step_metrics`` (DiagnosticArray), ``/isr/rendered``
and ``/isr/metadata``. One video frame per step (``/isr/step_metrics``), else per image of the
chosen drone, else per odometry message.

Every frame has a header (test name, phase, sim time, step, wall-clock date of the video), the
simulation FPS counter, a RENDER/SKIP marker, ground-truth boxes (green) and detector boxes
(orange), and a metrics sidebar (reward, return, step, targets found, detections, RAM, VRAM).

Modes: ``single`` (one drone), ``grid`` (all drones in tiles, per-drone reward and detection
count, footer with aggregate FPS and memory), ``side-by-side`` (two bags, e.g. direct vs
full-fidelity, with the position error over time), ``map`` (top-down trajectories over the
world texture, regenerated from the world seed and spec of ``/isr/metadata``, else a plain
background; targets and targets found).

Drawing is numpy + Pillow; encoding is libx264 (yuv420p) through imageio-ffmpeg.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import functools
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from isr_direct_dynamics.config import json_dumps
from isr_px4_eval.evidence.bags import BagSource
from isr_px4_eval.evidence.recording import BagError
from isr_px4_eval.evidence.runs import Run, load_run

MODES = ("single", "grid", "side-by-side", "map")
GT_COLOUR = (60, 230, 60)
DET_COLOUR = (255, 150, 0)
BG = (24, 26, 30)
FG = (235, 235, 235)
DIM = (150, 155, 160)
DRONE_COLOURS = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
    (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195),
]  # fmt: skip


@functools.lru_cache(maxsize=8)
def font(size: int) -> Any:
    """DejaVu Sans (shipped with matplotlib) at ``size`` px, else Pillow's default font."""
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


# ---------------------------------------------------------------------------------------------
# Drawing helpers


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.{digits}f}"
    return str(v)


def camera_panel(
    run: Run, drone: str, t: int, size: tuple[int, int], boxes: bool = True
) -> Image.Image:
    """The drone's latest image at ``t`` scaled to ``size`` with GT and detector boxes."""
    s = run.drones.get(drone)
    img = s.latest("images", t) if s is not None else None
    w, h = size
    if img is None:
        panel = Image.new("RGB", size, (40, 42, 48))
        ImageDraw.Draw(panel).text(
            (8, h // 2 - 8), f"{drone}: no image yet", fill=DIM, font=font(14)
        )
        return panel
    ih, iw = img.shape[:2]
    panel = Image.fromarray(img).resize(size, Image.NEAREST)
    if not boxes or s is None:
        return panel
    draw = ImageDraw.Draw(panel)
    sx, sy = w / iw, h / ih
    for kind, colour, width in (("gt", GT_COLOUR, 2), ("det", DET_COLOUR, 2)):
        d = s.latest(kind, t)
        if d is None:
            continue
        for k, b in enumerate(d["boxes_xyxy_px"]):
            x0, y0, x1, y1 = b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy
            if kind == "det":
                x0, y0, x1, y1 = x0 - 1, y0 - 1, x1 + 1, y1 + 1
            draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
            if kind == "det" and h >= 200:
                label = f"{d['class_names'][k]} {d['scores'][k]:.2f}"
                draw.text((x0 + 2, max(y0 - 13, 0)), label, fill=colour, font=font(11))
    return panel


def render_marker(draw: ImageDraw.ImageDraw, xy: tuple[int, int], rendered: bool | None) -> None:
    """RENDER (green) / SKIP (red) / ? (grey) badge."""
    text, colour = {True: ("RENDER", (40, 170, 60)), False: ("SKIP", (200, 50, 50))}.get(
        rendered, ("R/S ?", (90, 90, 90))
    )
    x, y = xy
    draw.rectangle([x, y, x + 74, y + 22], fill=colour)
    draw.text((x + 6, y + 3), text, fill=(255, 255, 255), font=font(14))


def header(run: Run, t: int, k: int, width: int, title: str = "") -> Image.Image:
    """Top bar: test name, phase, sim time, step, FPS, render/skip, date."""
    bar = Image.new("RGB", (width, 52), (12, 14, 18))
    d = ImageDraw.Draw(bar)
    meta = run.meta
    name = title or meta.get("test_name") or run.path.name
    phase = meta.get("phase", "")
    sim = run.metrics_at(t).get("sim", {})
    step = sim.get("step", k)
    d.text(
        (10, 4), f"{name}" + (f"  |  phase {phase}" if phase != "" else ""), fill=FG, font=font(18)
    )
    fps = sim.get("fps")
    fps_s = f"{fps:,.0f} FPS (sim)" if isinstance(fps, int | float) else "FPS -"
    date = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    trunc = "  |  bag cut short" if run.truncated else ""
    d.text(
        (10, 29),
        f"t = {t * 1e-9:7.2f} s   step {step}   {fps_s}   {date}{trunc}",
        fill=DIM,
        font=font(14),
    )
    render_marker(d, (width - 84, 15), run.rendered_at(t))
    return bar


def sidebar(
    run: Run, drone: str, t: int, size: tuple[int, int], extra: list[str] | None = None
) -> Image.Image:
    """Metrics of one drone (and of the run) at ``t``."""
    bar = Image.new("RGB", size, BG)
    d = ImageDraw.Draw(bar)
    m = run.drone_metrics(drone, t)
    sim = run.metrics_at(t).get("sim", {})
    s = run.drones.get(drone)
    gt = s.latest("gt", t) if s else None
    det = s.latest("det", t) if s else None
    pos = s.latest("pos", t) if s else None
    lines = [
        (drone, FG, 18),
        ("", FG, 8),
        (f"reward      {_fmt(m.get('reward'), 3)}", FG, 15),
        (f"return      {_fmt(m.get('return'), 2)}", FG, 15),
        (f"step        {_fmt(sim.get('step'))}", FG, 15),
        (f"targets     {_fmt(m.get('targets_found'))}", FG, 15),
        (f"GT boxes    {len(gt['boxes_xyxy_px']) if gt else '-'}", GT_COLOUR, 15),
        (f"detections  {len(det['boxes_xyxy_px']) if det else '-'}", DET_COLOUR, 15),
        ("", FG, 8),
        (f"FPS (sim)   {_fmt(sim.get('fps'), 0)}", FG, 15),
        (f"RAM MiB     {_fmt(sim.get('ram_mb'), 0)}", FG, 15),
        (f"VRAM MiB    {_fmt(sim.get('vram_mb'), 0)}", FG, 15),
    ]
    if pos is not None:
        lines += [("", FG, 8), (f"pos  {pos[0]:7.1f} {pos[1]:7.1f} {pos[2]:5.1f}", DIM, 13)]
    for e in extra or []:
        lines.append((e, FG, 14))
    lines += [("", FG, 8), ("[] ground truth", GT_COLOUR, 13), ("[] detector", DET_COLOUR, 13)]
    y = 8
    for text, colour, sz in lines:
        if text:
            d.text((10, y), text, fill=colour, font=font(sz))
        y += sz + 6
    return bar


def _even(n: int, m: int = 16) -> int:
    return max(m, int(math.ceil(n / m)) * m)


def _pad(img: Image.Image) -> np.ndarray:
    """Pad to multiples of 16 (H.264 macro blocks), as an array."""
    w, h = img.size
    W, H = _even(w), _even(h)
    if (W, H) != (w, h):
        canvas = Image.new("RGB", (W, H), BG)
        canvas.paste(img, (0, 0))
        img = canvas
    return np.asarray(img)


# ---------------------------------------------------------------------------------------------
# Modes


def _drone_name(run: Run, drone: int) -> str:
    names = run.drone_names()
    want = f"drone_{drone}"
    if want in run.drones:
        return want
    if 0 <= drone < len(names):
        return names[drone]
    raise BagError(f"drone {drone} not in the bag (drones: {', '.join(names)})")


def frames_single(run: Run, drone: int, cam_size: int = 480) -> Iterator[np.ndarray]:
    """Camera view of one drone with header and sidebar."""
    name = _drone_name(run, drone)
    s = run.drones[name]
    if s.images:
        ih, iw = s.images[0].shape[:2]
        size = (int(round(cam_size * iw / ih)), cam_size)
    else:
        size = (cam_size, cam_size)
    for k, t in enumerate(run.frame_t):
        canvas = Image.new("RGB", (size[0] + 260, size[1] + 52), BG)
        canvas.paste(header(run, t, k, canvas.size[0]), (0, 0))
        if s.images:
            canvas.paste(camera_panel(run, name, t, size), (0, 52))
        else:
            canvas.paste(map_panel(run, t, size, [name]), (0, 52))
        canvas.paste(sidebar(run, name, t, (260, size[1])), (size[0], 52))
        yield _pad(canvas)


def frames_grid(run: Run, tile: int = 0, max_drones: int = 64) -> Iterator[np.ndarray]:
    """All drones' views in tiles; per-tile reward and detection count; footer with totals."""
    names = [n for n in run.drone_names() if run.drones[n].images][:max_drones]
    if not names:
        raise BagError(f"bag {run.path} has no camera images for a grid")
    cols = int(math.ceil(math.sqrt(len(names))))
    rows = int(math.ceil(len(names) / cols))
    if tile <= 0:
        tile = max(720 // cols, min(240, 960 // cols))
    ih, iw = run.drones[names[0]].images[0].shape[:2]
    tw, th = tile, int(round(tile * ih / iw))
    width = cols * tw
    for k, t in enumerate(run.frame_t):
        canvas = Image.new("RGB", (width, 52 + rows * th + 30), BG)
        canvas.paste(header(run, t, k, width), (0, 0))
        total_det = 0
        for j, name in enumerate(names):
            x, y = (j % cols) * tw, 52 + (j // cols) * th
            panel = camera_panel(run, name, t, (tw, th))
            d = ImageDraw.Draw(panel)
            m = run.drone_metrics(name, t)
            s = run.drones[name]
            det = s.latest("det", t) or s.latest("gt", t)
            ndet = len(det["boxes_xyxy_px"]) if det else 0
            total_det += ndet
            label = f"{name.replace('drone_', 'd')} r={_fmt(m.get('return'), 1)} det={ndet}"
            d.rectangle([0, 0, tw, 15], fill=(0, 0, 0))
            d.text((3, 1), label, fill=FG, font=font(11))
            d.rectangle([0, 0, tw - 1, th - 1], outline=(0, 0, 0))
            canvas.paste(panel, (x, y))
        sim = run.metrics_at(t).get("sim", {})
        foot = ImageDraw.Draw(canvas)
        fy = 52 + rows * th + 6
        foot.text(
            (8, fy),
            f"{len(names)} drones   aggregate {_fmt(sim.get('fps'), 0)} FPS   "
            f"detections {total_det}   RAM {_fmt(sim.get('ram_mb'), 0)} MiB   "
            f"VRAM {_fmt(sim.get('vram_mb'), 0)} MiB",
            fill=FG,
            font=font(14),
        )
        yield _pad(canvas)


@functools.lru_cache(maxsize=4)
def _world_texture(
    seed: int, spec_json: str
) -> tuple[np.ndarray, tuple[float, float, float, float]] | None:
    import json

    try:
        from isr_sim_bridge.world import WorldSpec, generate_world, render_ground

        spec = WorldSpec.from_dict(json.loads(spec_json) if spec_json else None)
        world = generate_world(spec, seed)
        tex, _ = render_ground(world)
        extent = (world.x_min_m, world.y_min_m, world.size_x_m, world.size_y_m)
        targets = np.array([t.pos_enu_m[:2] for t in world.targets]).reshape(-1, 2)
        _world_targets[(seed, spec_json)] = targets
        return tex[::-1].copy(), extent
    except Exception:  # noqa: BLE001 - a plain background then
        return None


_world_targets: dict[tuple[int, str], np.ndarray] = {}


def _world_of(
    run: Run, names: list[str]
) -> tuple[np.ndarray | None, tuple[float, float, float, float], np.ndarray]:

    meta = run.meta
    seeds = meta.get("world_seeds") or []
    wod = meta.get("world_of_drone") or []
    w = 0
    if names and names[0].startswith("drone_") and names[0][6:].isdigit():
        i = int(names[0][6:])
        w = int(wod[i]) if i < len(wod) else 0
    if seeds and w < len(seeds):
        spec_json = json_dumps(meta.get("world_spec")) if meta.get("world_spec") else ""
        got = _world_texture(int(seeds[w]), spec_json)
        if got is not None:
            return got[0], got[1], _world_targets.get((int(seeds[w]), spec_json), np.zeros((0, 2)))
    pts = [run.drones[n].positions()[:, :2] for n in names if run.drones[n].pos]
    allp = np.concatenate(pts) if pts else np.zeros((1, 2))
    lo, hi = allp.min(0) - 20, allp.max(0) + 20
    side = float(max(hi - lo))
    return None, (float(lo[0]), float(lo[1]), side, side), np.zeros((0, 2))


def map_panel(run: Run, t: int, size: tuple[int, int], names: list[str]) -> Image.Image:
    """Top-down map: world texture (or plain), targets, trajectories up to ``t``, drones."""
    key = (id(run), size, tuple(names))
    base = _map_cache.get(key)
    if base is None:
        tex, extent, targets = _world_of(run, names)
        if tex is not None:
            img = Image.fromarray(tex).resize(size, Image.BILINEAR)
        else:
            img = Image.new("RGB", size, (58, 74, 58))
        base = (img, extent, targets)
        _map_cache.clear()
        _map_cache[key] = base
    img, (x0, y0, sxm, sym), targets = base
    panel = img.copy()
    d = ImageDraw.Draw(panel)
    w, h = size

    def px(p: np.ndarray) -> tuple[float, float]:
        return ((p[0] - x0) / sxm * w, h - (p[1] - y0) / sym * h)

    for p in targets:
        x, y = px(p)
        d.rectangle([x - 3, y - 3, x + 3, y + 3], outline=(255, 255, 255), width=1)
    for j, name in enumerate(names):
        s = run.drones[name]
        k = bisect.bisect_right(s.odom_t, t)
        if k == 0:
            continue
        pts = [px(p) for p in s.pos[:k]]
        colour = DRONE_COLOURS[j % len(DRONE_COLOURS)]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        x, y = pts[-1]
        d.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour, outline=(0, 0, 0))
    return panel


_map_cache: dict[Any, Any] = {}


def frames_map(run: Run, drone: int | None = None, size: int = 560) -> Iterator[np.ndarray]:
    """Top-down map of the drones of one world (the world of ``drone``, default the first)."""
    names = [n for n in run.drone_names() if run.drones[n].pos]
    if not names:
        raise BagError(
            f"bag {run.path} has no odometry for a map; it holds: {', '.join(run.topics)}"
        )
    wod = run.meta.get("world_of_drone") or []
    if drone is not None:
        first = _drone_name(run, drone)
    else:
        first = names[0]
    if wod and first.startswith("drone_") and first[6:].isdigit():
        w = wod[int(first[6:])] if int(first[6:]) < len(wod) else 0
        names = [
            n for n in names if n[6:].isdigit() and int(n[6:]) < len(wod) and wod[int(n[6:])] == w
        ]
        names = [first] + [n for n in names if n != first]
    for k, t in enumerate(run.frame_t):
        canvas = Image.new("RGB", (size + 260, size + 52), BG)
        canvas.paste(header(run, t, k, canvas.size[0]), (0, 0))
        canvas.paste(map_panel(run, t, (size, size), names), (0, 52))
        bar = Image.new("RGB", (260, size), BG)
        d = ImageDraw.Draw(bar)
        d.text((10, 8), "drone   return   found", fill=FG, font=font(15))
        total = 0
        for j, name in enumerate(names[:24]):
            m = run.drone_metrics(name, t)
            found = m.get("targets_found")
            total += int(found) if isinstance(found, int | float) else 0
            colour = DRONE_COLOURS[j % len(DRONE_COLOURS)]
            d.text(
                (10, 32 + 19 * j),
                f"{name.replace('drone_', 'd'):<6} {_fmt(m.get('return'), 1):>8} {_fmt(found):>6}",
                fill=colour,
                font=font(14),
            )
        d.text((10, size - 30), f"targets found (sum) {total}", fill=FG, font=font(15))
        canvas.paste(bar, (size, 52))
        yield _pad(canvas)


def _nearest(times: list[int], t: int) -> int:
    k = bisect.bisect_left(times, t)
    if k <= 0:
        return 0
    if k >= len(times):
        return len(times) - 1
    return k if times[k] - t < t - times[k - 1] else k - 1


def frames_side_by_side(
    run_a: Run, run_b: Run, drone: int, cam_size: int = 320
) -> Iterator[np.ndarray]:
    """Two runs of one drone next to each other, aligned by sim time, with the position error."""
    na, nb = _drone_name(run_a, drone), _drone_name(run_b, drone)
    sa, sb = run_a.drones[na], run_b.drones[nb]
    pa, pb = sa.positions(), sb.positions()
    # position error over the common time span (b sampled at a's odometry times)
    err_t, err = [], []
    for k, t in enumerate(sa.odom_t):
        if not sb.odom_t:
            break
        j = _nearest(sb.odom_t, t)
        err_t.append(t)
        err.append(float(np.linalg.norm(pa[k] - pb[j])))
    err_max = max(err + [1.0])
    times = run_a.frame_t
    label_a = run_a.meta.get("vehicle") or run_a.path.name
    label_b = run_b.meta.get("vehicle") or run_b.path.name
    panel_w = cam_size
    has_cam = bool(sa.images) and bool(sb.images)
    width = 2 * panel_w + 260
    plot_h = 150
    for k, t in enumerate(times):
        tb = run_b.frame_t[_nearest(run_b.frame_t, t)]
        canvas = Image.new("RGB", (width, 52 + 22 + panel_w + plot_h), BG)
        canvas.paste(
            header(
                run_a, t, k, width, title=f"{run_a.meta.get('test_name') or 'parity'}: side by side"
            ),
            (0, 0),
        )
        d = ImageDraw.Draw(canvas)
        d.text((8, 54), f"A: {label_a}", fill=FG, font=font(14))
        d.text((panel_w + 8, 54), f"B: {label_b}", fill=FG, font=font(14))
        if has_cam:
            canvas.paste(camera_panel(run_a, na, t, (panel_w, panel_w)), (0, 74))
            canvas.paste(camera_panel(run_b, nb, tb, (panel_w, panel_w)), (panel_w, 74))
        else:
            both = _TwoRunMap(run_a, run_b, na, nb)
            canvas.paste(both.panel(t, tb, (2 * panel_w, panel_w)), (0, 74))
        # sidebar: both metrics and the error now
        ma, mb = run_a.drone_metrics(na, t), run_b.drone_metrics(nb, tb)
        e_now = err[_nearest(err_t, t)] if err_t else float("nan")
        bar = ImageDraw.Draw(canvas)
        x = 2 * panel_w + 10
        rows = [
            (f"{na}", FG),
            (f"return A  {_fmt(ma.get('return'), 2)}", FG),
            (f"return B  {_fmt(mb.get('return'), 2)}", FG),
            (f"reward A  {_fmt(ma.get('reward'), 3)}", FG),
            (f"reward B  {_fmt(mb.get('reward'), 3)}", FG),
            (f"found A   {_fmt(ma.get('targets_found'))}", FG),
            (f"found B   {_fmt(mb.get('targets_found'))}", FG),
            (f"pos error {e_now:6.2f} m", (255, 120, 120)),
            (f"max error {err_max if err else float('nan'):6.2f} m", DIM),
        ]
        for j, (text, colour) in enumerate(rows):
            bar.text((x, 60 + 22 * j), text, fill=colour, font=font(15))
        # error plot
        y0 = 74 + panel_w
        bar.rectangle([0, y0, width, y0 + plot_h], fill=(16, 18, 22))
        bar.text((8, y0 + 4), "position error A-B (m) over sim time", fill=DIM, font=font(12))
        if err_t:
            t0, t1 = err_t[0], max(err_t[-1], err_t[0] + 1)
            pts = [
                (
                    10 + (tt - t0) / (t1 - t0) * (width - 20),
                    y0 + plot_h - 8 - e / err_max * (plot_h - 30),
                )
                for tt, e in zip(err_t, err, strict=True)
                if tt <= t
            ]
            if len(pts) > 1:
                bar.line(pts, fill=(255, 120, 120), width=2)
            bar.text((width - 90, y0 + 4), f"max {err_max:.2f}", fill=DIM, font=font(12))
        yield _pad(canvas)


class _TwoRunMap:
    """Trajectories of one drone from two runs on one plain map (parity without cameras)."""

    def __init__(self, a: Run, b: Run, na: str, nb: str) -> None:
        self.a, self.b, self.na, self.nb = a, b, na, nb
        pts = np.concatenate(
            [a.drones[na].positions()[:, :2], b.drones[nb].positions()[:, :2], np.zeros((1, 2))]
        )
        self.lo = pts.min(0) - 10
        self.side = float(max(pts.max(0) + 10 - self.lo))

    def panel(self, ta: int, tb: int, size: tuple[int, int]) -> Image.Image:
        img = Image.new("RGB", size, (40, 48, 40))
        d = ImageDraw.Draw(img)
        w, h = size
        scale = min(w, h) / self.side
        for run, name, t, colour in (
            (self.a, self.na, ta, (80, 170, 255)),
            (self.b, self.nb, tb, (255, 140, 60)),
        ):
            s = run.drones[name]
            k = bisect.bisect_right(s.odom_t, t)
            pts = [
                ((p[0] - self.lo[0]) * scale, h - (p[1] - self.lo[1]) * scale) for p in s.pos[:k]
            ]
            if len(pts) > 1:
                d.line(pts, fill=colour, width=2)
            if pts:
                x, y = pts[-1]
                d.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour)
        return img


# ---------------------------------------------------------------------------------------------
# Encoding


def encode(
    frames: Iterator[np.ndarray], out: str | Path, fps: float = 10.0
) -> tuple[int, tuple[int, int]]:
    """Write frames (same size) as H.264 mp4; returns (frame count, (width, height)).

    Written atomically: frames go to a temporary file next to ``out`` that replaces it only when
    encoding finished, so a crash or a kill never leaves a truncated video under ``out`` (the
    temporary file of a killed run is removed by the next write, see
    :func:`isr_direct_dynamics.io_checks.atomic_output`).
    """
    from isr_direct_dynamics.io_checks import atomic_output

    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        raise BagError("no frames to encode") from None
    with atomic_output(out) as tmp:
        return _encode_to(first, it, tmp, fps)


def _encode_to(
    first: np.ndarray, it: Iterator[np.ndarray], out: Path, fps: float
) -> tuple[int, tuple[int, int]]:
    import imageio_ffmpeg

    h, w = first.shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(out),
        (w, h),
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        quality=None,
        bitrate=None,
        output_params=["-crf", "23", "-preset", "veryfast", "-movflags", "+faststart", "-f", "mp4"],
        macro_block_size=16,
        ffmpeg_log_level="error",
    )
    writer.send(None)
    n = 0
    try:
        for fr in [first, *()]:
            writer.send(np.ascontiguousarray(fr))
            n += 1
        for fr in it:
            if fr.shape[:2] != (h, w):
                raise ValueError(
                    f"frame {n} has size {fr.shape[1]}x{fr.shape[0]}, expected {w}x{h}"
                )
            writer.send(np.ascontiguousarray(fr))
            n += 1
    finally:
        writer.close()
    return n, (w, h)


@dataclass
class VideoResult:
    """What :func:`make_video` wrote."""

    path: Path
    frames: int
    width: int
    height: int
    seconds: float
    truncated: bool
    mode: str


def make_video(
    bag: str | Path,
    out: str | Path,
    mode: str = "single",
    drone: int = 0,
    bag2: str | Path | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
) -> VideoResult:
    """Render ``bag`` (and ``bag2`` for side-by-side) to an H.264 mp4 in ``mode``."""
    import time

    if mode not in MODES:
        raise ValueError(f"unknown video mode {mode!r} (choose {', '.join(MODES)})")
    t0 = time.perf_counter()
    need = {"single": "any", "grid": "image", "side-by-side": "any", "map": "odom"}[mode]
    run = load_run(bag, need)
    if mode == "single":
        frames = frames_single(run, drone)
    elif mode == "grid":
        frames = frames_grid(run)
    elif mode == "map":
        frames = frames_map(run, drone if drone else None)
    else:
        if bag2 is None:
            raise ValueError("side-by-side needs --bag2 OTHER_BAG")
        frames = frames_side_by_side(run, load_run(bag2, "any"), drone)
    if max_frames:
        frames = (f for k, f in enumerate(frames) if k < max_frames)
    if fps is None:
        dt = run.meta.get("control_dt_s")
        fps = min(30.0, 1.0 / float(dt)) if isinstance(dt, int | float) and dt > 0 else 10.0
    n, (w, h) = encode(frames, out, fps)
    return VideoResult(Path(out), n, w, h, time.perf_counter() - t0, run.truncated, mode)


def summarize_bag(bag: str | Path) -> dict[str, Any]:
    """Topic counts of a bag (for messages and tests)."""
    src = BagSource(bag)
    counts: dict[str, int] = defaultdict(int)
    for topic, _, _ in src.messages():
        counts[topic] += 1
    return {"topics": dict(src.topics), "counts": dict(counts), "truncated": src.truncated}
