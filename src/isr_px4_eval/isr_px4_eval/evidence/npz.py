"""``isr eval --record-dir`` recordings (``.npz``) converted to rosbag2 (``isr record-npz``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from isr_direct_dynamics.io_checks import describe_exception
from isr_px4_eval.evidence.recording import BagError, BagRecorder, StepRecord

# ---------------------------------------------------------------------------------------------
# npz episodes (isr eval --record-dir) -> bag


def load_npz_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` recording (``isr eval --record-dir``).

    A missing, empty, cut-short or foreign file is an error naming it (``FileNotFoundError`` /
    :class:`BagError`).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"recording not found: {p}")
    if p.stat().st_size == 0:
        raise BagError(f"recording {p} is empty (0 bytes)")
    try:
        z = np.load(p, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - zipfile, numpy and OS errors alike
        raise BagError(
            f"recording {p} is not a readable .npz recording ({describe_exception(exc)})"
        ) from None


def npz_to_bag(
    npz_path: str | Path, bag_path: str | Path, test_name: str = "", phase: str = ""
) -> Path:
    """Convert a recording of :func:`isr_px4_eval.evaluation.run.evaluate_policy` to a bag.

    Episode ``e`` becomes drone namespace ``/drone_<e>``; every episode starts at sim time 0 and
    is written for its ``length`` steps. Detections (``det_boxes_xyxy_px`` where
    ``det_visible``) go to both ``detections`` and ``detections_gt`` (the recording holds what
    perception gave the policy); ``meta_json`` goes to ``/isr/metadata``.
    """
    z = load_npz_arrays(npz_path)
    keys = set(z)
    if "pos_enu_m" not in keys:
        raise BagError(f"{npz_path} has no pos_enu_m (keys: {', '.join(sorted(keys))})")
    if z["pos_enu_m"].ndim != 3 or z["pos_enu_m"].shape[2] != 3:
        raise BagError(
            f"{npz_path}: pos_enu_m has shape {z['pos_enu_m'].shape}, expected (episodes, steps, 3)"
        )
    pos = z["pos_enu_m"].astype(np.float64)  # (E, T, 3)
    e_count, t_max = pos.shape[:2]
    length = z["length"].astype(int) if "length" in keys else np.full(e_count, t_max)

    def get(k: str, tail: tuple[int, ...], default: float = 0.0) -> np.ndarray:
        if k in keys:
            return z[k].astype(np.float64).reshape(e_count, t_max, *tail)
        return np.full((e_count, t_max, *tail), default)

    vel = get("vel_enu_m_s", (3,))
    quat = (
        get("quat_wxyz", (4,))
        if "quat_wxyz" in keys
        else np.tile([1.0, 0, 0, 0], (e_count, t_max, 1))
    )
    action = get("action", (4,)) if "action" in keys else None
    reward = get("reward", ())
    found = get("targets_found", ()) if "targets_found" in keys else None
    dt = float(z["control_dt_s"]) if "control_dt_s" in keys else 0.1
    meta: dict[str, Any] = {}
    if "meta_json" in keys:
        try:
            meta = dict(json.loads(str(z["meta_json"])))
        except (ValueError, TypeError):
            meta = {}
    seeds = [int(x) for x in z["world_seed"]] if "world_seed" in keys else [0] * e_count
    uniq = sorted(set(seeds))
    meta = {"recording": meta}
    meta.update(
        test_name=test_name or Path(npz_path).stem,
        phase=phase,
        control_dt_s=dt,
        world_seeds=uniq,
        world_of_drone=[uniq.index(s) for s in seeds],
        source_npz=str(npz_path),
    )
    rec_meta = meta["recording"]
    if isinstance(rec_meta, dict) and isinstance(rec_meta.get("world_spec"), dict):
        meta["world_spec"] = rec_meta["world_spec"]
    boxes = z["det_boxes_xyxy_px"] if "det_boxes_xyxy_px" in keys else None
    vis = z["det_visible"] if "det_visible" in keys else None
    tcls = z["target_class"] if "target_class" in keys else None
    cam = None
    if "image_size" in keys:
        w, h = (int(v) for v in z["image_size"])
        from isr_training.env import EnvConfig

        default_fov = EnvConfig.camera_fov_deg  # what recordings without the field were made with
        meta_fov = rec_meta.get("camera_fov_deg") if isinstance(rec_meta, dict) else None
        cam = (w, h, float(meta_fov if meta_fov is not None else default_fov))
    ret = np.zeros(e_count)
    with BagRecorder(
        bag_path, e_count, meta, camera=cam, world_of_drone=meta["world_of_drone"], image_drones=[]
    ) as rec:
        for k in range(t_max):
            active = k < length
            if not active.any():
                break
            ret += np.where(active, reward[:, k], 0.0)
            dets = None
            if boxes is not None and vis is not None:
                dets = []
                for e in range(e_count):
                    idx = np.nonzero(vis[e, k])[0]
                    cls = tcls[e][idx] if tcls is not None else np.zeros(len(idx), int)
                    dets.append({"boxes": boxes[e, k, idx], "class_ids": cls, "ids": idx})
            rec.add_step(
                StepRecord(
                    t_s=k * dt, step=k, pos_enu_m=pos[:, k], vel_enu_m_s=vel[:, k],
                    quat_wxyz=quat[:, k], action=action[:, k] if action is not None else None,
                    reward=reward[:, k], episode_return=ret.copy(),
                    targets_found=found[:, k] if found is not None else None,
                    rendered=True, gt=dets, det=dets, active=active,
                )
            )  # fmt: skip
    return Path(bag_path)
