"""``isr world`` subcommands (export a world as JSON/USD, draw a map) and ``isr bench world``.

- ``isr world export --seed S [--spec YAML] [--set k=v ...] [--json OUT.json] [--usd OUT.usda]``
- ``isr world show (--seed S | --world IN.json) [--spec YAML] [--set k=v ...] --out map.png``
- ``isr bench world [--worlds N] [--seed S] [--json]``: time the generator, print figures.

User errors (no output given, bad spec, missing file) raise :class:`ConfigError`, ``ValueError``
or ``FileNotFoundError``, which the ``isr`` entry point prints as one ``error:`` line.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from isr_direct_dynamics.config import apply_overrides, json_dumps, read_yaml
from isr_sim_bridge.world import World, WorldSpec, generate_world, generate_worlds

CLASS_COLORS: dict[str, str] = {"vehicle": "#ff2a2a", "person": "#ffe600", "structure": "#ff4dff"}
"""Map colour of each target class in ``isr world show``."""


def load_spec(path: str | Path | None, overrides: list[str] | None = None) -> WorldSpec:
    """The :class:`WorldSpec` of a YAML file (or the defaults) with ``key=value`` overrides.

    The file holds the spec's fields at top level, or under a top-level ``world:`` section.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        data = read_yaml(path, "world spec file")
        if set(data) == {"world"} and isinstance(data["world"], dict):
            data = data["world"]
    return WorldSpec.from_dict(apply_overrides(data, overrides or []))


def plot_world(world: World, out: str | Path, dpi: int = 100) -> Path:
    """Draw a top-down map of ``world`` into the PNG ``out`` and return its path.

    Shows the ground texture, buildings (outlined), towers and tree clusters (hatched), targets
    coloured by class (moving ones with their path and heading), no-fly zones (red, hatched), the
    geofence (cyan dashes) and the spawn area (green dashes).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Polygon, Rectangle

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rgb, _ = world.ground()
    x0, y0 = world.x_min_m, world.y_min_m
    x1, y1 = x0 + world.size_x_m, y0 + world.size_y_m
    fig = Figure(figsize=(10.0, 10.6), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.08, 0.1, 0.88, 0.84))
    ax.imshow(rgb, origin="lower", extent=(x0, x1, y0, y1), interpolation="nearest")

    for box in world.boxes:
        lo, hi = box.min_m, box.max_m
        face = tuple(c / 255.0 for c in box.rgb)
        hatch = {"tower": "xxx", "tree_cluster": "..."}.get(box.kind)
        ax.add_patch(
            Rectangle(
                (lo[0], lo[1]), hi[0] - lo[0], hi[1] - lo[1], facecolor=face,
                edgecolor="black", linewidth=0.8, hatch=hatch, zorder=3,
            )
        )  # fmt: skip
        if box.kind != "building":
            ax.text(hi[0], hi[1], f"{hi[2]:.0f} m", fontsize=6, color="white", zorder=4)

    for z in world.no_fly_zones:
        (a, b), (c, d) = z.min_xy_m, z.max_xy_m
        ax.add_patch(
            Rectangle(
                (a, b), c - a, d - b, facecolor=(1, 0, 0, 0.12), edgecolor="red",
                hatch="//", linewidth=1.8, zorder=5,
            )
        )  # fmt: skip
    (a, b, _), (c, d, _) = world.geofence_min_m, world.geofence_max_m
    ax.add_patch(
        Rectangle((a, b), c - a, d - b, fill=False, edgecolor="cyan", ls="--", lw=1.5, zorder=5)
    )
    (a, b), (c, d) = world.spawn.min_xy_m, world.spawn.max_xy_m
    ax.add_patch(
        Rectangle(
            (a, b), c - a, d - b, facecolor=(0.2, 1.0, 0.2, 0.15), edgecolor="lime", ls="--",
            lw=1.8, zorder=5,
        )
    )  # fmt: skip
    ax.text(a + 1, d - 4, "spawn", color="lime", fontsize=8, zorder=6)

    for t in world.targets:
        col = CLASS_COLORS[t.cls]
        if t.path_xy_m:
            px, py = zip(*t.path_xy_m, strict=True)
            ax.plot(px, py, color=col, lw=0.8, ls=":", alpha=0.9, zorder=6)
        c, s = math.cos(t.yaw_rad), math.sin(t.yaw_rad)
        hl, hw = 0.5 * t.size_m[0], 0.5 * t.size_m[1]
        corners = [
            (t.pos_enu_m[0] + c * u - s * v, t.pos_enu_m[1] + s * u + c * v)
            for u, v in ((hl, hw), (-hl, hw), (-hl, -hw), (hl, -hw))
        ]
        ax.add_patch(
            Polygon(corners, closed=True, facecolor=col, edgecolor="black", lw=0.5, zorder=7)
        )
        ax.scatter([t.pos_enu_m[0]], [t.pos_enu_m[1]], s=90, facecolors="none", edgecolors=col,
                   linewidths=1.3, zorder=7)  # fmt: skip
        if t.speed_m_s > 0:
            ax.annotate(
                "", xytext=(t.pos_enu_m[0], t.pos_enu_m[1]),
                xy=(t.pos_enu_m[0] + 6 * c, t.pos_enu_m[1] + 6 * s),
                arrowprops={"arrowstyle": "->", "color": col, "lw": 1.3}, zorder=8,
            )  # fmt: skip

    counts = {k: sum(t.cls == k for t in world.targets) for k in CLASS_COLORS}
    moving = sum(t.speed_m_s > 0 for t in world.targets)
    n_build = sum(b.kind == "building" for b in world.boxes)
    ax.set_title(
        f"world seed {world.seed}: {n_build} buildings, {len(world.boxes) - n_build} obstacles, "
        + ", ".join(f"{n} {k}" for k, n in counts.items())
        + f" ({moving} moving), {len(world.no_fly_zones)} no-fly zones",
        fontsize=10,
    )
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x east [m]")
    ax.set_ylabel("y north [m]")
    handles = [
        Patch(facecolor=CLASS_COLORS[k], edgecolor="black", label=k) for k in CLASS_COLORS
    ] + [
        Patch(facecolor="#999999", edgecolor="black", label="building"),
        Patch(facecolor="#999999", edgecolor="black", hatch="xxx", label="tower / tree cluster"),
        Patch(facecolor=(1, 0, 0, 0.12), edgecolor="red", hatch="//", label="no-fly zone"),
        Line2D([], [], color="cyan", ls="--", label="geofence"),
        Line2D([], [], color="lime", ls="--", label="spawn area"),
        Line2D([], [], color="0.3", ls=":", label="moving target path"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=9, frameon=False)
    fig.savefig(out, dpi=dpi)
    return out


def _cmd_export(args: argparse.Namespace) -> int:
    if args.json is None and args.usd is None:
        raise ValueError(
            "isr world export needs at least one output: --json OUT.json and/or --usd OUT.usda"
        )
    from isr_direct_dynamics.io_checks import check_output_file

    for option, path in (("--json", args.json), ("--usd", args.usd)):
        if path is not None:
            check_output_file(path, option)
    world = generate_world(load_spec(args.spec, args.set), args.seed)
    if args.json is not None:
        print(f"wrote {world.save_json(args.json)}")
    if args.usd is not None:
        from isr_sim_bridge.usd_export import export_usd

        print(f"wrote {export_usd(world, args.usd)}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    if (args.seed is None) == (args.world is None):
        raise ValueError("isr world show needs exactly one of --seed S or --world IN.json")
    from isr_direct_dynamics.io_checks import check_output_file

    check_output_file(args.out, "--out")
    if args.world is not None:
        world = World.load_json(args.world)
    else:
        world = generate_world(load_spec(args.spec, args.set), args.seed)
    print(f"wrote {plot_world(world, args.out)}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.set)
    t0 = time.perf_counter()
    generate_world(spec, args.seed)
    t1 = time.perf_counter()
    batch = generate_worlds(spec, range(args.seed, args.seed + args.worlds), "cpu")
    t2 = time.perf_counter()
    result = {
        "target": "world",
        "worlds": args.worlds,
        "texture_texels": list(batch.ground_rgb.shape[1:3]),
        "first_world_s": round(t1 - t0, 4),
        "per_world_s": round((t2 - t1) / args.worlds, 4),
        "batch_s": round(t2 - t1, 4),
    }
    print(json_dumps(result) if args.json else "  ".join(f"{k}={v}" for k, v in result.items()))
    return 0


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=Path, default=None, help="WorldSpec YAML (default: built-in)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override one spec field, e.g. --set num_buildings=[2,4] (repeatable)",
    )  # fmt: skip


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    """Add ``isr world export|show`` to ``sub`` and ``isr bench world`` to ``bench_sub``."""
    world = sub.add_parser("world", help="procedural ISR worlds: export JSON/USD, draw a map")
    wsub = world.add_subparsers(dest="world_command", required=True, metavar="ACTION")

    exp = wsub.add_parser("export", help="generate a world and write it as JSON and/or USD")
    exp.add_argument("--seed", type=int, required=True, help="world seed")
    _spec_args(exp)
    exp.add_argument("--json", type=Path, default=None, metavar="OUT.json", help="world JSON")
    exp.add_argument(
        "--usd", type=Path, default=None, metavar="OUT.usda",
        help="USD stage (+ OUT_ground.png texture beside it)",
    )  # fmt: skip
    exp.set_defaults(func=_cmd_export)

    show = wsub.add_parser("show", help="draw a top-down map of a world as PNG")
    show.add_argument("--seed", type=int, default=None, help="world seed")
    show.add_argument("--world", type=Path, default=None, metavar="IN.json", help="saved world")
    _spec_args(show)
    show.add_argument("--out", type=Path, required=True, metavar="map.png", help="output PNG")
    show.set_defaults(func=_cmd_show)

    bench = bench_sub.add_parser("world", help="time the procedural world generator")
    bench.add_argument("--worlds", type=int, default=8, help="worlds in the timed batch")
    bench.add_argument("--seed", type=int, default=0, help="first seed")
    _spec_args(bench)
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(func=_cmd_bench)
