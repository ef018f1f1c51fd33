"""Export of a trained policy for deployment: TorchScript, ONNX, state dict, README.

:func:`export_policy` wraps the policy in :class:`~isr_training.models.DeployPolicy`
(normalizer + (CNN) + actor mean + clamp; the observation statistics are baked in), traces it to
TorchScript, exports it to ONNX (opset 17, dynamic batch; metadata ``task_version``) and checks
both against PyTorch with :func:`check_exports`. :func:`write_model_readme` documents the files,
the observation/action spec and the task version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from isr_direct_dynamics.config import json_dumps
from isr_direct_dynamics.io_checks import atomic_output

from .env import ISREnv
from .models import DeployPolicy, atomic_torch_save
from .task.config import TASK_VERSION
from .training_config import TrainingConfig


def export_policy(
    policy: torch.nn.Module,
    out_dir: str | Path,
    obs_dim: int,
    image_shape: list[int] | None,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Write ``policy.pt``, ``policy_torchscript.pt`` and ``policy.onnx``; check they agree.

    Returns the max abs differences of TorchScript and ONNX (onnxruntime) against PyTorch on
    random observations (the normalizer clips, so wide inputs exercise it).
    """
    import warnings

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    deploy = DeployPolicy(policy).cpu().eval()
    gen = torch.Generator().manual_seed(0)
    example = [torch.randn(64, obs_dim, generator=gen) * 3]
    names = ["state"]
    if image_shape is not None:
        example.append(torch.randint(0, 256, (64, *image_shape), generator=gen, dtype=torch.uint8))
        names.append("image")
    meta_json = json_dumps(meta)
    atomic_torch_save({"model": deploy.state_dict(), "meta": meta}, out / "policy.pt")
    with warnings.catch_warnings():
        # TorchScript and the TorchScript-based ONNX exporter are deprecated in torch 2.x but
        # still the formats that C++/ROS deployments load; silence their warnings here.
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.no_grad():
            traced = torch.jit.trace(deploy, tuple(example))
        with atomic_output(out / "policy_torchscript.pt") as tmp:
            torch.jit.save(traced, str(tmp), _extra_files={"meta.json": meta_json})
        with atomic_output(out / "policy.onnx") as tmp:
            torch.onnx.export(
                deploy,
                tuple(example),
                str(tmp),
                dynamo=False,
                input_names=names,
                output_names=["action"],
                opset_version=17,
                dynamic_axes={**{n: {0: "batch"} for n in names}, "action": {0: "batch"}},
            )
            import onnx

            model = onnx.load(str(tmp))
            for k, v in (("task_version", meta.get("task_version", "")), ("meta", meta_json)):
                entry = model.metadata_props.add()
                entry.key, entry.value = k, str(v)
            onnx.save(model, str(tmp))
    return check_exports(deploy, out, tuple(example))


def check_exports(
    reference: torch.nn.Module, out_dir: str | Path, example: tuple[torch.Tensor, ...]
) -> dict[str, float]:
    """Max abs difference of the saved TorchScript and ONNX models against ``reference``."""
    import warnings

    import numpy as np
    import onnxruntime as ort

    out = Path(out_dir)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ref = reference(*example)
        ts = torch.jit.load(str(out / "policy_torchscript.pt"))(*example)
    sess = ort.InferenceSession(str(out / "policy.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), example, strict=True)}
    onnx_out = sess.run(None, feeds)[0]
    return {
        "torchscript_max_abs_diff": float((ts - ref).abs().max()),
        "onnx_max_abs_diff": float(np.abs(onnx_out - ref.numpy()).max()),
    }


def write_model_readme(
    out_dir: str | Path,
    name: str,
    cfg: TrainingConfig,
    env: ISREnv,
    meta: dict[str, Any],
    diffs: dict[str, float],
) -> None:
    """``README.md`` of an exported policy: how to load and run it, its spec and provenance."""
    t = cfg.env.task
    oc = t.observation
    layout = [
        ("0:2", "position x, y relative to the area centre / half extent"),
        ("2", "altitude / geofence ceiling"),
        ("3:6", "velocity ENU / max velocity"),
        ("6:8", "sin(yaw), cos(yaw)"),
        ("8", "altitude / geofence ceiling (again)"),
        ("9", "time left in the episode (1 -> 0)"),
        ("10:16", "distances to the geofence walls (min x, y, z; max x, y, z) / half extent"),
        ("16:18", "vector to the nearest no-fly zone / half extent"),
        (
            f"18:{18 + oc.obs_coverage_cells**2}",
            f"own coverage grid {oc.obs_coverage_cells}x{oc.obs_coverage_cells} (0..1)",
        ),
        (
            f"{18 + oc.obs_coverage_cells**2}:{env.obs_dim}",
            f"top-{oc.top_k_detections} detections x 9 (valid, class one-hot x3, box centre x, y, "
            "size w, h, already-found)",
        ),
    ]
    rows = "\n".join(f"| `{a}` | {b} |" for a, b in layout)
    image = meta["image_shape"]
    image_line = (
        f"- `image`: `(N, {image[0]}, {image[1]}, 3)` uint8 RGB camera frame.\n" if image else ""
    )
    call = "policy(state, image)" if image else "policy(state)"
    text = f"""# ISR search policy `{name}`

Task version **`{TASK_VERSION}`** (`isr_training.task.config.TASK_VERSION`): evaluation must use
the same task version. Trained with physics quality `{cfg.physics_quality}` (vehicle
`{cfg.env.vehicle}`, control period {t.control_dt_s:g} s, episodes of {t.episode_length_s:g} s).
Source: `{meta["source"]}`.

## Files

- `policy_torchscript.pt`: TorchScript module (no Python class needed).
- `policy.onnx`: ONNX model (opset 17; inputs {
        ", ".join(f"`{n}`" for n in (["state", "image"] if image else ["state"]))
    }, output `action`; metadata `task_version`).
- `policy.pt`: the same weights as a state dict (`torch.load(..., weights_only=True)`;
  `isr_training.models.DeployPolicy` layout).

The observation normalization (running mean/std from training) is **baked into** all three: feed
raw observations. The output is the deterministic action (the Gaussian mean), already clipped.

## Load and run

```python
import torch
policy = torch.jit.load("policy_torchscript.pt")
action = {call}  # state: (N, {env.obs_dim}) float32 -> action: (N, 4) in [-1, 1]
```

```python
import onnxruntime as ort
sess = ort.InferenceSession("policy.onnx")
action = sess.run(["action"], {{"state": state_numpy{
        ', "image": image_numpy' if image else ""
    }}})[0]
```

In the workspace: `isr_training.env.ISREnv` produces the observation; step it with the action.

## Observation (`state`, float32, `(N, {env.obs_dim})`)

As built by `isr_training.env.ISREnv` (task `{TASK_VERSION}`):

| index | meaning |
|---|---|
{rows}

{image_line}
## Action (`(N, 4)`, float32 in `[-1, 1]`)

`[vx, vy, vz, yaw_rate]` normalized by the vehicle limits (max horizontal velocity
{env.limits.max_velocity_m_s:g} m/s, vertical {env.limits.max_vertical_velocity_m_s:g} m/s, yaw rate
{env.limits.max_yaw_rate_deg_s:g} deg/s), velocities in world ENU. The safety filter of the task
(geofence, altitude band, keep-outs) is applied by the environment, not by this model.

## Export check

Max abs difference against the PyTorch policy on 64 random observations: TorchScript
{diffs["torchscript_max_abs_diff"]:.2e}, ONNX (onnxruntime) {diffs["onnx_max_abs_diff"]:.2e}.
"""
    (Path(out_dir) / "README.md").write_text(text)
