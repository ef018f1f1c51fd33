"""Command line of the tiled camera: ``isr render`` (a grid of views), ``isr bench camera``.

``isr render --world-seed 3 --drones 16 --out grid.png [--resolution 128x128]`` generates one
procedural world, places the drones inside its spawn rectangle at 20-60 m with varied headings,
renders every view in one batched call and writes a PNG grid with the ground-truth boxes and
class labels drawn on.

``isr bench camera --drones 256 --resolution 80x80 [--device cuda] [--json]`` times
rendering plus ground-truth boxes of all drones per step and prints one JSON object.
``frames_per_s`` counts drone frames (one image of one drone) per second of wall-clock time, from
the median step time (``frames_per_s_mean`` from the mean). ``frames_per_cpu_s`` divides by the
process CPU time instead (all threads): a measure of the work per frame that other processes on
the machine do not distort (with ``T`` free cores, ``frames_per_s <= T * frames_per_cpu_s``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import torch

from isr_direct_dynamics.config import json_dumps
from isr_direct_dynamics.io_checks import check_output_file
from isr_sim_bridge.camera import CameraConfig, TiledCamera, parse_resolution
from isr_sim_bridge.detections import DetectionConfig, GroundTruthDetector
from isr_sim_bridge.world_batch import TARGET_CLASSES, WorldBatch

CLASS_COLORS: tuple[tuple[int, int, int], ...] = ((255, 60, 60), (255, 230, 0), (0, 200, 255))
"""Box colour per target class in the rendered grid."""


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    """Add ``isr render`` and ``isr bench camera``."""
    p = sub.add_parser("render", help="render a grid of drone camera views with ground-truth boxes")
    p.add_argument("--world-seed", type=int, default=0, help="seed of the procedural world")
    p.add_argument("--drones", type=int, default=16, help="number of drones (views)")
    p.add_argument("--out", type=Path, default=Path("grid.png"), help="output PNG path")
    p.add_argument("--resolution", default="training", help="preset name or WxH (e.g. 128x128)")
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the drone placement (default: world seed)"
    )
    p.add_argument("--scale", type=int, default=0, help="integer upscaling of each view (0 = auto)")
    p.add_argument(
        "--pitch-deg", type=float, default=None, help="camera mount pitch (default: config)"
    )
    p.add_argument("--device", default="cpu", help="torch device")
    p.set_defaults(func=render_main)

    b = bench_sub.add_parser("camera", help="tiled camera + ground-truth boxes throughput")
    b.add_argument("--drones", type=int, default=256, help="total number of drones (cameras)")
    b.add_argument("--drones-per-world", type=int, default=16, help="drones sharing one world")
    b.add_argument("--resolution", default="80x80", help="preset name or WxH")
    b.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    b.add_argument("--json", action="store_true", help="print only the JSON object")
    b.add_argument("--duration-s", type=float, default=3.0, help="measured wall time")
    b.add_argument("--min-steps", type=int, default=20, help="at least this many measured steps")
    b.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: keep)"
    )
    b.add_argument("--no-compile", action="store_true", help="run the kernels eagerly")
    b.add_argument(
        "--torch-kernels",
        action="store_true",
        help="on CPU, run the torch kernels instead of the numba ones (for comparison)",
    )
    b.add_argument("--no-detections", action="store_true", help="rendering only")
    b.add_argument("--depth", action="store_true", help="also output depth images")
    b.add_argument("--world-seed", type=int, default=0, help="seed of the first world")
    b.add_argument(
        "--unique-worlds", type=int, default=4, help="distinct generated worlds (repeated)"
    )
    b.set_defaults(func=bench_main)


def _make_worlds(seed: int, count: int, unique: int, device: str) -> WorldBatch:
    from isr_sim_bridge.world import WorldSpec, generate_worlds

    unique = max(1, min(unique, count))
    base = generate_worlds(WorldSpec(), list(range(seed, seed + unique)), device)
    if unique == count:
        return base
    return base.select(torch.arange(count, device=base.device) % unique)


def place_drones(
    world: WorldBatch, drones_per_world: int, seed: int, tilt_deg: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drone poses ``(pos_enu_m (W, D, 3), quat_wxyz (W, D, 4))`` for renders and benchmarks.

    Uniform in each spawn rectangle at 20-60 m altitude, yaw uniform, roll and pitch normal with
    ``tilt_deg`` standard deviation.
    """
    from isr_direct_dynamics.math3d import quat_from_euler

    w, d = world.num_worlds, drones_per_world
    g = torch.Generator().manual_seed(seed)
    lo, hi = world.spawn_min_m.cpu(), world.spawn_max_m.cpu()
    xy = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.rand(w, d, 2, generator=g)
    z = 20.0 + 40.0 * torch.rand(w, d, 1, generator=g)
    yaw = torch.rand(w, d, generator=g) * 2 * math.pi
    tilt = math.radians(tilt_deg)
    roll = tilt * torch.randn(w, d, generator=g)
    pitch = tilt * torch.randn(w, d, generator=g)
    quat = quat_from_euler(roll, pitch, yaw)
    dev = world.device
    return torch.cat((xy, z), dim=-1).to(dev), quat.to(dev)


def render_main(args: argparse.Namespace) -> int:
    """``isr render``: write a PNG grid of the drones' views with ground-truth boxes."""
    from PIL import Image, ImageDraw

    if args.drones < 1:
        raise ValueError("--drones must be >= 1")
    check_output_file(args.out, "--out")
    overrides = {} if args.pitch_deg is None else {"mount_pitch_deg": args.pitch_deg}
    cfg = CameraConfig.from_preset(args.resolution, **overrides)
    world = _make_worlds(args.world_seed, 1, 1, args.device)
    seed = args.world_seed if args.seed is None else args.seed
    pos, quat = place_drones(world, args.drones, seed)
    det = GroundTruthDetector(world, cfg, DetectionConfig())
    cam = TiledCamera(world, args.drones, cfg, args.device, detector=det)
    out = cam.render(pos, quat)
    w_px, h_px = parse_resolution(cfg.resolution)
    scale = args.scale if args.scale > 0 else max(1, math.ceil(256 / max(w_px, h_px)))
    cols = math.ceil(math.sqrt(args.drones))
    rows = math.ceil(args.drones / cols)
    gap = 4
    grid = Image.new(
        "RGB", (cols * (w_px * scale + gap) + gap, rows * (h_px * scale + gap) + gap), (30, 30, 30)
    )
    rgb = out.rgb[0].contiguous().cpu().numpy()
    dets = out.detections
    total = 0
    for i in range(args.drones):
        tile = Image.fromarray(rgb[i]).resize((w_px * scale, h_px * scale), Image.NEAREST)
        draw = ImageDraw.Draw(tile)
        boxes = dets.boxes_xyxy[0, i].cpu()
        for t in torch.nonzero(dets.visible[0, i].cpu()).flatten().tolist():
            cls = int(dets.class_id[0, i, t])
            x0, y0, x1, y1 = (float(v) * scale for v in boxes[t])
            color = CLASS_COLORS[cls % len(CLASS_COLORS)]
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=color, width=max(1, scale // 2))
            draw.text((x0 + 1, max(0.0, y0 - 11)), TARGET_CLASSES[cls], fill=color)
            total += 1
        draw.text((3, 2), f"drone {i}  z={float(pos[0, i, 2]):.0f} m", fill=(255, 255, 255))
        r, c = divmod(i, cols)
        grid.paste(tile, (gap + c * (w_px * scale + gap), gap + r * (h_px * scale + gap)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"wrote {args.out} ({args.drones} views {cfg.resolution}, {total} ground-truth boxes)")
    return 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_main(args: argparse.Namespace) -> int:
    """``isr bench camera``: print one JSON object with the throughput of render + GT boxes."""
    from isr_direct_dynamics.threads import configure_threads

    configure_threads(args.threads)
    if args.drones < 1 or args.drones_per_world < 1 or args.drones % args.drones_per_world:
        raise ValueError("--drones must be a positive multiple of --drones-per-world")
    device = torch.device(args.device)
    num_worlds = args.drones // args.drones_per_world
    compile_ = not args.no_compile
    numba = False if args.torch_kernels else None
    cfg = CameraConfig(
        resolution=args.resolution, compile=compile_, depth=args.depth, cpu_kernels=numba
    )
    cfg.validate()
    t0 = time.perf_counter()
    world = _make_worlds(args.world_seed, num_worlds, args.unique_worlds, args.device)
    t_world = time.perf_counter() - t0
    det = None
    if not args.no_detections:
        det = GroundTruthDetector(
            world, cfg, DetectionConfig(compile=compile_, cpu_kernels=numba), device
        )
    cam = TiledCamera(world, args.drones_per_world, cfg, device, detector=det)
    pos0, quat = place_drones(world, args.drones_per_world, args.world_seed, tilt_deg=5.0)
    vel = torch.randn(pos0.shape, generator=torch.Generator().manual_seed(1)).to(device)

    def step(k: int) -> None:
        cam.render(pos0 + 0.05 * k * vel, quat)

    t0 = time.perf_counter()
    for k in range(3):  # compile / warm-up (layer kernels see several sizes)
        step(k)
    _sync(device)
    t_warm = time.perf_counter() - t0

    times, cpu_times, items = [], [], []
    k = 3
    t_start = time.perf_counter()
    while len(times) < args.min_steps or time.perf_counter() - t_start < args.duration_s:
        t0, c0 = time.perf_counter(), time.process_time()
        step(k)
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        items.append(cam.last_work_items)
        k += 1
    # breakdown: the same step split into stages (separately timed, synchronised)
    cam.collect_timings = True
    stage: dict[str, list[float]] = {}
    for _ in range(max(5, min(20, len(times) // 4))):
        step(k)
        k += 1
        for name, v in cam.timings.items():
            stage.setdefault(name, []).append(v)
    cam.collect_timings = False
    med = statistics.median(times)
    mean = statistics.fmean(times)
    n = args.drones
    result = {
        "benchmark": "camera",
        "frames_per_s": n / med,
        "frames_per_s_mean": n / mean,
        "frames_per_s_best": n / min(times),
        "drones": n,
        "worlds": num_worlds,
        "drones_per_world": args.drones_per_world,
        "resolution": f"{cam.width_px}x{cam.height_px}",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "compiled": compile_,
        "cpu_kernels": cam.numba_kernels,
        "gt_boxes": det is not None,
        "depth": bool(args.depth),
        "steps": len(times),
        "step_ms_median": med * 1e3,
        "step_ms_mean": mean * 1e3,
        "step_ms_min": min(times) * 1e3,
        "cpu_ms_per_step_median": statistics.median(cpu_times) * 1e3,
        "frames_per_cpu_s": n / statistics.median(cpu_times),
        "stage_ms_median": {name: statistics.median(v) * 1e3 for name, v in stage.items()},
        "box_work_items_mean": statistics.fmean(items) if items else 0.0,
        "warmup_s": t_warm,
        "world_generation_s": t_world,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "torch": torch.__version__,
    }
    if args.json:
        print(json_dumps(result))
    else:
        print(json_dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry: ``python -m isr_sim_bridge.camera_cli render|bench camera ...``.

    The same subcommands as ``isr render`` / ``isr bench camera`` once the module is listed in
    ``isr_px4_eval.cli.main.COMMAND_MODULES``.
    """
    parser = argparse.ArgumentParser(prog="python -m isr_sim_bridge.camera_cli")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = sub.add_parser("bench", help="benchmarks that print one JSON object")
    bench_sub = bench.add_subparsers(dest="bench_target", required=True, metavar="TARGET")
    register(sub, bench_sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
