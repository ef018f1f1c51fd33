"""Export of a trained policy for deployment: TorchScript, ONNX, state dict, README.

:func:`export_policy` wraps the policy in :class:`~isr_training.models.DeployPolicy`
(normalizer + (CNN) + actor mean + clamp; the observation statistics are baked in), traces it to
TorchScript, exports it to ONNX (opset 17, dynamic batch; metadata ``task_version``) and checks
both against PyTorch with :func:`check_exports`. :func:`write_model_readme` documents the files,
the observation/action spec and the task version.

:func:`load_policy_file` loads any of them back (or finds one in an experiment directory) as a
:class:`LoadedPolicy` with clear errors for missing, corrupt or mismatched files;
:func:`check_policy_fits` runs it once on an environment's observation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from isr_direct_dynamics.config import ConfigError, json_dumps
from isr_direct_dynamics.io_checks import atomic_output, describe_exception

from .env import DET_FEATURES, LEAD_SCALE_M, ISREnv
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
    det0 = 18 + oc.obs_coverage_cells**2
    lead0 = det0 + oc.top_k_detections * DET_FEATURES
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
            f"{det0}:{lead0}",
            f"top-{oc.top_k_detections} detections x 9 (valid, class one-hot x3, box centre x, y, "
            "size w, h, already-found)",
        ),
        (
            f"{lead0}:{env.obs_dim}",
            f"top-{oc.top_k_leads} remembered leads x 7, nearest first (valid, offset forward, "
            f"left, up in the heading frame / {LEAD_SCALE_M:g} m, class one-hot x3): targets "
            "detected but not yet found, where they were last detected",
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


# ----------------------------------------------------------------------------- loading

POLICY_FILES = (
    "final_model/policy_torchscript.pt",
    "policy_torchscript.pt",
    "final_model/policy.onnx",
    "policy.onnx",
    "final_model/policy.pt",
    "policy.pt",
)
"""Files looked for, in order, when the policy path is a directory (an experiment)."""


@dataclass
class LoadedPolicy:
    """A deployable policy: ``act(obs) -> (N, 4)`` action tensor, and where it came from."""

    path: Path
    """The file that was loaded."""
    kind: str
    """``torchscript``, ``onnx`` or ``state_dict``."""
    meta: dict[str, Any]
    """Export metadata (``task_version``, ``obs_dim``, ``image_shape``, ...)."""
    act: Callable[[Any], Tensor]
    """Observation (tensor or ``{"state", "image"}``) -> action ``(N, 4)`` in ``[-1, 1]``."""
    experiment_dir: Path | None = None
    """The experiment the policy belongs to (its ``config.yaml`` defines the task), if any."""
    input_dim: int | None = None
    """Observation values the network takes, read from its weights (None: not determinable)."""


def _find_policy_file(path: Path) -> Path:
    if not path.exists():
        raise ConfigError(f"policy '{path}' does not exist")
    if path.is_file():
        return path
    for name in POLICY_FILES:
        if (path / name).is_file():
            return path / name
    raise ConfigError(
        f"policy directory '{path}' has no exported policy (looked for {', '.join(POLICY_FILES)}; "
        "run the training's finalize stage)"
    )


def _experiment_of(file: Path) -> Path | None:
    for d in (file.parent, file.parent.parent):
        if (d / "config.yaml").is_file() and (d / "final_model").is_dir():
            return d
    return None


def _parse_meta_json(raw: str | bytes, file: Path, where: str, fix: str) -> dict[str, Any]:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"policy '{file}': its {where} is not text (binary data at byte {exc.start}); {fix}"
            ) from None
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"policy '{file}': its {where} is not valid JSON ({exc.msg} at line {exc.lineno} "
            f"column {exc.colno}); {fix}"
        ) from None
    except RecursionError:
        raise ConfigError(f"policy '{file}': its {where} is nested too deeply; {fix}") from None
    if not isinstance(meta, dict):
        kind = {list: "a JSON list", str: "a JSON string"}.get(type(meta), f"JSON {meta!r:.20}")
        raise ConfigError(f"policy '{file}': its {where} holds {kind}, expected an object; {fix}")
    return meta


def _policy_meta(raw: Any, file: Path, where: str) -> dict[str, Any]:
    """Checked export metadata of a policy; every problem a ConfigError naming the file.

    ``raw``: the JSON text of an object, or the dict of a ``policy.pt``, found in ``where``.
    """
    if raw is None or raw in ("", b""):
        return {}
    fix = "re-export the policy"
    meta = dict(raw) if isinstance(raw, dict) else _parse_meta_json(raw, file, where, fix)
    obs_dim = meta.get("obs_dim")
    if obs_dim is not None and (
        isinstance(obs_dim, bool) or not isinstance(obs_dim, int) or obs_dim <= 0
    ):
        raise ConfigError(
            f"policy '{file}': its {where} has obs_dim {obs_dim!r}, expected a positive integer; "
            f"{fix}"
        )
    image_shape = meta.get("image_shape")
    if image_shape is not None and not (
        isinstance(image_shape, list)
        and len(image_shape) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in image_shape)
    ):
        raise ConfigError(
            f"policy '{file}': its {where} has image_shape {image_shape!r:.40}, expected "
            f"[height, width, 3] or null; {fix}"
        )
    version = meta.get("task_version")
    if version is not None and not isinstance(version, str):
        raise ConfigError(f"policy '{file}': its {where} has a non-text task_version; {fix}")
    return meta


def _policy_format(file: Path) -> str:
    """``torchscript``, ``state_dict`` or ``unknown``, from the content of a non-ONNX file."""
    import zipfile

    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise ConfigError(f"cannot read policy '{file}': {exc.strerror or exc}") from None
    if size == 0:
        raise ConfigError(f"policy '{file}' is empty (0 bytes); export or copy it again")
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(file) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            why = "not a complete zip archive" if isinstance(exc, zipfile.BadZipFile) else exc
            raise ConfigError(
                f"policy '{file}' is cut short or corrupt ({why}); export or copy it again"
            ) from None
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "state_dict"
    if head[:1] == b"\x80":  # a pickle of a legacy (non-zip) torch.save
        return "state_dict"
    return "unknown"


def _first_linear_inputs(params: list[tuple[str, Tensor]]) -> int | None:
    """Input size of the first weight matrix, when the network starts with a linear layer."""
    for name, t in params:
        if name.endswith("weight"):
            return int(t.shape[1]) if t.dim() == 2 else None
    return None


def _load_torchscript(file: Path) -> tuple[Callable[..., Tensor], dict[str, Any], int | None]:
    extra = {"meta.json": ""}
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(file), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # noqa: BLE001 - a corrupt archive is a user error
        raise ConfigError(
            f"policy '{file}' is a corrupt TorchScript archive ({describe_exception(exc)}); "
            "export or copy it again"
        ) from None
    module.eval()
    meta = _policy_meta(extra["meta.json"], file, "meta.json")
    buffers = dict(module.named_buffers())
    if "obs_norm.mean" in buffers and buffers["obs_norm.mean"].dim() == 1:
        input_dim: int | None = int(buffers["obs_norm.mean"].shape[0])
    elif meta.get("image_shape"):
        input_dim = None
    else:
        input_dim = _first_linear_inputs(list(module.named_parameters()))
    return module, meta, input_dim


def _load_onnx(file: Path) -> tuple[Callable[..., Tensor], dict[str, Any], int | None]:
    import onnx
    import onnxruntime as ort

    if file.stat().st_size == 0:
        raise ConfigError(f"policy '{file}' is empty (0 bytes); export or copy it again")
    try:
        model = onnx.load(str(file))
    except Exception as exc:  # noqa: BLE001 - any parse failure means a corrupt file
        raise ConfigError(
            f"policy '{file}' is not a valid ONNX model ({exc.__class__.__name__}); export or "
            "copy it again"
        ) from None
    props = {p.key: p.value for p in model.metadata_props}
    meta = _policy_meta(props.get("meta"), file, "ONNX metadata 'meta'")
    if "task_version" in props:
        meta.setdefault("task_version", props["task_version"])
    try:
        sess = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(
            f"policy '{file}' cannot be loaded by onnxruntime ({describe_exception(exc)})"
        ) from None
    inputs = sess.get_inputs()
    if not inputs:
        raise ConfigError(f"policy '{file}' is an ONNX model without inputs")
    names = [i.name for i in inputs]
    shape = list(inputs[0].shape or [])
    input_dim = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None

    def run(state: Tensor, image: Tensor | None = None) -> Tensor:
        feeds = {names[0]: state.detach().cpu().numpy().astype("float32")}
        if image is not None and len(names) > 1:
            feeds[names[1]] = image.detach().cpu().numpy()
        return torch.from_numpy(sess.run(None, feeds)[0])

    return run, meta, input_dim


def _load_state_dict(file: Path) -> tuple[Callable[..., Tensor], dict[str, Any], int | None]:
    """``policy.pt`` of :func:`isr_training.export.export_policy` (a DeployPolicy state dict)."""
    from isr_training.models import DeployPolicy, TorchFileError, safe_load

    try:
        data = safe_load(file, what="policy")
    except TorchFileError as exc:
        raise ConfigError(
            f"policy '{file}' is corrupt ({exc.reason}); export or copy it again"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ConfigError(f"policy '{file}' is not an exported policy (no 'model' state dict)")
    sd = data["model"]
    raw_meta = data.get("meta")
    if raw_meta is not None and not isinstance(raw_meta, dict):
        raise ConfigError(f"policy '{file}': its 'meta' is a {type(raw_meta).__name__}, not a dict")
    meta = _policy_meta(raw_meta, file, "'meta'")
    if any(str(k).startswith("encoder.") for k in sd):
        raise ConfigError(
            f"policy '{file}' has a camera encoder: evaluate its policy_torchscript.pt instead"
        )
    if "obs_norm.mean" not in sd or "obs_norm.var" not in sd:
        raise ConfigError(f"policy '{file}' is not a DeployPolicy state dict (no obs_norm)")
    try:  # checks the activation and the weights' shapes
        policy = DeployPolicy.from_state_dict(sd, meta.get("activation", "elu"))
    except Exception as exc:  # noqa: BLE001 - malformed weights are a user error
        raise ConfigError(
            f"policy '{file}' is not a usable DeployPolicy state dict ({describe_exception(exc)})"
        ) from None
    input_dim = int(policy.obs_norm.mean.shape[0])

    def run(state: Tensor, image: Tensor | None = None) -> Tensor:
        return policy(state)

    meta.setdefault("obs_dim", input_dim)
    return run, meta, input_dim


def load_policy_file(path: str | Path, expect_task_version: str | None = None) -> LoadedPolicy:
    """Load an exported policy; user errors raise :class:`ConfigError` naming the path.

    ``path``: ``policy_torchscript.pt``, ``policy.onnx``, ``policy.pt`` (state dict of
    :class:`~isr_training.models.DeployPolicy`; its activation is read from the metadata, ELU when
    absent) or a directory (an experiment, or its ``final_model``), where the first of
    :data:`POLICY_FILES` is used. The file's ``task_version`` must equal the workspace's.
    """
    from isr_training.task.config import TASK_VERSION

    file = _find_policy_file(Path(path))
    if file.suffix.lower() == ".onnx":
        kind = "onnx"
        loader = _load_onnx
    else:
        kind = _policy_format(file)
        if kind == "unknown":
            raise ConfigError(
                f"policy '{file}' is not a policy file (neither TorchScript, a policy.pt state "
                "dict nor ONNX, which needs a .onnx name)"
            )
        loader = _load_torchscript if kind == "torchscript" else _load_state_dict
    try:
        act_fn, meta, input_dim = loader(file)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a file we cannot use is a user error
        raise ConfigError(
            f"policy '{file}' is corrupt or not a {kind} policy ({describe_exception(exc)})"
        ) from None
    if input_dim is not None and meta.get("obs_dim") not in (None, input_dim):
        raise ConfigError(
            f"policy '{file}': its metadata says obs_dim {meta['obs_dim']}, but its network takes "
            f"{input_dim} observation values; re-export the policy"
        )
    want = expect_task_version or TASK_VERSION
    got = meta.get("task_version")
    if got is None:
        raise ConfigError(f"policy '{file}' has no task_version metadata (expected '{want}')")
    if got != want:
        raise ConfigError(
            f"policy '{file}' was exported for task version '{got}', this workspace runs '{want}'"
        )

    @torch.no_grad()
    def act(obs: Any) -> Tensor:
        if isinstance(obs, dict):
            if meta.get("image_shape"):
                out = act_fn(obs["state"].cpu(), obs["image"].cpu())
            else:
                out = act_fn(obs["state"].cpu())
        else:
            out = act_fn(obs.cpu())
        return out.float().clamp(-1.0, 1.0)

    return LoadedPolicy(file, kind, meta, act, _experiment_of(file), input_dim)


def check_policy_fits(policy: LoadedPolicy, env: Any) -> None:
    """Refuse (``ConfigError``) a policy that cannot run on ``env``'s observations, before a run.

    Compares the policy's input size (from its weights, else its metadata) with
    ``env.obs_dim`` (naming both), then runs it once on a zero observation and checks that it
    returns one 4-value action per drone.
    """
    size = policy.input_dim if policy.input_dim is not None else policy.meta.get("obs_dim")
    if size is not None and int(size) != env.obs_dim:
        raise ConfigError(
            f"policy '{policy.path}' takes {size} observation values, this task gives "
            f"{env.obs_dim} (a policy of another task version or observation settings)"
        )
    state = torch.zeros(1, env.obs_dim, device=getattr(env, "device", "cpu"))
    obs: Any = state
    camera = getattr(env, "image", None) is not None
    if camera:
        image = torch.zeros(1, *env.image_shape, dtype=torch.uint8, device=state.device)
        obs = {"state": state, "image": image}
    what = f"{env.obs_dim} observation values" + (" and a camera image" if camera else "")
    try:
        out = policy.act(obs)
    except Exception as exc:  # noqa: BLE001 - a policy that cannot run is a user error
        raise ConfigError(
            f"policy '{policy.path}' cannot run on this task's observation ({what}): "
            f"{describe_exception(exc)}"
        ) from None
    if not isinstance(out, Tensor) or tuple(out.shape) != (1, 4):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ConfigError(
            f"policy '{policy.path}' returns {got} for one observation, expected (1, 4) actions"
        )
