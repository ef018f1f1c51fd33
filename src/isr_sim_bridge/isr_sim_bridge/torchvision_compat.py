"""Make ``torchvision.ops.nms`` work where torchvision's compiled ops do not load (CPU-only torch).

ultralytics pins ``torchvision==0.28.0``; the wheel PyPI serves for it is a CUDA build whose
``_C.so`` links ``libc10_cuda.so``/``libtorch_cuda.so``. Next to a CPU-only torch
(``torch==2.13.0+cpu``) that library does not load, and then ``import torchvision`` itself fails:
``torchvision/_meta_registrations.py`` registers a fake kernel for ``torchvision::nms`` at import,
and raises ``RuntimeError: operator torchvision::nms does not exist``. ultralytics imports
torchvision in its predictor and validator, so prediction and validation fail with it.

:func:`ensure_torchvision_ops` fixes this without touching the installed packages:

1. If torchvision's compiled ``_C`` library loads (a matching CPU or CUDA build), nothing else is
   done: mode ``"native"``.
2. Otherwise the ``torchvision::nms`` and ``torchvision::qnms`` operators are defined with
   :mod:`torch.library` (exact torchvision schemas) and implemented by :func:`nms_torch`, a
   pure-torch, vectorised exact greedy NMS, for every backend (``CompositeExplicitAutograd``).
   torchvision then imports normally and registers its own fake (meta) kernels on them; the
   check that ``torchvision.ops.nms`` runs first (``_assert_has_ops``, which asks whether the
   compiled library loaded) is replaced, in ``torchvision.ops.boxes`` only, by a check that the
   ``torchvision::nms`` operator exists. Mode ``"fallback"``.

After the call ``torchvision.ops.nms``, ``torchvision.ops.batched_nms`` and everything in
ultralytics that uses them work unchanged. In fallback mode the other compiled ops stay
unavailable unless torchvision has its own pure-Python path for them (``roi_align`` does;
``roi_pool``, ``ps_roi_*``, ``deform_conv2d``, ``box_iou_rotated`` and image decoding do not);
YOLO detection training, validation, prediction and tracking use none of them.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading

import torch
from torch import Tensor

NMS_SCHEMA = "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
"""Schema of ``torchvision::nms`` (as in torchvision's ``csrc/ops/nms.cpp``)."""
QNMS_SCHEMA = "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
"""Schema of ``torchvision::qnms`` (quantized NMS; torchvision registers a fake kernel for it)."""

_LOCK = threading.Lock()
_MODE: str | None = None
_LIBRARY: torch.library.Library | None = None  # must stay referenced: dropping it unregisters


def _op_exists(qualname: str) -> bool:
    """True when the operator ``namespace::name`` has a schema in the dispatcher."""
    namespace, name = qualname.split("::")
    try:
        getattr(getattr(torch.ops, namespace), name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _box_iou_matrix(a: Tensor, area_a: Tensor, b: Tensor, area_b: Tensor) -> Tensor:
    """IoU of every box of ``a`` (A, 4) with every box of ``b`` (B, 4), xyxy, shape (A, B).

    Same arithmetic and order as torchvision's CPU kernel, so results are bitwise equal:
    ``inter = max(0, xx2 - xx1) * max(0, yy2 - yy1)``, ``iou = inter / (area_i + area_j - inter)``.
    """
    xx1 = torch.maximum(a[:, None, 0], b[None, :, 0])
    yy1 = torch.maximum(a[:, None, 1], b[None, :, 1])
    xx2 = torch.minimum(a[:, None, 2], b[None, :, 2])
    yy2 = torch.minimum(a[:, None, 3], b[None, :, 3])
    inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def nms_torch(dets: Tensor, scores: Tensor, iou_threshold: float, block_size: int = 512) -> Tensor:
    """Greedy non-maximum suppression in pure torch, with torchvision's exact semantics.

    Boxes are visited in order of decreasing score (stable sort, as torchvision); a box is kept
    unless a kept box of higher rank overlaps it with IoU ``> iou_threshold``. The work is
    vectorised per block of ``block_size`` ranked boxes: the block is first suppressed by the
    boxes kept so far (one IoU matrix), then the greedy order inside the block is resolved by a
    fixed-point iteration on the block's IoU matrix (a box's fate depends only on higher-ranked
    boxes, so the iteration reaches the unique greedy solution; it usually takes a handful of
    passes). Memory is
    ``O(block_size * max(block_size, kept))``.

    Args:
        dets: (N, 4) boxes ``x1, y1, x2, y2`` (any floating dtype, any device).
        scores: (N,) scores.
        iou_threshold: boxes with IoU strictly greater than this are suppressed.
        block_size: ranked boxes processed per vectorised block.

    Returns:
        (K,) int64 indices into ``dets`` of the kept boxes, in order of decreasing score.
    """
    if dets.dim() != 2 or dets.shape[-1] != 4:
        raise RuntimeError(f"boxes should be a 2d tensor of shape (N, 4), got {tuple(dets.shape)}")
    if scores.dim() != 1 or scores.shape[0] != dets.shape[0]:
        raise RuntimeError(
            f"scores should be a 1d tensor with one score per box, got {tuple(scores.shape)} "
            f"for {dets.shape[0]} boxes"
        )
    n = int(dets.shape[0])
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    order = torch.sort(scores, dim=0, descending=True, stable=True).indices
    boxes = dets[order]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept = torch.empty(0, dtype=torch.long, device=dets.device)  # ranks of kept boxes
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        blk, blk_area = boxes[start:stop], area[start:stop]
        # Compare in float64 like the C++ kernel compares a float IoU with a double threshold.
        cand = torch.ones(stop - start, dtype=torch.bool, device=dets.device)
        if kept.numel():
            over = _box_iou_matrix(boxes[kept], area[kept], blk, blk_area).double() > iou_threshold
            cand = ~over.any(dim=0)
        suppress = _box_iou_matrix(blk, blk_area, blk, blk_area).double() > iou_threshold
        suppress = torch.triu(suppress, diagonal=1)  # only a higher-ranked box (row) suppresses
        suppress &= cand[:, None]
        keep = cand
        while True:
            new_keep = cand & ~(suppress & keep[:, None]).any(dim=0)
            if torch.equal(new_keep, keep):
                break
            keep = new_keep
        kept = torch.cat((kept, torch.nonzero(keep).flatten() + start))
    return order[kept]


def _qnms_torch(dets: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """``torchvision::qnms`` fallback: NMS of the integer representations, computed in float."""
    return nms_torch(dets.to(torch.float64), scores.to(torch.float64), iou_threshold)


def _torchvision_extension_path() -> str | None:
    """Path of torchvision's compiled ``_C`` library, or None when torchvision has none."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    lib_dir = list(spec.submodule_search_locations)[0]
    loader = (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
    ext = importlib.machinery.FileFinder(lib_dir, loader).find_spec("_C")
    return None if ext is None else ext.origin


def _compiled_ops_load() -> bool:
    """Load torchvision's ``_C`` library the way ``torchvision.extension`` does; True on success."""
    if _op_exists("torchvision::nms"):
        return True
    path = _torchvision_extension_path()
    if path is None:
        return False
    try:
        torch.ops.load_library(path)
    except (ImportError, OSError):
        return False
    return _op_exists("torchvision::nms")


def _register_fallback_ops() -> None:
    global _LIBRARY
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for schema, name, fn in (
        (NMS_SCHEMA, "nms", nms_torch),
        (QNMS_SCHEMA, "qnms", _qnms_torch),
    ):
        if not _op_exists(f"torchvision::{name}"):
            lib.define(schema)
        lib.impl(name, fn, "CompositeExplicitAutograd")
    _LIBRARY = lib


def _assert_nms_op() -> None:
    """Replacement of ``torchvision.ops.boxes._assert_has_ops`` in fallback mode."""
    if not _op_exists("torchvision::nms"):
        raise RuntimeError("torchvision::nms is not registered; call ensure_torchvision_ops()")


def ensure_torchvision_ops() -> str:
    """Make ``import torchvision`` and ``torchvision.ops.nms`` work; idempotent, thread-safe.

    Call it before importing ultralytics (:mod:`isr_sim_bridge.yolo` does). It imports torchvision.

    Returns:
        ``"native"`` when torchvision's compiled ops loaded, ``"fallback"`` when
        ``torchvision::nms`` is served by :func:`nms_torch` (see the module docstring).

    Raises:
        ModuleNotFoundError: torchvision is not installed.
        RuntimeError: torchvision was already imported without its ops and without this module.
    """
    global _MODE
    with _LOCK:
        if _MODE is not None:
            return _MODE
        if importlib.util.find_spec("torchvision") is None:
            raise ModuleNotFoundError(
                "torchvision is not installed (pip install torchvision, see requirements.txt)"
            )
        if "torchvision" in sys.modules:  # imported before us: it can only have its native ops
            import torchvision.extension

            if not torchvision.extension._has_ops() and not _op_exists("torchvision::nms"):
                raise RuntimeError(
                    "torchvision was imported without its compiled ops; call "
                    "ensure_torchvision_ops() before importing torchvision or ultralytics"
                )
            _MODE = "native" if torchvision.extension._has_ops() else "fallback"
            return _MODE
        if _compiled_ops_load():
            import torchvision  # noqa: F401

            _MODE = "native"
            return _MODE
        _register_fallback_ops()
        import torchvision.ops.boxes

        torchvision.ops.boxes._assert_has_ops = _assert_nms_op
        _MODE = "fallback"
        return _MODE


def torchvision_ops_mode() -> str | None:
    """``"native"``/``"fallback"`` after :func:`ensure_torchvision_ops`, else None."""
    return _MODE
