"""``isr yolo ...``: render a YOLO dataset, train the detector, evaluate it, draw its predictions.

- ``isr yolo dataset --out DIR [--train-worlds N] [--val-worlds M] [--first-seed S]
  [--drones-per-world D] [--frames-per-drone F] [--resolution evaluation] [--altitude 15,60]``
- ``isr yolo train --data DIR/data.yaml --out RUN [--config YOLO.yaml] [--set key=value ...]``:
  trains offline on CPU and prints the mAP50 on the held-out (val) worlds at the end.
- ``isr yolo eval --weights best.pt --data DIR``: mAP50 of trained weights on a split.
- ``isr yolo predict --weights best.pt --world-seed S --out grid.png``: render views of one
  world, detect, and draw a grid of frames with predictions (class colours) and ground truth
  (white).

All run offline (see :mod:`isr_sim_bridge.yolo`). User errors raise ``ConfigError``,
``ValueError`` or ``FileNotFoundError`` naming the bad value; the ``isr`` entry point prints them
as one ``error:`` line.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import yaml

from isr_direct_dynamics.config import (
    apply_overrides,
    from_dict,
    json_dumps,
    read_yaml,
    run_command,
    to_dict,
)

CLASS_RGB: tuple[tuple[int, int, int], ...] = ((255, 42, 42), (255, 230, 0), (255, 77, 255))
"""Box colour of each target class (index = class id) in ``isr yolo predict`` grids."""


def _float_pair(text: str) -> tuple[float, float]:
    parts = text.replace(" ", "").split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (two numbers), got {text!r}") from None
    return lo, hi


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def load_yolo_config(path: str | Path | None, overrides: list[str] | None = None) -> Any:
    """The :class:`~isr_sim_bridge.yolo.YoloConfig` of a YAML file (or defaults) + overrides.

    The file holds the fields at top level or under a top-level ``yolo:`` section.
    """
    from isr_sim_bridge.yolo import YoloConfig

    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        data = read_yaml(path, "YOLO config file")
        if set(data) == {"yolo"} and isinstance(data["yolo"], dict):
            data = data["yolo"]
    return from_dict(YoloConfig, apply_overrides(data, overrides or []))


def _dataset_root(data: str | Path) -> Path:
    path = Path(data)
    root = path.parent if path.suffix in (".yaml", ".yml") else path
    if not (root / "data.yaml").is_file():
        raise FileNotFoundError(f"not a YOLO dataset (no data.yaml): {data}")
    return root


def _cmd_dataset(args: argparse.Namespace) -> int:
    from isr_direct_dynamics.io_checks import check_output_dir
    from isr_sim_bridge.detections import DetectionConfig
    from isr_sim_bridge.world_cli import load_spec
    from isr_sim_bridge.yolo import ViewSamplingConfig, make_yolo_dataset

    check_output_dir(args.out, "--out")
    views = ViewSamplingConfig(altitude_m=args.altitude, target_bias=args.target_bias)
    train = list(range(args.first_seed, args.first_seed + args.train_worlds))
    val = list(range(train[-1] + 1, train[-1] + 1 + args.val_worlds))
    t0 = time.perf_counter()
    info = make_yolo_dataset(
        args.out, train, args.drones_per_world, args.frames_per_drone, args.resolution,
        val_world_seeds=val, world_spec=load_spec(args.spec, args.set), views=views,
        detection=DetectionConfig(min_box_size_px=args.min_box_px), seed=args.seed,
    )  # fmt: skip
    print(f"wrote {info.data_yaml} in {time.perf_counter() - t0:.1f} s")
    for split in ("train", "val"):
        seeds = info.train_world_seeds if split == "train" else info.val_world_seeds
        print(
            f"  {split}: {info.num_images[split]} images ({info.empty_images[split]} without "
            f"targets) from world seeds {seeds[0]}..{seeds[-1]}, boxes {info.num_boxes[split]}"
        )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from isr_direct_dynamics.io_checks import check_output_dir
    from isr_sim_bridge.yolo import YoloDetector, evaluate_map50, train_yolo

    check_output_dir(args.out, "--out")
    root = _dataset_root(args.data)
    config = load_yolo_config(args.config, args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "yolo_config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    t0 = time.perf_counter()
    best = train_yolo(root / "data.yaml", config, out)
    train_s = time.perf_counter() - t0
    detector = YoloDetector(best, conf=config.conf, iou=config.iou, device=config.device,
                            imgsz=config.imgsz, max_det=config.max_det)  # fmt: skip
    aps = evaluate_map50(detector, root, "val", conf=config.eval_conf, per_class=True)
    map50 = sum(aps.values()) / len(aps) if aps else 0.0
    result = {"weights": str(best), "train_s": round(train_s, 1), "val_map50": round(map50, 4),
              "val_ap50": {detector.names[c]: round(a, 4) for c, a in aps.items()}}  # fmt: skip
    (out / "result.json").write_text(json_dumps(result, indent=1) + "\n")
    print(f"best weights: {best}")
    print(f"training time: {train_s:.1f} s")
    print(f"mAP50 on held-out rendered frames ({root / 'images' / 'val'}): {map50:.4f}")
    print("  AP50 per class: " + _format_aps(aps, detector.names))
    return 0


def _format_aps(aps: dict[int, float], names: dict[int, str]) -> str:
    return ", ".join(f"{names.get(c, c)} {a:.4f}" for c, a in aps.items())


def _cmd_eval(args: argparse.Namespace) -> int:
    from isr_sim_bridge.yolo import YoloDetector, evaluate_map50

    root = _dataset_root(args.data)
    detector = YoloDetector(args.weights, device=args.device)
    aps = evaluate_map50(detector, root, args.split, conf=args.conf, per_class=True)
    map50 = sum(aps.values()) / len(aps) if aps else 0.0
    print(f"mAP50 ({args.split}, {root}): {map50:.4f}")
    print("  AP50 per class: " + _format_aps(aps, detector.names))
    return 0


def draw_grid(
    images: Any,
    predictions: list[Any],
    ground_truth: list[Any] | None,
    names: dict[int, str],
    columns: int | None = None,
    min_tile_px: int = 256,
) -> Any:
    """A PIL image: frames in a grid, predicted boxes (class colour, score) and GT boxes (white).

    Small frames are enlarged by an integer factor (nearest) to at least ``min_tile_px`` wide.
    """
    from PIL import Image, ImageDraw

    n = len(images)
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    h, w = int(images[0].shape[0]), int(images[0].shape[1])
    k = max(1, math.ceil(min_tile_px / w))
    grid = Image.new("RGB", (cols * w * k, rows * h * k), (0, 0, 0))
    for i in range(n):
        tile = Image.fromarray(images[i]).resize((w * k, h * k), Image.NEAREST)
        draw = ImageDraw.Draw(tile)
        if ground_truth is not None:
            for box in ground_truth[i].boxes_xyxy.tolist():
                draw.rectangle([v * k for v in box], outline=(255, 255, 255), width=1)
        p = predictions[i]
        for box, score, c in zip(
            p.boxes_xyxy.tolist(), p.scores.tolist(), p.class_ids.tolist(), strict=True
        ):
            col = CLASS_RGB[c % len(CLASS_RGB)]
            draw.rectangle([v * k for v in box], outline=col, width=2)
            draw.text((box[0] * k, max(0.0, box[1] * k - 11)), f"{names.get(c, c)} {score:.2f}",
                      fill=col)  # fmt: skip
        grid.paste(tile, ((i % cols) * w * k, (i // cols) * h * k))
    return grid


def _cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from isr_direct_dynamics.io_checks import check_output_file

    check_output_file(args.out, "--out")

    from isr_sim_bridge.camera import CameraConfig, TiledCamera
    from isr_sim_bridge.detections import GroundTruthDetector
    from isr_sim_bridge.world import generate_worlds
    from isr_sim_bridge.world_cli import load_spec
    from isr_sim_bridge.yolo import (
        ViewSamplingConfig,
        YoloDetector,
        compute_map50,
        ground_truth_frames,
        sample_view_poses,
    )

    detector = YoloDetector(args.weights, conf=args.conf, device=args.device)
    cam_cfg = CameraConfig(resolution=args.resolution)
    cam_cfg.validate()
    world = generate_worlds(load_spec(args.spec, args.set), [args.world_seed])
    cam = TiledCamera(world, args.drones, cam_cfg, detector=GroundTruthDetector(world, cam_cfg))
    gen = torch.Generator().manual_seed(args.seed)
    views = ViewSamplingConfig(altitude_m=args.altitude)
    pos, quat = sample_view_poses(world, args.drones, cam_cfg, views, gen)
    frame = cam.render(pos, quat)
    images = frame.rgb.reshape(-1, *frame.rgb.shape[-3:]).numpy()
    gts = ground_truth_frames(frame.detections)
    preds = detector.predict(images)
    grid = draw_grid(images, preds, gts, detector.names)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    n_pred = sum(len(p) for p in preds)
    n_gt = sum(len(g) for g in gts)
    low = detector.predict(images, conf=0.001)
    print(f"wrote {out}: {len(images)} views of world {args.world_seed}, {n_pred} detections "
          f"(conf >= {args.conf}), {n_gt} ground-truth boxes, "
          f"mAP50 of these views {compute_map50(low, gts):.4f}")  # fmt: skip
    return 0


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction | None) -> None:
    """Add ``isr yolo dataset|train|eval|predict`` to ``sub`` (``bench_sub``: no YOLO benchmark)."""
    del bench_sub
    yolo = sub.add_parser("yolo", help="YOLO detector: render a dataset, train, evaluate, draw")
    ysub = yolo.add_subparsers(dest="yolo_command", required=True, metavar="ACTION")

    ds = ysub.add_parser("dataset", help="render frames and write a YOLO-format dataset")
    ds.add_argument("--out", type=Path, required=True, help="dataset directory")
    ds.add_argument("--train-worlds", type=_positive_int, default=32, help="training worlds")
    ds.add_argument("--val-worlds", type=_positive_int, default=8, help="held-out worlds")
    ds.add_argument("--first-seed", type=int, default=0, help="seed of the first world")
    ds.add_argument("--drones-per-world", type=_positive_int, default=4)
    ds.add_argument("--frames-per-drone", type=_positive_int, default=8)
    ds.add_argument("--resolution", default="evaluation", help="preset or WxH (e.g. 128x128)")
    ds.add_argument("--altitude", type=_float_pair, default=(15.0, 60.0), metavar="MIN,MAX",
                    help="drone altitude range, m")  # fmt: skip
    ds.add_argument("--target-bias", type=float, default=0.8, help="fraction of aimed views")
    ds.add_argument("--min-box-px", type=float, default=2.0, help="smallest labelled box, px")
    ds.add_argument("--seed", type=int, default=0, help="pose sampling seed")
    ds.add_argument("--spec", type=Path, default=None, help="WorldSpec YAML (default: built-in)")
    ds.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one world spec field (repeatable)")  # fmt: skip
    ds.set_defaults(func=_cmd_dataset)

    tr = ysub.add_parser("train", help="train on CPU offline; print mAP50 on held-out worlds")
    tr.add_argument("--data", type=Path, required=True, help="dataset directory or data.yaml")
    tr.add_argument("--out", type=Path, required=True, help="run directory")
    tr.add_argument("--config", type=Path, default=None, help="YoloConfig YAML")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a YoloConfig field, e.g. epochs=30 (repeatable)")  # fmt: skip
    tr.set_defaults(func=_cmd_train)

    ev = ysub.add_parser("eval", help="mAP50 of trained weights on a dataset split")
    ev.add_argument("--weights", type=Path, required=True, help="trained weights (best.pt)")
    ev.add_argument("--data", type=Path, required=True, help="dataset directory or data.yaml")
    ev.add_argument("--split", choices=("train", "val"), default="val")
    ev.add_argument("--conf", type=float, default=0.001, help="detection threshold for mAP")
    ev.add_argument("--device", default="cpu")
    ev.set_defaults(func=_cmd_eval)

    pr = ysub.add_parser("predict", help="render views of a world, detect, draw a PNG grid")
    pr.add_argument("--weights", type=Path, required=True, help="trained weights (best.pt)")
    pr.add_argument("--world-seed", type=int, required=True, help="world seed")
    pr.add_argument("--out", type=Path, required=True, metavar="grid.png", help="output PNG")
    pr.add_argument("--drones", type=_positive_int, default=16, help="views in the grid")
    pr.add_argument("--resolution", default="evaluation", help="preset or WxH")
    pr.add_argument("--altitude", type=_float_pair, default=(15.0, 60.0), metavar="MIN,MAX")
    pr.add_argument("--conf", type=float, default=0.25, help="detection threshold")
    pr.add_argument("--seed", type=int, default=0, help="pose sampling seed")
    pr.add_argument("--device", default="cpu")
    pr.add_argument("--spec", type=Path, default=None, help="WorldSpec YAML (default: built-in)")
    pr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one world spec field (repeatable)")  # fmt: skip
    pr.set_defaults(func=_cmd_predict)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m isr_sim_bridge.yolo_cli ACTION ...`` = ``isr yolo``."""
    import sys

    parser = argparse.ArgumentParser(prog="isr", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub, None)  # type: ignore[arg-type]
    args = parser.parse_args(["yolo", *(sys.argv[1:] if argv is None else argv)])
    return run_command(args.func, args)


if __name__ == "__main__":
    raise SystemExit(main())
