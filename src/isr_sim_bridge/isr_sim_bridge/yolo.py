"""YOLO (yolo11) perception for full-fidelity evaluation: data, training, inference, tracking.

The fast training mode uses ground-truth detections; evaluation can swap in a learned detector
(see ARCHITECTURE.md). This module trains that detector on frames of the workspace's own camera and
runs it, fully offline and on CPU:

- :func:`make_yolo_dataset` renders frames of procedural worlds with the batched camera at varied
  drone poses and writes a YOLO-format dataset (``images/``, ``labels/``, ``data.yaml``) whose
  labels are the ground-truth boxes of :mod:`isr_sim_bridge.detections`; train and val are split by
  world seed, so validation frames come from worlds never seen in training.
- :func:`train_yolo` trains an ultralytics YOLO model from a model YAML (no pretrained weights).
- :class:`YoloDetector` runs batched inference (``predict``) and per-stream ByteTrack (``track``).
- :func:`compute_map50` / :func:`evaluate_map50` give the mAP at IoU 0.5 on held-out frames.

ultralytics is imported only through :func:`import_ultralytics`, which first makes torchvision's
NMS available (:mod:`isr_sim_bridge.torchvision_compat`) and configures ultralytics for offline
use (:func:`setup_ultralytics_offline`): no DNS/online check, settings in a writable directory,
a local font instead of the Arial download, integrations and telemetry off, models built from a
YAML that ships inside the package. Importing this module does not import ultralytics.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from isr_direct_dynamics.config import check, json_dumps
from isr_direct_dynamics.math3d import quat_from_euler, quat_to_rotmat
from isr_sim_bridge.camera import (
    CameraConfig,
    TiledCamera,
    camera_intrinsics,
    mount_rotation,
    parse_resolution,
)
from isr_sim_bridge.detections import DetectionConfig, GroundTruthDetector
from isr_sim_bridge.world import WorldSpec, advance_targets, generate_worlds
from isr_sim_bridge.world_batch import TARGET_CLASSES, WorldBatch

# ------------------------------------------------------------------------------ offline setup

ULTRALYTICS_FONTS: tuple[str, ...] = ("Arial.ttf", "Arial.Unicode.ttf")
"""Font files ultralytics' ``check_font`` looks for in its config dir before downloading them."""

_IMPORT_LOCK = threading.Lock()
_ULTRALYTICS: ModuleType | None = None


def default_ultralytics_config_dir() -> Path:
    """``$XDG_CACHE_HOME/isr_sim_bridge/ultralytics`` (``~/.cache/...``), else a temp dir."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = base / "isr_sim_bridge" / "ultralytics"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    path = Path(tempfile.gettempdir()) / "isr_sim_bridge_ultralytics"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _local_font() -> Path:
    """A TrueType font available offline: matplotlib's bundled DejaVuSans.ttf."""
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not font.is_file():
        raise FileNotFoundError(f"matplotlib's DejaVuSans.ttf not found at {font}")
    return font


def setup_ultralytics_offline(config_dir: str | Path | None = None) -> Path:
    """Prepare the environment so that ultralytics never touches the network; return its config dir.

    Sets (as defaults: values already in the environment win) ``YOLO_OFFLINE=1`` (ultralytics'
    ``is_online()`` then returns False without a DNS lookup) and ``YOLO_CONFIG_DIR``
    (``config_dir``, else :func:`default_ultralytics_config_dir`). ultralytics keeps
    ``settings.json`` and fonts in ``$YOLO_CONFIG_DIR/Ultralytics``; its
    ``check_font("Arial.ttf")`` returns a file found there and otherwise probes and downloads
    ``https://ultralytics.com/assets/Arial.ttf`` (the probe ignores ``YOLO_OFFLINE``). A copy of
    matplotlib's DejaVuSans.ttf is placed there under the names of :data:`ULTRALYTICS_FONTS`, so
    label plots and dataset checks find a font locally.

    Must run before ultralytics is imported (it reads both variables at import);
    :func:`import_ultralytics` does it.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if config_dir is not None:
        os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    elif not os.environ.get("YOLO_CONFIG_DIR"):
        os.environ["YOLO_CONFIG_DIR"] = str(default_ultralytics_config_dir())
    settings_dir = Path(os.environ["YOLO_CONFIG_DIR"]).expanduser() / "Ultralytics"
    install_local_fonts(settings_dir)
    return settings_dir


def install_local_fonts(settings_dir: str | Path) -> None:
    """Copy the offline font into ``settings_dir`` under every name of :data:`ULTRALYTICS_FONTS`."""
    settings_dir = Path(settings_dir)
    settings_dir.mkdir(parents=True, exist_ok=True)
    font = _local_font()
    for name in ULTRALYTICS_FONTS:
        dst = settings_dir / name
        if not dst.is_file():
            tmp = dst.with_suffix(f".tmp{os.getpid()}")
            shutil.copyfile(font, tmp)
            os.replace(tmp, dst)  # atomic: concurrent processes never see a partial font


def import_ultralytics() -> ModuleType:
    """Import ultralytics offline with working NMS (idempotent); return the ``ultralytics`` module.

    Order matters: torchvision's ops are ensured first (:func:`ensure_torchvision_ops`), then the
    offline environment is set (:func:`setup_ultralytics_offline`), then ultralytics is imported and
    its persistent settings get ``sync`` (telemetry) and the experiment-tracker integrations
    (ClearML, Comet, DVC, MLflow, Ray Tune, TensorBoard, W&B) switched off.
    """
    global _ULTRALYTICS
    with _IMPORT_LOCK:
        if _ULTRALYTICS is not None:
            return _ULTRALYTICS
        from isr_sim_bridge.torchvision_compat import ensure_torchvision_ops

        ensure_torchvision_ops()
        imported_before = "ultralytics" in sys.modules
        setup_ultralytics_offline()
        import ultralytics
        from ultralytics.utils import ONLINE, SETTINGS, USER_CONFIG_DIR

        off = {k: False for k in ("sync", "clearml", "comet", "dvc", "mlflow", "raytune",
                                  "tensorboard", "wandb")}  # fmt: skip
        if any(SETTINGS.get(k) is not False for k in off):
            SETTINGS.update(off)
        if imported_before:  # its config dir was fixed at that import: give it the fonts too
            install_local_fonts(USER_CONFIG_DIR)
        if ONLINE:
            warnings.warn(
                "ultralytics considers itself online (YOLO_OFFLINE unset or 0 when it was first "
                "imported); it may try the network",
                RuntimeWarning,
                stacklevel=2,
            )
        _ULTRALYTICS = ultralytics
        return ultralytics


# ------------------------------------------------------------------------------------- config


@dataclass
class YoloConfig:
    """Training and inference settings of the YOLO detector (validated by :meth:`validate`)."""

    model: str = "yolo11n.yaml"
    """Model YAML: a name shipped with ultralytics (``yolo11n.yaml``, ``yolo11s.yaml``; the letter
    after ``yolo11`` picks the scale) or a path to a YAML file. Training always starts from random
    weights: pretrained ``.pt`` names are refused because ultralytics would download them."""
    imgsz: int = 320
    """Square network input size, pixels (multiple of 32); frames are letterboxed to it."""
    epochs: int = 60
    """Training epochs (upper bound when ``time_h`` is set)."""
    time_h: float = 0.0
    """Wall-clock training budget in hours; > 0 overrides ``epochs`` (ultralytics ``time``)."""
    batch: int = 16
    """Training batch size (images)."""
    workers: int = 0
    """Data-loader worker processes (0 = load in the training process)."""
    device: str = "cpu"
    """Torch device: ``cpu``, ``cuda``, ``cuda:N``."""
    seed: int = 0
    """Seed of ultralytics' training RNGs; training runs with ``deterministic=True``."""
    conf: float = 0.25
    """Confidence threshold of :meth:`YoloDetector.predict` and tracking."""
    iou: float = 0.7
    """IoU threshold of the detector's NMS."""
    max_det: int = 100
    """Maximum detections per image."""
    eval_conf: float = 0.001
    """Confidence threshold used when measuring mAP (low, so the precision-recall curve is full)."""
    optimizer: str = "auto"
    """ultralytics optimizer name (``auto``, ``SGD``, ``AdamW``...)."""
    lr0: float = 0.01
    """Initial learning rate (ignored by ultralytics when ``optimizer`` is ``auto``)."""
    warmup_epochs: float = 3.0
    """Learning-rate warm-up, epochs (ultralytics warms up at least 100 iterations; 0 = none)."""
    patience: int = 100
    """Epochs without validation improvement before early stopping."""
    scale: float = 0.5
    """Random scale augmentation gain (+- fraction); small targets suffer from strong shrinking."""
    mosaic: float = 1.0
    """Probability of mosaic augmentation."""
    close_mosaic: int = 10
    """Disable mosaic for the last this many epochs."""
    flipud: float = 0.5
    """Probability of a vertical flip (a nadir-ish aerial view has no preferred up)."""
    fliplr: float = 0.5
    """Probability of a horizontal flip."""
    cache: bool = False
    """Cache decoded training images in RAM (faster epochs; ultralytics warns that it may make
    training non-deterministic)."""
    amp: bool = False
    """Mixed precision on CUDA. ultralytics' AMP check loads ``yolo26n.pt`` (a download unless it
    is in its weights dir), so it stays off for offline use; AMP never runs on CPU."""
    plots: bool = True
    """Let ultralytics write label/metric plots into the run directory."""
    verbose: bool = False
    """Print ultralytics' per-epoch progress."""

    def validate(self) -> None:
        """Raise :class:`~isr_direct_dynamics.config.ConfigError` naming the first bad field."""
        check(self.model.endswith((".yaml", ".yml")), "model",
              f"must be a model YAML (no pretrained weights), got {self.model!r}")  # fmt: skip
        check(self.imgsz >= 32 and self.imgsz % 32 == 0, "imgsz",
              f"must be a positive multiple of 32, got {self.imgsz}")  # fmt: skip
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        check(self.time_h >= 0.0, "time_h", f"must be >= 0, got {self.time_h}")
        check(self.batch >= 1, "batch", f"must be >= 1, got {self.batch}")
        check(self.workers >= 0, "workers", f"must be >= 0, got {self.workers}")
        try:
            dev = torch.device(self.device)
        except RuntimeError:
            dev = None
        check(dev is not None and dev.type in ("cpu", "cuda", "mps"), "device",
              f"must be cpu, cuda, cuda:N or mps, got {self.device!r}")  # fmt: skip
        for name in ("conf", "iou", "eval_conf", "mosaic", "flipud", "fliplr"):
            v = getattr(self, name)
            check(0.0 <= v <= 1.0, name, f"must be in [0, 1], got {v}")
        check(self.max_det >= 1, "max_det", f"must be >= 1, got {self.max_det}")
        check(self.lr0 > 0.0, "lr0", f"must be > 0, got {self.lr0}")
        check(self.warmup_epochs >= 0.0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        check(0.0 <= self.scale < 1.0, "scale", f"must be in [0, 1), got {self.scale}")
        check(self.patience >= 1, "patience", f"must be >= 1, got {self.patience}")
        check(self.close_mosaic >= 0, "close_mosaic", f"must be >= 0, got {self.close_mosaic}")

    def __post_init__(self) -> None:
        self.validate()


# ----------------------------------------------------------------------------- data structures


@dataclass
class FrameDetections:
    """Detections of one image (pixel coordinates of the input image, x right, y down)."""

    boxes_xyxy: Tensor  # (K, 4) float32
    """Boxes ``x1, y1, x2, y2``, pixels."""
    scores: Tensor  # (K,) float32
    """Confidence in ``[0, 1]``."""
    class_ids: Tensor  # (K,) int64
    """Index into :data:`~isr_sim_bridge.world_batch.TARGET_CLASSES`."""

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass
class DetectionBatch:
    """Detections of ``N`` images padded to ``K`` slots (batched :class:`FrameDetections`)."""

    boxes_xyxy: Tensor  # (N, K, 4) float32
    """Boxes, pixels; zeros in padding slots."""
    scores: Tensor  # (N, K) float32
    """Confidence; 0 in padding slots."""
    class_ids: Tensor  # (N, K) int64
    """Class id; -1 in padding slots."""
    valid: Tensor  # (N, K) bool
    """False for padding."""


def pad_detections(detections: Sequence[FrameDetections], k: int) -> DetectionBatch:
    """Stack per-image detections into padded tensors, keeping the ``k`` most confident each."""
    n = len(detections)
    out = DetectionBatch(
        boxes_xyxy=torch.zeros(n, k, 4),
        scores=torch.zeros(n, k),
        class_ids=torch.full((n, k), -1, dtype=torch.long),
        valid=torch.zeros(n, k, dtype=torch.bool),
    )
    for i, d in enumerate(detections):
        order = torch.argsort(d.scores, descending=True, stable=True)[:k]
        m = int(order.numel())
        out.boxes_xyxy[i, :m] = d.boxes_xyxy[order]
        out.scores[i, :m] = d.scores[order]
        out.class_ids[i, :m] = d.class_ids[order]
        out.valid[i, :m] = True
    return out


@dataclass
class FrameTracks:
    """Confirmed ByteTrack tracks of one image of one stream."""

    boxes_xyxy: Tensor  # (K, 4) float32
    """Track boxes ``x1, y1, x2, y2`` (Kalman-filtered, so they lag a fast-moving detection)."""
    track_ids: Tensor  # (K,) int64
    """Track id, unique within the stream (starts at 1)."""
    scores: Tensor  # (K,) float32
    """Score of the detection the track was updated with."""
    class_ids: Tensor  # (K,) int64
    """Class id of the track."""
    det_index: Tensor  # (K,) int64
    """Index, in the frame's detections, of the detection that updated the track this frame."""

    def __len__(self) -> int:
        return int(self.track_ids.shape[0])


@dataclass
class FrameGroundTruth:
    """Ground-truth boxes of one image."""

    boxes_xyxy: Tensor  # (G, 4) float32
    """Boxes ``x1, y1, x2, y2``, pixels."""
    class_ids: Tensor  # (G,) int64
    """Class ids."""

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])


@dataclass
class TrackerConfig:
    """ByteTrack parameters (the fields of ultralytics' ``bytetrack.yaml``, same defaults)."""

    track_high_thresh: float = 0.25
    """First association stage: detections with at least this score."""
    track_low_thresh: float = 0.1
    """Second stage: detections with a score in ``(low, high)`` may extend existing tracks."""
    new_track_thresh: float = 0.25
    """A detection that matched nothing starts a track when its score is at least this."""
    track_buffer: int = 30
    """Frames a lost track is kept for re-identification."""
    match_thresh: float = 0.8
    """Maximum association cost (1 - IoU, fused with the score) of a match."""
    fuse_score: bool = True
    """Fuse the detection score into the IoU cost."""

    def validate(self) -> None:
        """Raise :class:`~isr_direct_dynamics.config.ConfigError` naming the first bad field."""
        for name in ("track_high_thresh", "track_low_thresh", "new_track_thresh", "match_thresh"):
            v = getattr(self, name)
            check(0.0 <= v <= 1.0, name, f"must be in [0, 1], got {v}")
        check(self.track_buffer >= 1, "track_buffer", f"must be >= 1, got {self.track_buffer}")

    def __post_init__(self) -> None:
        self.validate()


# ------------------------------------------------------------------------------------ detector


def _to_numpy_images(images: Tensor | np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """RGB uint8 images ``(N, H, W, 3)`` -> list of BGR arrays (ultralytics' numpy input)."""
    if isinstance(images, Tensor):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must have shape (N, H, W, 3), got {images.shape}")
        images = list(images)
    out = []
    for i, im in enumerate(images):
        im = np.asarray(im)
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[-1] != 3:
            raise ValueError(f"image {i} must be uint8 (H, W, 3), got {im.dtype} {im.shape}")
        out.append(np.ascontiguousarray(im[..., ::-1]))
    return out


class YoloDetector:
    """A trained YOLO model behind a batched ``predict`` and a per-stream ByteTrack ``track``.

    Images are RGB ``uint8 (N, H, W, 3)`` (the camera's format), as a tensor or an array; outputs
    are CPU tensors in the images' pixel coordinates. ``track`` keeps one ByteTrack tracker per
    stream (one stream per drone camera), created on first use.
    """

    def __init__(
        self,
        weights: str | Path,
        conf: float = 0.25,
        iou: float = 0.7,
        device: str = "cpu",
        imgsz: int | None = None,
        max_det: int = 100,
        tracker: TrackerConfig | None = None,
    ) -> None:
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"YOLO weights not found: {weights}")
        for name, value in (("conf", conf), ("iou", iou)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"YoloDetector {name} must be in [0, 1], got {value}")
        if max_det < 1:
            raise ValueError(f"YoloDetector max_det must be >= 1, got {max_det}")
        import_ultralytics()
        from ultralytics import YOLO

        self.weights = weights
        self.model = YOLO(str(weights), task="detect")
        self.conf = float(conf)
        self.iou = float(iou)
        self.device = str(device)
        train_args = getattr(self.model, "overrides", {}) or {}
        self.imgsz = int(imgsz or train_args.get("imgsz") or 640)
        self.max_det = int(max_det)
        self.names: dict[int, str] = dict(self.model.names)
        self.streams = ByteTrackStreams(tracker)

    def predict(
        self, images: Tensor | np.ndarray | Sequence[np.ndarray], conf: float | None = None
    ) -> list[FrameDetections]:
        """Detect targets in a batch of RGB images (one forward pass for the batch)."""
        frames = _to_numpy_images(images)
        if not frames:
            return []
        results = self.model.predict(
            frames, imgsz=self.imgsz, conf=self.conf if conf is None else conf, iou=self.iou,
            device=self.device, max_det=self.max_det, verbose=False, batch=len(frames),
        )  # fmt: skip
        out = []
        for r in results:
            b = r.boxes
            out.append(
                FrameDetections(
                    boxes_xyxy=b.xyxy.detach().cpu().float(),
                    scores=b.conf.detach().cpu().float(),
                    class_ids=b.cls.detach().cpu().long(),
                )
            )
        return out

    def track(
        self,
        images: Tensor | np.ndarray | Sequence[np.ndarray],
        stream_ids: Sequence[Hashable] | None = None,
    ) -> list[FrameTracks]:
        """Detect (one batched pass) and update the ByteTrack tracker of each image's stream.

        Args:
            images: one RGB frame per stream, ``(N, H, W, 3)`` uint8; consecutive calls give
                consecutive frames of each stream.
            stream_ids: id of each image's stream (e.g. ``(world, drone)``); default
                ``range(N)``. Each id at most once per call.

        Returns:
            The confirmed tracks of every image. Detections down to ``track_low_thresh`` are fed
            to the tracker (ByteTrack's second association stage uses them).
        """
        low = min(self.conf, self.streams.config.track_low_thresh)
        return self.streams.update(self.predict(images, conf=low), stream_ids)

    def reset_tracks(self, stream_ids: Sequence[Hashable] | None = None) -> None:
        """Forget the trackers of ``stream_ids`` (all when None); their ids restart at 1."""
        self.streams.reset(stream_ids)


class ByteTrackStreams:
    """One ultralytics ByteTrack tracker (``BYTETracker``) per stream, e.g. per drone camera.

    A tracker is created the first time its stream id is seen. Track ids are unique per stream.
    Works with any detections (the YOLO detector's or ground truth's).
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config if config is not None else TrackerConfig()
        self.config.validate()
        import_ultralytics()
        self._trackers: dict[Hashable, Any] = {}

    @property
    def stream_ids(self) -> list[Hashable]:
        """Ids of the streams that have a tracker."""
        return list(self._trackers)

    def _new_tracker(self) -> Any:
        from ultralytics.trackers.byte_tracker import BYTETracker
        from ultralytics.utils import IterableSimpleNamespace

        cfg = self.config
        args = IterableSimpleNamespace(
            tracker_type="bytetrack", track_high_thresh=cfg.track_high_thresh,
            track_low_thresh=cfg.track_low_thresh, new_track_thresh=cfg.new_track_thresh,
            track_buffer=cfg.track_buffer, match_thresh=cfg.match_thresh,
            fuse_score=cfg.fuse_score,
        )  # fmt: skip
        return BYTETracker(args)

    def update(
        self, detections: Sequence[FrameDetections], stream_ids: Sequence[Hashable] | None = None
    ) -> list[FrameTracks]:
        """Feed one frame's detections per stream; return each stream's confirmed tracks."""
        from ultralytics.engine.results import Boxes

        ids = list(range(len(detections))) if stream_ids is None else list(stream_ids)
        if len(ids) != len(detections):
            raise ValueError(f"got {len(ids)} stream ids for {len(detections)} detection sets")
        if len(set(ids)) != len(ids):
            raise ValueError(f"stream ids must be unique within one call, got {ids}")
        out = []
        for sid, d in zip(ids, detections, strict=True):
            tracker = self._trackers.get(sid)
            if tracker is None:
                tracker = self._trackers[sid] = self._new_tracker()
            data = (
                torch.cat(
                    (d.boxes_xyxy.float(), d.scores.float()[:, None], d.class_ids.float()[:, None]),
                    dim=1,
                )
                .cpu()
                .numpy()
            )
            # Boxes wants the image shape only for normalized coordinates, which ByteTrack ignores.
            rows = tracker.update(Boxes(data, (1, 1)), None)
            rows = np.asarray(rows, dtype=np.float32).reshape(-1, 8)
            out.append(
                FrameTracks(
                    boxes_xyxy=torch.from_numpy(rows[:, :4].copy()),
                    track_ids=torch.from_numpy(rows[:, 4].copy()).long(),
                    scores=torch.from_numpy(rows[:, 5].copy()),
                    class_ids=torch.from_numpy(rows[:, 6].copy()).long(),
                    det_index=torch.from_numpy(rows[:, 7].copy()).long(),
                )
            )
        return out

    def reset(self, stream_ids: Sequence[Hashable] | None = None) -> None:
        """Forget the trackers of ``stream_ids`` (all when None)."""
        if stream_ids is None:
            self._trackers.clear()
        else:
            for sid in stream_ids:
                self._trackers.pop(sid, None)


# --------------------------------------------------------------------------------- evaluation


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU matrix ``(A, B)`` of xyxy boxes ``a (A, 4)`` and ``b (B, 4)``."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def _average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope: trapezoid over 101 recall points, as ultralytics.

    Like ultralytics' ``compute_ap`` (so figures compare with its validator), a perfect detector
    scores 0.995, not 1.0 (the last trapezoid ends at precision 0 at recall 1).
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0.0, 1.0, 101)
    y = np.interp(x, mrec, mpre)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def compute_map50(
    predictions: Sequence[FrameDetections],
    ground_truth: Sequence[FrameGroundTruth],
    iou_thr: float = 0.5,
) -> float:
    """Mean average precision at IoU ``iou_thr`` over the classes present in the ground truth.

    The mean of :func:`compute_ap_per_class`; 0.0 when there is no ground truth at all.
    """
    aps = compute_ap_per_class(predictions, ground_truth, iou_thr)
    return float(np.mean(list(aps.values()))) if aps else 0.0


def compute_ap_per_class(
    predictions: Sequence[FrameDetections],
    ground_truth: Sequence[FrameGroundTruth],
    iou_thr: float = 0.5,
) -> dict[int, float]:
    """Average precision at IoU ``iou_thr`` of every class present in the ground truth.

    Per image, detections are matched greedily in order of decreasing confidence to the unmatched
    ground-truth box of the same class with the highest IoU (a match needs IoU >= ``iou_thr``);
    AP per class is the area under the precision envelope (:func:`_average_precision`, as
    ultralytics' validator; at most 0.995). Classes without ground truth are left out.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truth)} images")
    confs, clss, tps = [], [], []
    gt_classes = []
    for det, gt in zip(predictions, ground_truth, strict=True):
        gt_classes.append(gt.class_ids.cpu().numpy())
        if len(det) == 0:
            continue
        order = torch.argsort(det.scores, descending=True, stable=True)
        boxes, scores, cls = det.boxes_xyxy[order], det.scores[order], det.class_ids[order]
        tp = np.zeros(len(order), dtype=bool)
        if len(gt):
            iou = box_iou(boxes.float(), gt.boxes_xyxy.float())
            iou = iou * (cls[:, None] == gt.class_ids[None, :].to(cls.device))
            iou = iou.cpu().numpy()
            taken = np.zeros(len(gt), dtype=bool)
            for j in range(len(order)):
                cand = np.where(taken, -1.0, iou[j])
                k = int(cand.argmax())
                if cand[k] >= iou_thr:
                    tp[j] = True
                    taken[k] = True
        confs.append(scores.cpu().numpy())
        clss.append(cls.cpu().numpy())
        tps.append(tp)
    target = np.concatenate(gt_classes) if gt_classes else np.zeros(0, dtype=np.int64)
    conf = np.concatenate(confs) if confs else np.zeros(0)
    pcls = np.concatenate(clss) if clss else np.zeros(0, dtype=np.int64)
    tp = np.concatenate(tps) if tps else np.zeros(0, dtype=bool)
    aps: dict[int, float] = {}
    for c in np.unique(target).tolist():
        n_gt = int((target == c).sum())
        sel = pcls == c
        if not sel.any():
            aps[int(c)] = 0.0
            continue
        order = np.argsort(-conf[sel], kind="stable")
        tpc = np.cumsum(tp[sel][order])
        fpc = np.cumsum(~tp[sel][order])
        aps[int(c)] = _average_precision(tpc / n_gt, tpc / np.maximum(tpc + fpc, 1e-16))
    return aps


def read_yolo_labels(path: str | Path, width: int, height: int) -> FrameGroundTruth:
    """Read a YOLO label file (``class cx cy w h``, normalized) into pixel xyxy boxes."""
    path = Path(path)
    rows = np.zeros((0, 5), dtype=np.float32)
    if path.is_file() and path.stat().st_size:
        rows = np.loadtxt(path, dtype=np.float32, ndmin=2)
    if rows.shape[1] != 5:
        raise ValueError(f"{path}: expected 5 columns per label, got {rows.shape[1]}")
    cx, cy = rows[:, 1] * width, rows[:, 2] * height
    w, h = rows[:, 3] * width, rows[:, 4] * height
    boxes = np.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), axis=1)
    return FrameGroundTruth(torch.from_numpy(boxes).float(), torch.from_numpy(rows[:, 0]).long())


def load_yolo_split(
    dataset_dir: str | Path, split: str = "val"
) -> tuple[np.ndarray, list[FrameGroundTruth]]:
    """Images ``(N, H, W, 3)`` uint8 RGB and ground truth of one split of a YOLO dataset.

    The dataset is one of :func:`make_yolo_dataset` (all frames have one size, PNG).
    """
    from PIL import Image

    img_dir = Path(dataset_dir) / "images" / split
    files = sorted(img_dir.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no images in {img_dir}")
    images, gts = [], []
    for f in files:
        im = np.asarray(Image.open(f).convert("RGB"))
        images.append(im)
        label = Path(dataset_dir) / "labels" / split / (f.stem + ".txt")
        gts.append(read_yolo_labels(label, im.shape[1], im.shape[0]))
    return np.stack(images), gts


def ground_truth_frames(det: Any) -> list[FrameGroundTruth]:
    """Visible ground-truth boxes of a :class:`isr_sim_bridge.detections.Detections` ``(W, D, T)``.

    One :class:`FrameGroundTruth` per camera, in row-major ``(world, drone)`` order (the order of
    ``CameraOutput.rgb.reshape(-1, H, W, 3)``).
    """
    vis = det.visible.reshape(-1, det.visible.shape[-1]).cpu()
    boxes = det.boxes_xyxy.reshape(-1, *det.boxes_xyxy.shape[-2:]).cpu().float()
    cls = det.class_id.reshape(-1, det.class_id.shape[-1]).cpu()
    return [FrameGroundTruth(boxes[i][vis[i]], cls[i][vis[i]]) for i in range(vis.shape[0])]


def evaluate_map50(
    detector: YoloDetector,
    data: str | Path | tuple[Tensor | np.ndarray, Sequence[FrameGroundTruth]],
    split: str = "val",
    conf: float = 0.001,
    batch: int = 32,
    per_class: bool = False,
) -> Any:
    """mAP50 (:func:`compute_map50`) of ``detector`` on held-out frames (a float).

    Args:
        data: a dataset of :func:`make_yolo_dataset` (its directory or ``data.yaml``; ``split``
            is evaluated, ``val`` holds worlds never seen in training) or frames
            ``(images (N, H, W, 3) uint8 RGB, ground truth per image)``.
        conf: detection threshold (low, so the precision-recall curve is complete).
        batch: images per forward pass.
        per_class: return the AP50 of every class present instead
            (:func:`compute_ap_per_class`, a dict class id -> AP50).
    """
    if isinstance(data, tuple):
        images, gts = data
        if len(images) != len(gts):
            raise ValueError(f"{len(images)} images for {len(gts)} ground-truth frames")
    else:
        root = Path(data)
        if root.suffix in (".yaml", ".yml"):
            root = root.parent
        images, gts = load_yolo_split(root, split)
    preds: list[FrameDetections] = []
    for i in range(0, len(images), batch):
        preds += detector.predict(images[i : i + batch], conf=conf)
    if per_class:
        return compute_ap_per_class(preds, list(gts))
    return compute_map50(preds, list(gts))


# ------------------------------------------------------------------------------------- dataset


@dataclass
class ViewSamplingConfig:
    """How drone poses are drawn for dataset frames (see :func:`sample_view_poses`)."""

    altitude_m: tuple[float, float] = (15.0, 60.0)
    """Range of drone altitudes above ground, metres (raised above a building under the drone)."""
    attitude_jitter_deg: float = 8.0
    """Roll and pitch are uniform in ``+-`` this (a flying multicopter tilts), degrees."""
    target_bias: float = 0.8
    """Fraction of views aimed so that a random target of the world falls at a random point of
    the central 80 % of the image; the others are placed uniformly inside the geofence."""
    min_depression_deg: float = 12.0
    """Aimed views only use image points whose ray is at least this far below the horizon
    (bounds the distance to the target)."""
    building_clearance_m: float = 3.0
    """A drone above a building or obstacle flies at least this high above its roof, metres."""
    target_dt_s: float = 4.0
    """Moving targets advance this many seconds along their paths between frame rounds."""

    def validate(self) -> None:
        """Raise :class:`~isr_direct_dynamics.config.ConfigError` naming the first bad field."""
        lo, hi = self.altitude_m
        check(0.5 <= lo <= hi, "altitude_m", f"needs 0.5 <= min <= max, got {self.altitude_m}")
        check(0.0 <= self.attitude_jitter_deg <= 45.0, "attitude_jitter_deg",
              f"must be in [0, 45], got {self.attitude_jitter_deg}")  # fmt: skip
        check(0.0 <= self.target_bias <= 1.0, "target_bias",
              f"must be in [0, 1], got {self.target_bias}")  # fmt: skip
        check(0.0 < self.min_depression_deg < 90.0, "min_depression_deg",
              f"must be in (0, 90), got {self.min_depression_deg}")  # fmt: skip
        check(self.building_clearance_m >= 0.0, "building_clearance_m",
              f"must be >= 0, got {self.building_clearance_m}")  # fmt: skip
        check(self.target_dt_s >= 0.0, "target_dt_s", f"must be >= 0, got {self.target_dt_s}")

    def __post_init__(self) -> None:
        self.validate()


def sample_view_poses(
    world: WorldBatch,
    drones_per_world: int,
    camera: CameraConfig,
    config: ViewSamplingConfig,
    gen: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Draw drone poses for dataset frames, batched over ``(W, D)``.

    Yaw is uniform, roll/pitch jittered, altitude uniform in ``config.altitude_m``. A fraction
    ``target_bias`` of the drones is *aimed*: a valid target of its world is drawn, an image point
    in the central 80 % of the frame whose ray (with the drawn attitude and the camera mount)
    points at least ``min_depression_deg`` below the horizon is drawn (8 tries, else the view is
    not aimed), and the drone is placed so that this ray passes through the target's centre. The
    others are uniform in the geofence. Positions are clamped to the world area; a drone above a
    building or obstacle is lifted to ``building_clearance_m`` above its roof (the aimed target
    then moves in the image, which the ground truth accounts for).

    Returns:
        ``pos_enu_m (W, D, 3)`` and body-to-world quaternions ``quat_wxyz (W, D, 4)`` on the world's
        device.
    """
    dev = world.device
    w, d = world.num_worlds, int(drones_per_world)

    def uni(shape: tuple[int, ...], lo: float | Tensor, hi: float | Tensor) -> Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=gen, device=gen.device).to(dev)

    jit = math.radians(config.attitude_jitter_deg)
    roll, pitch = uni((w, d), -jit, jit), uni((w, d), -jit, jit)
    yaw = uni((w, d), -math.pi, math.pi)
    quat = quat_from_euler(roll, pitch, yaw)
    alt = uni((w, d), config.altitude_m[0], config.altitude_m[1])
    gmin, gmax = world.geofence_min_m[:, None, :2], world.geofence_max_m[:, None, :2]
    xy = uni((w, d, 2), gmin, gmax)

    # ---- aimed views: ray through a random image point must hit the chosen target
    width, height = parse_resolution(camera.resolution)
    fx, fy, cx, cy = camera_intrinsics(camera)
    tries = 8
    u = uni((w, d, tries), 0.1 * width, 0.9 * width)  # pixel-edge coordinates
    v = uni((w, d, tries), 0.1 * height, 0.9 * height)
    ray_cam = torch.stack(((u - 0.5 - cx) / fx, (v - 0.5 - cy) / fy, torch.ones_like(u)), -1)
    rot_wb = quat_to_rotmat(quat)  # (W, D, 3, 3)
    rot_wc = rot_wb @ mount_rotation(camera).to(dev, torch.float32)
    ray = torch.einsum("wdij,wdtj->wdti", rot_wc, ray_cam)
    ray = ray / ray.norm(dim=-1, keepdim=True)
    ok = ray[..., 2] <= -math.sin(math.radians(config.min_depression_deg))  # (W, D, tries)
    first = torch.argmax(ok.to(torch.int8), dim=-1)  # first valid try (0 when none)
    ray = torch.gather(ray, 2, first[..., None, None].expand(w, d, 1, 3)).squeeze(2)
    has_ray = ok.any(-1)
    tvalid = world.target_valid
    if tvalid.shape[1] == 0:  # no target slot in any world: nothing to aim at
        tvalid = torch.ones(w, 1, dtype=torch.bool, device=dev)
        tpos_all = torch.zeros(w, 1, 3, device=dev)
        has_target = torch.zeros(w, dtype=torch.bool, device=dev)
    else:
        tpos_all = world.target_pos_enu_m
        has_target = tvalid.any(-1)  # (W,)
    weights = torch.where(has_target[:, None], tvalid.float(), torch.ones_like(tvalid.float()))
    tidx = _draw_targets(weights, d, gen)  # (W, D)
    tpos = torch.gather(tpos_all, 1, tidx[..., None].expand(w, d, 3))  # (W, D, 3)
    offset = rot_wb @ torch.tensor(camera.mount_offset_flu_m, dtype=torch.float32, device=dev)
    cam_z = alt + offset[..., 2]
    s = (cam_z - tpos[..., 2]).clamp(min=0.1) / (-ray[..., 2]).clamp(min=1e-3)
    aimed_xy = tpos[..., :2] - s[..., None] * ray[..., :2] - offset[..., :2]
    aimed = (uni((w, d), 0.0, 1.0) < config.target_bias) & has_ray & has_target[:, None]
    xy = torch.where(aimed[..., None], aimed_xy, xy)
    lo = torch.tensor([world.x_min_m, world.y_min_m], device=dev)
    hi = lo + torch.tensor([world.size_x_m, world.size_y_m], device=dev)
    xy = torch.minimum(torch.maximum(xy, lo), hi)

    # ---- keep clear of roofs
    if world.box_min_m.shape[1] > 0:
        bmin, bmax = world.box_min_m[:, None], world.box_max_m[:, None]  # (W, 1, B, 3)
        inside = ((xy[:, :, None] >= bmin[..., :2]) & (xy[:, :, None] <= bmax[..., :2])).all(-1)
        inside &= world.box_valid[:, None]  # (W, D, B)
        roof = torch.where(inside, bmax[..., 2].expand_as(inside), torch.zeros_like(xy[..., 0:1]))
        lifted = roof.amax(-1) + config.building_clearance_m
        alt = torch.where(inside.any(-1), torch.maximum(alt, lifted), alt)
    return torch.cat((xy, alt[..., None]), dim=-1), quat


def _draw_targets(weights: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """``(W, n)`` indices drawn per row of ``weights (W, T)`` (with replacement), via ``gen``."""
    probs = (weights / weights.sum(-1, keepdim=True)).to(gen.device)
    return torch.multinomial(probs, n, replacement=True, generator=gen).to(weights.device)


FRAMES_CSV_HEADER = "split,image,world_seed,drone,frame,target_time_s,x_m,y_m,z_m,qw,qx,qy,qz,boxes"
"""Columns of ``frames.csv``: one row per image with the drone pose (ENU position, body-to-world
quaternion wxyz) it was rendered from and the time moving targets had advanced (from t = 0)."""


@dataclass
class YoloDataset:
    """What :func:`make_yolo_dataset` wrote."""

    root: Path
    """Dataset directory."""
    data_yaml: Path
    """ultralytics dataset file (``root/data.yaml``)."""
    train_world_seeds: list[int]
    """World seeds of the training split."""
    val_world_seeds: list[int]
    """World seeds of the held-out validation split."""
    num_images: dict[str, int] = field(default_factory=dict)
    """Images per split."""
    num_boxes: dict[str, dict[str, int]] = field(default_factory=dict)
    """Labelled boxes per split and class name."""
    empty_images: dict[str, int] = field(default_factory=dict)
    """Images without any visible target per split (background frames)."""


def yolo_label_lines(boxes_xyxy: Tensor, class_ids: Tensor, width: int, height: int) -> list[str]:
    """YOLO label lines ``class cx cy w h`` (normalized to [0, 1]) of pixel-edge xyxy boxes."""
    b = boxes_xyxy.detach().cpu().double()
    cxy = (b[:, :2] + b[:, 2:]) / 2.0
    wh = b[:, 2:] - b[:, :2]
    scale = torch.tensor([width, height], dtype=torch.float64)
    cxy, wh = (cxy / scale).clamp(0.0, 1.0), (wh / scale).clamp(0.0, 1.0)
    return [
        f"{int(c)} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}"
        for c, (x, y), (bw, bh) in zip(class_ids.tolist(), cxy.tolist(), wh.tolist(), strict=True)
    ]


def make_yolo_dataset(
    out_dir: str | Path,
    world_seeds: Sequence[int],
    drones_per_world: int = 4,
    frames_per_drone: int = 8,
    resolution: str = "evaluation",
    *,
    val_world_seeds: Sequence[int] | None = None,
    val_fraction: float = 0.2,
    world_spec: WorldSpec | None = None,
    camera: CameraConfig | None = None,
    views: ViewSamplingConfig | None = None,
    detection: DetectionConfig | None = None,
    worlds_per_batch: int = 8,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> YoloDataset:
    """Render frames of procedural worlds and write them as a YOLO-format dataset.

    For each world (``generate_worlds(world_spec, seeds)``), ``frames_per_drone`` rounds render
    ``drones_per_world`` views each with :class:`~isr_sim_bridge.camera.TiledCamera` at poses from
    :func:`sample_view_poses`; labels are the visible ground-truth boxes of
    :class:`~isr_sim_bridge.detections.GroundTruthDetector` for the same frame (occlusion, minimum
    size and visible fraction per ``detection``). Moving targets advance between rounds.

    Layout: ``images/{train,val}/w<seed>_d<drone>_f<frame>.png`` (RGB), ``labels/{...}/*.txt``
    (one ``class cx cy w h`` line per box, normalized; empty file = background frame),
    ``data.yaml`` (absolute ``path``, ``names`` from ``TARGET_CLASSES``), ``frames.csv`` (the
    pose of every frame, :data:`FRAMES_CSV_HEADER`) and ``dataset.json`` (all settings, counts).
    The split is by world: ``val_world_seeds`` when given (must not overlap ``world_seeds``, which
    are then all training worlds), else the last ``ceil(val_fraction * n)`` of ``world_seeds`` (at
    least one world each).

    Args:
        resolution: camera resolution (preset name or ``"WxH"``); ignored when ``camera`` is given.
        worlds_per_batch: worlds rendered together (memory bound).
        seed: seed of the pose sampling (with the world seeds, it fixes the dataset).
    """
    from PIL import Image

    seeds = [int(s) for s in world_seeds]
    if not seeds:
        raise ValueError("make_yolo_dataset needs at least one world seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"world seeds must be unique, got {seeds}")
    if drones_per_world < 1:
        raise ValueError(f"drones_per_world must be >= 1, got {drones_per_world}")
    if frames_per_drone < 1:
        raise ValueError(f"frames_per_drone must be >= 1, got {frames_per_drone}")
    if worlds_per_batch < 1:
        raise ValueError(f"worlds_per_batch must be >= 1, got {worlds_per_batch}")
    if val_world_seeds is not None:
        val = [int(s) for s in val_world_seeds]
        overlap = sorted(set(val) & set(seeds))
        if overlap:
            raise ValueError(f"world seed {overlap[0]} is in both the train and the val split")
        train = seeds
    else:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if len(seeds) < 2:
            raise ValueError(f"a train/val split by world needs >= 2 world seeds, got {seeds}")
        n_val = min(len(seeds) - 1, max(1, math.ceil(val_fraction * len(seeds))))
        train, val = seeds[:-n_val], seeds[-n_val:]
    if not val:
        raise ValueError("the val split has no world seed")
    spec = world_spec if world_spec is not None else WorldSpec()
    cam_cfg = camera if camera is not None else CameraConfig(resolution=resolution)
    cam_cfg.validate()
    views = views if views is not None else ViewSamplingConfig()
    views.validate()
    det_cfg = detection if detection is not None else DetectionConfig()
    width, height = parse_resolution(cam_cfg.resolution)

    root = Path(out_dir).resolve()
    info = YoloDataset(root=root, data_yaml=root / "data.yaml", train_world_seeds=train,
                       val_world_seeds=val)  # fmt: skip
    frames_csv = [FRAMES_CSV_HEADER]
    for split, split_seeds in (("train", train), ("val", val)):
        img_dir, lbl_dir = root / "images" / split, root / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        counts = dict.fromkeys(TARGET_CLASSES, 0)
        n_img = n_empty = 0
        for start in range(0, len(split_seeds), worlds_per_batch):
            chunk = split_seeds[start : start + worlds_per_batch]
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + chunk[0])
            world = generate_worlds(spec, chunk, device)
            gt = GroundTruthDetector(world, cam_cfg, det_cfg)
            cam = TiledCamera(world, drones_per_world, cam_cfg, device=device, detector=gt)
            for f in range(frames_per_drone):
                pos, quat = sample_view_poses(world, drones_per_world, cam_cfg, views, gen)
                out = cam.render(pos, quat)
                rgb = out.rgb.cpu().numpy()
                det = out.detections
                vis, boxes, cls = det.visible.cpu(), det.boxes_xyxy.cpu(), det.class_id.cpu()
                pose = torch.cat((pos, quat), dim=-1).cpu().tolist()
                for wi, wseed in enumerate(chunk):
                    for di in range(drones_per_world):
                        stem = f"w{wseed:06d}_d{di:02d}_f{f:03d}"
                        Image.fromarray(rgb[wi, di]).save(img_dir / f"{stem}.png")
                        m = vis[wi, di]
                        lines = yolo_label_lines(boxes[wi, di][m], cls[wi, di][m], width, height)
                        (lbl_dir / f"{stem}.txt").write_text("".join(x + "\n" for x in lines))
                        for c in cls[wi, di][m].tolist():
                            counts[TARGET_CLASSES[c]] += 1
                        n_img += 1
                        n_empty += not lines
                        frames_csv.append(
                            f"{split},{stem},{wseed},{di},{f},{f * views.target_dt_s:.6g},"
                            + ",".join(f"{v:.9g}" for v in pose[wi][di])
                            + f",{len(lines)}"
                        )
                if views.target_dt_s > 0:
                    advance_targets(world, views.target_dt_s)
        info.num_images[split] = n_img
        info.num_boxes[split] = counts
        info.empty_images[split] = n_empty
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(TARGET_CLASSES))
    info.data_yaml.write_text(
        f"# YOLO dataset rendered by isr_sim_bridge.yolo.make_yolo_dataset\n"
        f"path: {root}\ntrain: images/train\nval: images/val\nnc: {len(TARGET_CLASSES)}\n"
        f"names:\n{names}"
    )
    meta = {
        "train_world_seeds": train, "val_world_seeds": val, "drones_per_world": drones_per_world,
        "frames_per_drone": frames_per_drone, "seed": seed, "resolution": [width, height],
        "camera": dataclasses.asdict(cam_cfg), "views": dataclasses.asdict(views),
        "detection": dataclasses.asdict(det_cfg), "world_spec": spec.to_dict(),
        "num_images": info.num_images, "num_boxes": info.num_boxes,
        "empty_images": info.empty_images,
    }  # fmt: skip
    (root / "frames.csv").write_text("\n".join(frames_csv) + "\n")
    (root / "dataset.json").write_text(json_dumps(meta, indent=1, default=list) + "\n")
    return info


# --------------------------------------------------------------------------------------- train


def train_yolo(dataset_yaml: str | Path, config: YoloConfig, out_dir: str | Path) -> Path:
    """Train a YOLO model from ``config.model`` (random init) on a dataset; return ``best.pt``.

    Runs ultralytics' trainer offline and deterministically (``seed``, ``deterministic=True``)
    into ``out_dir/train`` (``weights/best.pt``, ``weights/last.pt``, ``results.csv``, plots).
    """
    dataset_yaml = Path(dataset_yaml)
    if not dataset_yaml.is_file():
        raise FileNotFoundError(f"dataset YAML not found: {dataset_yaml}")
    config.validate()
    import_ultralytics()
    from ultralytics import YOLO

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    model = YOLO(config.model, task="detect")
    model.train(
        data=str(dataset_yaml.resolve()), epochs=config.epochs, time=config.time_h or None,
        imgsz=config.imgsz, batch=config.batch, workers=config.workers, device=config.device,
        seed=config.seed, deterministic=True, optimizer=config.optimizer, lr0=config.lr0,
        patience=config.patience, warmup_epochs=config.warmup_epochs, scale=config.scale,
        mosaic=config.mosaic, close_mosaic=config.close_mosaic,
        flipud=config.flipud, fliplr=config.fliplr, cache="ram" if config.cache else False,
        amp=config.amp, plots=config.plots, verbose=config.verbose, project=str(out_dir),
        name="train", exist_ok=True, pretrained=False, iou=config.iou, max_det=config.max_det,
    )  # fmt: skip
    best = Path(model.trainer.best)
    if not best.is_file():
        best = Path(model.trainer.last)
    return best
