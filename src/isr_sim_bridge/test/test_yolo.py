"""Tests of the YOLO module: NMS fallback, dataset writer, training, mAP50, ByteTrack, offline."""

from __future__ import annotations

import csv
import math
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from isr_direct_dynamics.config import ConfigError, from_dict
from isr_direct_dynamics.math3d import quat_from_euler
from isr_sim_bridge.camera import CameraConfig, TiledCamera
from isr_sim_bridge.detections import DetectionConfig, GroundTruthDetector
from isr_sim_bridge.torchvision_compat import ensure_torchvision_ops, nms_torch
from isr_sim_bridge.world import WorldSpec, advance_targets, generate_worlds
from isr_sim_bridge.world_batch import TARGET_CLASSES
from isr_sim_bridge.yolo import (
    ByteTrackStreams,
    FrameDetections,
    FrameGroundTruth,
    TrackerConfig,
    ViewSamplingConfig,
    YoloConfig,
    YoloDetector,
    box_iou,
    compute_ap_per_class,
    compute_map50,
    evaluate_map50,
    ground_truth_frames,
    load_yolo_split,
    make_yolo_dataset,
    pad_detections,
    read_yolo_labels,
    sample_view_poses,
    train_yolo,
    yolo_label_lines,
)


def _reference_nms(dets: torch.Tensor, scores: torch.Tensor, thr: float) -> list[int]:
    """Brute-force greedy NMS, one box at a time, as torchvision's CPU kernel does it."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))  # stable, descending
    x1, y1, x2, y2 = dets.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    suppressed = [False] * len(order)
    keep = []
    for a, i in enumerate(order):
        if suppressed[a]:
            continue
        keep.append(i)
        for b in range(a + 1, len(order)):
            j = order[b]
            if suppressed[b]:
                continue
            w = torch.clamp(torch.minimum(x2[i], x2[j]) - torch.maximum(x1[i], x1[j]), min=0)
            h = torch.clamp(torch.minimum(y2[i], y2[j]) - torch.maximum(y1[i], y1[j]), min=0)
            inter = w * h
            iou = inter / (area[i] + area[j] - inter)
            if float(iou) > thr:
                suppressed[b] = True
    return keep


def _random_boxes(n: int, gen: torch.Generator, dtype=torch.float32):
    xy = torch.rand(n, 2, generator=gen) * 100
    wh = torch.rand(n, 2, generator=gen) * 30 + 0.5
    dets = torch.cat((xy, xy + wh), dim=1).to(dtype)
    # Quantized scores give ties, which must be broken like torchvision (stable sort).
    scores = (torch.rand(n, generator=gen) * 20).round().to(dtype) / 20
    return dets, scores


@pytest.mark.unit
@pytest.mark.parametrize("n", [0, 1, 2, 7, 60, 300])
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.9])
def test_nms_torch_matches_brute_force_reference(n, thr):
    gen = torch.Generator().manual_seed(1000 * n + int(100 * thr))
    dets, scores = _random_boxes(n, gen)
    keep = nms_torch(dets, scores, thr, block_size=32)  # several blocks for n = 60, 300
    assert keep.dtype == torch.long
    assert keep.tolist() == _reference_nms(dets, scores, thr)


@pytest.mark.unit
def test_nms_torch_float64_and_degenerate_boxes():
    gen = torch.Generator().manual_seed(3)
    dets, scores = _random_boxes(80, gen, torch.float64)
    dets[::7, 2] = dets[::7, 0]  # zero-area boxes: IoU 0/0 = NaN never suppresses, as in C++
    keep = nms_torch(dets, scores, 0.4, block_size=16)
    assert keep.tolist() == _reference_nms(dets, scores, 0.4)


@pytest.mark.unit
def test_nms_torch_chain_of_overlaps_needs_greedy_order():
    # Box 1 overlaps 0 and 2; greedy keeps 0, drops 1, so 2 survives (fast-NMS would drop 2).
    dets = torch.tensor([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms_torch(dets, scores, 0.3).tolist() == [0, 2] == _reference_nms(dets, scores, 0.3)


@pytest.mark.unit
def test_nms_torch_rejects_bad_shapes():
    with pytest.raises(RuntimeError, match="shape"):
        nms_torch(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(RuntimeError, match="one score per box"):
        nms_torch(torch.zeros(3, 4), torch.zeros(2), 0.5)


@pytest.mark.unit
def test_torchvision_ops_nms_and_batched_nms_work_after_ensure():
    mode = ensure_torchvision_ops()
    assert mode in ("native", "fallback")
    assert ensure_torchvision_ops() == mode  # idempotent
    import torchvision

    gen = torch.Generator().manual_seed(5)
    dets, scores = _random_boxes(200, gen)
    keep = torchvision.ops.nms(dets, scores, 0.45)
    assert keep.tolist() == _reference_nms(dets, scores, 0.45)
    assert torch.ops.torchvision.nms(dets, scores, 0.45).tolist() == keep.tolist()
    # batched_nms = NMS per class: equal to running the reference class by class.
    idxs = torch.randint(0, 3, (200,), generator=gen)
    got = set(torchvision.ops.batched_nms(dets, scores, idxs, 0.45).tolist())
    want = set()
    for c in range(3):
        members = torch.nonzero(idxs == c).flatten()
        want |= {int(members[k]) for k in _reference_nms(dets[members], scores[members], 0.45)}
    assert got == want
    # torchvision's own fake (meta) kernel got registered on the operator at its import.
    assert torch._C._dispatch_has_kernel_for_dispatch_key("torchvision::nms", "Meta")


# ------------------------------------------------------------------------------ yolo module


@pytest.fixture(scope="session", autouse=True)
def _ultralytics_config_dir(tmp_path_factory):
    """ultralytics settings/fonts in a fresh temp dir (set before ultralytics is imported)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics_cfg")))
        yield


class NetworkGuard:
    """Refuses every DNS lookup and socket connection, recording the attempts."""

    def __init__(self, mp: pytest.MonkeyPatch) -> None:
        self.attempts: list[tuple] = []

        def refuse(*args, **kwargs):
            self.attempts.append(args[:2])
            raise OSError("network access is disabled in this test")

        mp.setattr(socket, "getaddrinfo", refuse)
        mp.setattr(socket, "create_connection", refuse)
        mp.setattr(socket.socket, "connect", lambda sock, addr: refuse(addr))
        mp.setattr(socket.socket, "connect_ex", lambda sock, addr: refuse(addr))


@pytest.mark.unit
def test_yolo_config_validates_and_names_the_field():
    assert YoloConfig().model == "yolo11n.yaml"
    with pytest.raises(ConfigError, match="imgsz"):
        YoloConfig(imgsz=100)
    with pytest.raises(ConfigError, match="model.*yolo11n.pt"):
        YoloConfig(model="yolo11n.pt")  # pretrained weights would be downloaded
    with pytest.raises(ConfigError, match="conf"):
        from_dict(YoloConfig, {"conf": 1.5})
    with pytest.raises(ConfigError, match="unknown config key 'epoch'"):
        from_dict(YoloConfig, {"epoch": 3})
    with pytest.raises(ConfigError, match="device"):
        YoloConfig(device="tpu")
    with pytest.raises(ConfigError, match="altitude_m"):
        ViewSamplingConfig(altitude_m=(60.0, 15.0))


@pytest.mark.unit
def test_yolo_label_lines_round_trip(tmp_path):
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 128.0, 96.0]])
    lines = yolo_label_lines(boxes, torch.tensor([2, 0]), 128, 96)
    assert lines[0] == "2 0.156250 0.416667 0.156250 0.416667"
    assert lines[1] == "0 0.500000 0.500000 1.000000 1.000000"
    (tmp_path / "a.txt").write_text("\n".join(lines) + "\n")
    gt = read_yolo_labels(tmp_path / "a.txt", 128, 96)
    assert gt.class_ids.tolist() == [2, 0]
    assert torch.allclose(gt.boxes_xyxy, boxes, atol=1e-3)
    assert len(read_yolo_labels(tmp_path / "missing.txt", 128, 96)) == 0


@pytest.mark.unit
def test_compute_map50_known_values():
    gt = [
        FrameGroundTruth(
            torch.tensor([[0, 0, 10, 10.0], [20, 20, 30, 30.0]]), torch.tensor([0, 1])
        ),
        FrameGroundTruth(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)),
    ]

    def det(boxes, scores, cls):
        return FrameDetections(
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            torch.tensor(scores, dtype=torch.float32),
            torch.tensor(cls, dtype=torch.long),
        )

    empty = det([], [], [])
    perfect = [det([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 1]), empty]
    ap_max = 0.995  # ultralytics' (and our) trapezoid over 101 recall points tops out at 0.995
    assert compute_map50(perfect, gt) == pytest.approx(ap_max)
    assert compute_map50([empty, empty], gt) == 0.0
    wrong_class = [det([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [1, 0]), empty]
    assert compute_map50(wrong_class, gt) == 0.0
    # Class 0 found, class 1 missed: mAP = (1 + 0) / 2.
    half = [det([[0, 0, 10, 10]], [0.9], [0]), empty]
    assert compute_map50(half, gt) == pytest.approx(ap_max / 2)
    assert compute_ap_per_class(half, gt) == pytest.approx({0: ap_max, 1: 0.0})
    # A higher-scored false positive (on the empty image) halves class 0's precision at recall 1.
    fp_first = [
        det([[0, 0, 10, 10], [20, 20, 30, 30]], [0.5, 0.8], [0, 1]),
        det([[1, 1, 5, 5]], [0.9], [0]),
    ]
    assert compute_map50(fp_first, gt) == pytest.approx((0.5 + ap_max) / 2, abs=0.01)
    # IoU just below 0.5 is a miss; the duplicate of a matched box is a false positive.
    shifted = [
        det([[0, 0, 10, 10], [0, 0, 10, 10], [25, 20, 35, 30]], [0.9, 0.8, 0.7], [0, 0, 1]),
        empty,
    ]
    assert (
        box_iou(torch.tensor([[25, 20, 35, 30.0]]), torch.tensor([[20, 20, 30, 30.0]]))[0, 0] < 0.5
    )
    assert compute_map50(shifted, gt) == pytest.approx(ap_max / 2)


def _render_single(world_seed, pose, t_s, camera, detection, spec=None):
    """Render one drone of one world at ``pose`` (x y z qw qx qy qz) after targets moved t_s."""
    world = generate_worlds(spec or WorldSpec(), [world_seed])
    if t_s > 0:
        advance_targets(world, t_s)
    cam = TiledCamera(world, 1, camera, detector=GroundTruthDetector(world, camera, detection))
    p = torch.tensor(pose, dtype=torch.float32)
    out = cam.render(p[:3].view(1, 1, 3), p[3:].view(1, 1, 4))
    return out.rgb[0, 0].numpy(), ground_truth_frames(out.detections)[0]


@pytest.mark.integration
def test_dataset_writer_writes_valid_yolo_labels_that_match_ground_truth(tmp_path):
    from PIL import Image

    cam = CameraConfig(resolution="96x72")
    detection = DetectionConfig(min_box_size_px=3.0)
    views = ViewSamplingConfig(altitude_m=(15.0, 30.0), target_dt_s=2.0)
    info = make_yolo_dataset(
        tmp_path / "ds", [11, 12, 13], drones_per_world=2, frames_per_drone=2, camera=cam,
        views=views, detection=detection, val_fraction=0.3, worlds_per_batch=2, seed=5,
    )  # fmt: skip
    assert info.train_world_seeds == [11, 12] and info.val_world_seeds == [13]
    assert info.num_images == {"train": 8, "val": 4}
    data = yaml.safe_load(info.data_yaml.read_text())
    assert data["names"] == dict(enumerate(TARGET_CLASSES)) and data["nc"] == 3
    assert Path(data["path"]) == info.root and data["train"] == "images/train"
    rows = list(csv.DictReader((info.root / "frames.csv").open()))
    assert len(rows) == 12
    total_boxes = 0
    for row in rows:
        split, stem = row["split"], row["image"]
        assert (int(row["world_seed"]) in info.val_world_seeds) == (split == "val")
        img = np.asarray(Image.open(info.root / "images" / split / f"{stem}.png"))
        assert img.shape == (72, 96, 3) and img.dtype == np.uint8
        label = info.root / "labels" / split / f"{stem}.txt"
        lines = [ln.split() for ln in label.read_text().splitlines()]
        assert len(lines) == int(row["boxes"])
        total_boxes += len(lines)
        for parts in lines:
            assert len(parts) == 5 and parts[0] in ("0", "1", "2")
            cx, cy, w, h = map(float, parts[1:])
            assert 0 < w <= 1 and 0 < h <= 1
            assert -1e-6 <= cx - w / 2 and cx + w / 2 <= 1 + 1e-6
            assert -1e-6 <= cy - h / 2 and cy + h / 2 <= 1 + 1e-6
        # Independent re-render at the recorded pose: same image, labels = visible GT boxes.
        pose = [float(row[k]) for k in ("x_m", "y_m", "z_m", "qw", "qx", "qy", "qz")]
        rgb, gt = _render_single(int(row["world_seed"]), pose, float(row["target_time_s"]), cam,
                                 detection)  # fmt: skip
        if float(row["target_time_s"]) == 0.0:
            assert np.array_equal(rgb, img)
        else:  # targets moved by one long step instead of several short ones: rounding only
            assert np.mean(rgb != img) < 0.01
        got = read_yolo_labels(label, 96, 72)
        assert got.class_ids.tolist() == gt.class_ids.tolist()
        assert torch.allclose(got.boxes_xyxy, gt.boxes_xyxy, atol=0.02)
    assert total_boxes > 0  # aimed views see targets
    images, gts = load_yolo_split(info.root, "val")
    assert images.shape == (4, 72, 96, 3) and len(gts) == 4


@pytest.mark.integration
def test_dataset_writer_rejects_bad_input_naming_it(tmp_path):
    with pytest.raises(ValueError, match="world seed 3 is in both"):
        make_yolo_dataset(tmp_path, [1, 2, 3], val_world_seeds=[3])
    with pytest.raises(ValueError, match="needs >= 2 world seeds"):
        make_yolo_dataset(tmp_path, [1])
    with pytest.raises(ValueError, match="frames_per_drone must be >= 1, got 0"):
        make_yolo_dataset(tmp_path, [1, 2], frames_per_drone=0)
    with pytest.raises(ConfigError, match="resolution"):
        make_yolo_dataset(tmp_path, [1, 2], resolution="big")


@pytest.mark.integration
def test_view_sampling_aims_at_targets_and_stays_above_roofs():
    world = generate_worlds(WorldSpec(), [3, 4])
    cam = CameraConfig(resolution="64x64")
    views = ViewSamplingConfig(altitude_m=(15.0, 20.0), target_bias=1.0, attitude_jitter_deg=0.0)
    gen = torch.Generator().manual_seed(0)
    pos, quat = sample_view_poses(world, 16, cam, views, gen)
    assert pos.shape == (2, 16, 3) and quat.shape == (2, 16, 4)
    assert torch.allclose(quat.norm(dim=-1), torch.ones(2, 16))
    assert (pos[..., 2] >= 15.0).all()
    det = GroundTruthDetector(world, cam).detect(TiledCamera(world, 16, cam).camera_pose(pos, quat))
    assert det.visible.any(-1).float().mean() > 0.6  # most aimed views see a target
    again = sample_view_poses(world, 16, cam, views, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], pos) and torch.equal(again[1], quat)


def _drone_sequence(world_seed, drones, frames, cam, step_m=0.3, dt_s=0.1):
    """Frames of ``drones`` drones, each aimed at a target then flying straight ahead slowly."""
    world = generate_worlds(WorldSpec(), [world_seed])
    views = ViewSamplingConfig(altitude_m=(18.0, 22.0), target_bias=1.0, attitude_jitter_deg=0.0)
    pos, quat = sample_view_poses(world, drones, cam, views, torch.Generator().manual_seed(1))
    yaw = torch.atan2(2 * (quat[..., 0] * quat[..., 3]), 1 - 2 * quat[..., 3] ** 2)
    quat = quat_from_euler(torch.zeros_like(yaw), torch.zeros_like(yaw), yaw)
    heading = torch.stack((torch.cos(yaw), torch.sin(yaw), torch.zeros_like(yaw)), -1)
    camera = TiledCamera(world, drones, cam, detector=GroundTruthDetector(world, cam))
    out = []
    for k in range(frames):
        frame = camera.render(pos + k * step_m * heading, quat)
        out.append((frame.rgb[0].numpy().copy(), frame.detections))
        advance_targets(world, dt_s)
    return out


def _match_ids(tracks, detections, gt_box, thr=0.5):
    """Id of the track updated with the detection that overlaps ``gt_box`` most (IoU > thr).

    Returns ``[id]``, or ``[]`` when no track's detection overlaps enough.
    """
    if len(tracks) == 0 or len(detections) == 0:
        return []
    iou = box_iou(gt_box[None], detections.boxes_xyxy)[0][tracks.det_index]
    best = int(iou.argmax())
    return [int(tracks.track_ids[best])] if iou[best] > thr else []


@pytest.mark.integration
def test_bytetrack_streams_keep_stable_ids_on_camera_sequences():
    cam = CameraConfig(resolution="128x96")
    seq = _drone_sequence(21, drones=3, frames=8, cam=cam)
    streams = ByteTrackStreams()
    history, inputs = [], []  # per frame: list over drones of FrameTracks / FrameDetections
    for _, det in seq:
        gts = ground_truth_frames(det)
        dets = [FrameDetections(g.boxes_xyxy, torch.full((len(g),), 0.9), g.class_ids) for g in gts]
        inputs.append(dets)
        history.append(streams.update(dets, stream_ids=[("w21", d) for d in range(3)]))
    assert sorted(streams.stream_ids) == [("w21", d) for d in range(3)]
    checked = 0
    for d in range(3):
        vis = torch.stack([det.visible[0, d] for _, det in seq])  # (frames, T)
        always = torch.nonzero(vis.all(0)).flatten().tolist()
        ids_of_target = {}
        for t in always:
            ids = set()
            for k, (_, det) in enumerate(seq):
                matched = _match_ids(history[k][d], inputs[k][d], det.boxes_xyxy[0, d, t])
                assert len(matched) == 1, f"drone {d} target {t} frame {k}: {matched}"
                ids |= set(matched)
            assert len(ids) == 1, f"drone {d} target {t} changed id: {ids}"
            ids_of_target[t] = ids.pop()
            checked += 1
        assert len(set(ids_of_target.values())) == len(ids_of_target)  # distinct targets, ids
        all_ids = {i for frame in history for i in frame[d].track_ids.tolist()}
        assert not all_ids or min(all_ids) == 1  # ids are per stream, starting at 1
    assert checked >= 2
    streams.reset([("w21", 0)])
    assert ("w21", 0) not in streams.stream_ids


# ------------------------------------------------------------ training (integration, slow)


TINY_CAMERA = CameraConfig(resolution="128x128")
TINY_DETECTION = DetectionConfig(min_box_size_px=4.0)
TINY_VIEWS = ViewSamplingConfig(altitude_m=(12.0, 25.0))
TINY_CONFIG = dict(imgsz=128, epochs=20, batch=16, warmup_epochs=0.0, close_mosaic=5,
                   optimizer="AdamW", lr0=0.004, scale=0.25, plots=False, seed=0)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_trained(tmp_path_factory):
    """A YOLO detector trained offline on a tiny rendered dataset; network refused throughout."""
    root = tmp_path_factory.mktemp("yolo_tiny")
    with pytest.MonkeyPatch.context() as mp:
        guard = NetworkGuard(mp)
        t0 = time.perf_counter()
        info = make_yolo_dataset(
            root / "data", list(range(100, 108)), drones_per_world=4, frames_per_drone=6,
            camera=TINY_CAMERA, views=TINY_VIEWS, detection=TINY_DETECTION,
            val_world_seeds=[900, 901, 902], seed=0,
        )  # fmt: skip
        t1 = time.perf_counter()
        best = train_yolo(info.data_yaml, YoloConfig(**TINY_CONFIG), root / "run")
        t2 = time.perf_counter()
        detector = YoloDetector(best, conf=0.25)
        map50 = evaluate_map50(detector, info.root, "val")
        tracking = _tiny_tracking_run(info, best)
    print(f"\ntiny YOLO: dataset {t1 - t0:.1f} s, training {t2 - t1:.1f} s, val mAP50 {map50:.4f}")
    return {"info": info, "best": best, "detector": detector, "map50": map50, "guard": guard,
            "root": root, "tracking": tracking}  # fmt: skip


TRACK_CONF = 0.15  # the tiny detector is weak: lower ByteTrack's thresholds with its confidence
TRACK_NMS_IOU = 0.45  # and it makes overlapping duplicates: suppress them harder for tracking
# Fusing low scores into the matching cost (1 - IoU * score) would push even a perfect overlap
# past match_thresh; with a weak detector ByteTrack matches on IoU alone.
TRACKER = TrackerConfig(track_high_thresh=TRACK_CONF, new_track_thresh=TRACK_CONF,
                        track_low_thresh=0.05, fuse_score=False)  # fmt: skip


def _tiny_tracking_run(info, best, frames=8, step_m=0.25, dt_s=0.05):
    """Track with the trained detector along a short flight from the held-out frame it does best.

    The start is the val frame whose best-scored true positive scores highest; the drone then
    moves slowly along its heading (re-rendered from the pose in frames.csv) and the detector's
    ByteTrack follows. Returns the tracks, the detections fed to the tracker and the ground truth
    of every frame, and the target slot of the start frame's true positive.
    """
    detector = YoloDetector(best, conf=TRACK_CONF, iou=TRACK_NMS_IOU, tracker=TRACKER)
    images, gts = load_yolo_split(info.root, "val")
    stems = [p.stem for p in sorted((info.root / "images" / "val").glob("*.png"))]
    preds = detector.predict(images)
    best_score, start = -1.0, None
    for i, (p, g) in enumerate(zip(preds, gts, strict=True)):
        if len(p) and len(g):
            iou = box_iou(p.boxes_xyxy, g.boxes_xyxy) * (p.class_ids[:, None] == g.class_ids)
            tp = iou.max(1).values > 0.5
            if tp.any() and float(p.scores[tp].max()) > best_score:
                best_score, start = float(p.scores[tp].max()), i
    assert start is not None, "the tiny detector found no held-out target at all"
    row = next(
        r for r in csv.DictReader((info.root / "frames.csv").open()) if r["image"] == stems[start]
    )
    world = generate_worlds(WorldSpec(), [int(row["world_seed"])])
    advance_targets(world, float(row["target_time_s"]))
    camera = TiledCamera(
        world, 1, TINY_CAMERA, detector=GroundTruthDetector(world, TINY_CAMERA, TINY_DETECTION)
    )
    pose = torch.tensor([float(row[k]) for k in ("x_m", "y_m", "z_m", "qw", "qx", "qy", "qz")])
    pos, quat = pose[:3].view(1, 1, 3), pose[3:].view(1, 1, 4)
    yaw = float(torch.atan2(2 * (quat[..., 0] * quat[..., 3] + quat[..., 1] * quat[..., 2]),
                            1 - 2 * (quat[..., 2] ** 2 + quat[..., 3] ** 2)))  # fmt: skip
    heading = torch.tensor([math.cos(yaw), math.sin(yaw), 0.0])
    tracks, inputs, truth = [], [], []
    for k in range(frames):
        out = camera.render(pos + k * step_m * heading, quat)
        frame = out.rgb[0].numpy()
        inputs.append(detector.predict(frame, conf=min(TRACK_CONF, TRACKER.track_low_thresh))[0])
        tracks.append(detector.track(frame, stream_ids=["drone0"])[0])
        truth.append(out.detections)
        advance_targets(world, dt_s)
    # target slot of the start frame's true positive: the visible GT box it overlaps most
    det0, g0 = truth[0], truth[0].boxes_xyxy[0, 0]
    score = box_iou(preds[start].boxes_xyxy, g0).amax(0) * det0.visible[0, 0]
    return {"tracks": tracks, "inputs": inputs, "truth": truth, "target": int(score.argmax()),
            "start_image": stems[start], "start_score": best_score}  # fmt: skip


def _random_box_map50(info, gts, per_image, seed):
    """mAP50 of a chance predictor: boxes of training-set sizes at random places and classes."""
    wh = []
    for label in (info.root / "labels" / "train").glob("*.txt"):
        g = read_yolo_labels(label, 128, 128)
        wh.append(g.boxes_xyxy[:, 2:] - g.boxes_xyxy[:, :2])
    wh = torch.cat(wh)
    gen = torch.Generator().manual_seed(seed)
    preds = []
    for _ in gts:
        size = wh[torch.randint(len(wh), (per_image,), generator=gen)]
        lo = torch.rand(per_image, 2, generator=gen) * (128 - size)
        scores = torch.rand(per_image, generator=gen)
        classes = torch.randint(3, (per_image,), generator=gen)
        preds.append(FrameDetections(torch.cat((lo, lo + size), 1), scores, classes))
    return compute_map50(preds, gts)


@pytest.mark.integration
@pytest.mark.slow
def test_tiny_yolo_beats_chance_on_held_out_worlds(tiny_trained):
    info, map50 = tiny_trained["info"], tiny_trained["map50"]
    assert info.num_boxes["train"]["vehicle"] > 50
    _, gts = load_yolo_split(info.root, "val")
    chance = max(_random_box_map50(info, gts, k, s) for k in (10, 50) for s in (0, 1, 2))
    print(f"held-out mAP50 {map50:.4f} vs chance (random boxes) {chance:.4f}")
    assert chance < 0.01
    assert map50 > max(0.03, 5 * chance)


@pytest.mark.integration
@pytest.mark.slow
def test_tiny_yolo_predict_is_batched_and_consistent(tiny_trained):
    detector = tiny_trained["detector"]
    images, _ = load_yolo_split(tiny_trained["info"].root, "val")
    batch = detector.predict(torch.from_numpy(images[:6]))
    single = [detector.predict(images[i : i + 1])[0] for i in range(6)]
    assert len(batch) == 6
    for b, s in zip(batch, single, strict=True):
        assert b.boxes_xyxy.dtype == torch.float32 and b.class_ids.dtype == torch.long
        assert b.boxes_xyxy.shape == (len(b), 4) and ((b.scores >= 0.25) & (b.scores <= 1)).all()
        assert b.class_ids.tolist() == s.class_ids.tolist()
        assert torch.allclose(b.boxes_xyxy, s.boxes_xyxy, atol=0.5)
    with pytest.raises(ValueError, match="shape"):
        detector.predict(np.zeros((2, 8, 8), dtype=np.uint8))
    padded = pad_detections(batch, 4)
    assert padded.boxes_xyxy.shape == (6, 4, 4) and padded.valid.shape == (6, 4)
    for i, b in enumerate(batch):
        m = min(4, len(b))
        assert padded.valid[i].sum() == m and (padded.class_ids[i, m:] == -1).all()
        assert torch.equal(padded.scores[i, :m], b.scores.sort(descending=True).values[:m])


@pytest.mark.integration
@pytest.mark.slow
def test_tiny_yolo_tracking_keeps_ids_per_target(tiny_trained):
    run = tiny_trained["tracking"]
    t = run["target"]
    ids = []
    for k, det in enumerate(run["truth"]):
        if det.visible[0, 0, t]:
            ids += _match_ids(run["tracks"][k], run["inputs"][k], det.boxes_xyxy[0, 0, t])
    print(f"start {run['start_image']} (score {run['start_score']:.2f}): target {t} ids {ids}")
    assert len(ids) >= 3, f"target {t} tracked in only {len(ids)} of {len(run['truth'])} frames"
    assert len(set(ids)) == 1, f"target {t} changed identity: {ids}"
    all_ids = {i for tr in run["tracks"] for i in tr.track_ids.tolist()}
    assert min(all_ids) == 1  # ids of this stream start at 1


@pytest.mark.integration
@pytest.mark.slow
def test_tiny_yolo_ran_offline(tiny_trained):
    assert tiny_trained["guard"].attempts == []
    import ultralytics.utils as uu

    assert uu.ONLINE is False and uu.SETTINGS["sync"] is False
    cfg_dir = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    assert (cfg_dir / "Arial.ttf").is_file()  # local font instead of the download
    for name in ("yolo11n.pt", "yolo26n.pt"):  # no pretrained or AMP-check weights fetched
        assert not list(Path(uu.SETTINGS["weights_dir"]).glob(name))
        assert not list(Path.cwd().glob(name)) and not list(tiny_trained["root"].rglob(name))


@pytest.mark.integration
def test_fresh_interpreter_needs_and_gets_the_nms_op():
    import subprocess
    import sys

    code = (
        "from isr_sim_bridge.torchvision_compat import ensure_torchvision_ops\n"
        "mode = ensure_torchvision_ops()\n"
        "import torch, torchvision\n"
        "b = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30.0]])\n"
        "keep = torchvision.ops.nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.5)\n"
        "print(mode, keep.tolist())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    mode, keep = out.stdout.split(" ", 1)
    assert keep.strip() == "[0, 2]"
    if mode == "fallback":  # the compiled ops do not load here: plain torchvision import fails
        plain = subprocess.run(
            [sys.executable, "-c", "import torchvision"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert plain.returncode != 0 and "torchvision::nms does not exist" in plain.stderr


@pytest.mark.integration
def test_cli_dataset_and_errors_name_the_bad_value(tmp_path, capsys):
    import argparse

    from isr_sim_bridge import yolo_cli

    parser = argparse.ArgumentParser(prog="isr")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench").add_subparsers(dest="bench_target")
    yolo_cli.register(sub, bench)
    args = parser.parse_args(
        ["yolo", "dataset", "--out", str(tmp_path / "ds"), "--train-worlds", "1", "--val-worlds",
         "1", "--drones-per-world", "1", "--frames-per-drone", "2", "--resolution", "64x48"]
    )  # fmt: skip
    assert args.func(args) == 0
    assert "wrote" in capsys.readouterr().out
    assert len(list((tmp_path / "ds" / "images" / "val").glob("*.png"))) == 2

    assert yolo_cli.main(["dataset", "--out", str(tmp_path / "x"), "--altitude", "60,15"]) == 2
    assert "altitude_m" in capsys.readouterr().err
    assert yolo_cli.main(["dataset", "--out", str(tmp_path / "x"), "--resolution", "huge"]) == 2
    assert "'huge'" in capsys.readouterr().err
    assert yolo_cli.main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err
    ds = str(tmp_path / "ds")
    assert yolo_cli.main(["train", "--data", ds, "--out", str(tmp_path), "--set", "imgsz=100"]) == 2
    err = capsys.readouterr().err
    assert "imgsz" in err and "100" in err
    assert yolo_cli.main(["eval", "--weights", str(tmp_path / "w.pt"), "--data", ds]) == 2
    assert "w.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        yolo_cli.main(["dataset", "--out", str(tmp_path), "--drones-per-world", "0"])
    assert "must be >= 1, got 0" in capsys.readouterr().err
