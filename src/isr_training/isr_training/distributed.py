"""Data-parallel training on ``torch.distributed`` (one process per rank, launched by torchrun).

``isr train --nproc N`` (or ``torchrun --nproc_per_node N -m isr_training.train ...``; several
nodes: torchrun's ``--nnodes/--rdzv_endpoint``) runs N copies of the pipeline. Every rank owns a
shard of the training worlds on its own device (``cuda:<LOCAL_RANK>`` on GPUs, CPU threads
otherwise) and flies its drones; the PPO update all-reduces the gradients (one flat buffer per
minibatch, as rsl_rl does), the advantage-normalization moments and the observation-normalizer
statistics, so that every rank applies the same update to the same parameters: the update of N
ranks equals the one-rank update on the union of their batches. Rank 0 alone writes the
experiment directory (config, logs, TensorBoard, checkpoints, validation, the data, imitation and
finalize stages); the other ranks wait for it at barriers. A resume may use another number of
ranks: the checkpoint holds the global state (parameters, optimizer, normalizer, global step).

Backends: ``nccl`` for CUDA devices, ``gloo`` on CPU. :func:`init` reads torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); without it the
context is the single-process one and every helper is a no-op.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from isr_direct_dynamics.config import ConfigError

RANK_SEED_STRIDE = 1_000_003
"""Seed offset between ranks (action noise, minibatch order): a prime far from any seed range."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """Several ranks take part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and logs."""
        return self.rank == 0

    # -------------------------------------------------------------- collectives
    def all_reduce_sum_(self, t: Tensor) -> Tensor:
        """Sum ``t`` over the ranks in place (no-op on one rank); returns ``t``."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_reduce_grads_(self, params: list[nn.Parameter]) -> None:
        """Average the gradients of ``params`` over the ranks (one flat buffer, one call).

        Parameters without a gradient on this rank count as zero gradients; they must be the
        same on every rank (the PPO critic warm-up drops the actor's on all of them).
        """
        if not self.enabled:
            return
        with_grad = [p for p in params if p.grad is not None]
        if not with_grad:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in with_grad])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        k = 0
        for p in with_grad:
            n = p.grad.numel()
            p.grad.copy_(flat[k : k + n].view_as(p.grad))
            k += n

    def broadcast_module_(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into every rank's ``module``."""
        if not self.enabled:
            return
        for t in list(module.parameters()) + list(module.buffers()):
            with torch.no_grad():
                dist.broadcast(t.data, src=0)

    def broadcast_(self, t: Tensor) -> Tensor:
        """Rank 0's ``t`` into every rank's ``t`` (in place; no-op on one rank); returns ``t``."""
        if self.enabled:
            dist.broadcast(t, src=0)
        return t

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects: paths, small dicts)."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait for every rank (no-op on one rank)."""
        if self.enabled:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()

    def rank_seed(self, seed: int) -> int:
        """``seed`` for this rank (rank 0 keeps it: one rank reproduces a single-process run)."""
        return seed + RANK_SEED_STRIDE * self.rank


SINGLE = DistContext()
"""The single-process context."""


def from_environment() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's variables, or None when absent."""
    if "WORLD_SIZE" not in os.environ:
        return None
    try:
        world_size = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ConfigError(
            "torchrun variables RANK / WORLD_SIZE / LOCAL_RANK must be integers, got "
            f"{os.environ.get('RANK')!r} / {os.environ.get('WORLD_SIZE')!r} / "
            f"{os.environ.get('LOCAL_RANK')!r}"
        ) from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"torchrun gave rank {rank} of world size {world_size}")
    return rank, world_size, local_rank


def init(device: str, timeout_s: float = 1800.0) -> tuple[DistContext, str]:
    """Join the job torchrun started (if any); returns the context and this rank's device.

    ``device`` is the configured one: ``cuda`` becomes ``cuda:<LOCAL_RANK>`` (backend ``nccl``),
    ``cpu`` stays (backend ``gloo``). One rank, or no torchrun: :data:`SINGLE`, ``device``.
    """
    env = from_environment()
    if env is None or env[1] == 1:
        return SINGLE, device
    rank, world_size, local_rank = env
    die_with_parent()
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"invalid config field 'device': {device} but CUDA is not available")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"rank {rank} has LOCAL_RANK {local_rank} but this node has "
                f"{torch.cuda.device_count()} CUDA device(s): start at most that many per node"
            )
        torch.cuda.set_device(local_rank)
        device, backend = f"cuda:{local_rank}", "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=_dt.timedelta(seconds=timeout_s))
    return DistContext(rank, world_size, local_rank, backend), device


def die_with_parent() -> None:
    """Have the kernel SIGKILL this rank when its parent (torchrun's agent) dies (Linux).

    torchrun starts every rank in a session of its own: without this, a launcher killed with
    SIGKILL (out of memory, ``kill -9``, a lost login) leaves the ranks running and writing the
    experiment that a resume would then share with them. Elsewhere: no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


PR_SET_PDEATHSIG = 1
"""prctl option: signal delivered when the parent thread exits (linux/prctl.h)."""


def launch(module: str, nproc: int, argv: list[str]) -> int:
    """Run ``python -m module argv`` as ``nproc`` ranks on this node; torchrun's exit status.

    ``torchrun --standalone --nproc_per_node nproc`` with this interpreter.
    """
    import subprocess

    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", "-m", module, *argv,
    ]  # fmt: skip
    print(f"launching {nproc} ranks: {' '.join(cmd)}", file=sys.stderr)
    return subprocess.call(cmd)


def shutdown() -> None:
    """Leave the process group (if one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_process(rc: int) -> None:
    """End this process with ``rc``; a torchrun rank skips the interpreter's finalization.

    Gloo's worker threads may still hold the last collective's work object (its tensors are
    Python objects) when the interpreter finalizes; destroying it then takes the GIL from a dying
    interpreter and aborts the rank ("terminate called without an active exception", SIGABRT)
    after its work is done: seen in about 1 run in 6 of a 2-rank job on a loaded 2-core machine.
    A rank therefore flushes its streams and logs and leaves with ``os._exit``; everything it
    writes (checkpoints, logs, the experiment) is closed before this. One process (no torchrun,
    or a world of one, which :func:`init` never joins): ``sys.exit``.
    """
    env = from_environment()
    if env is None or env[1] == 1:
        sys.exit(rc)
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(rc)


def shard(num_worlds: int, ctx: DistContext) -> tuple[int, int]:
    """``(first, count)`` of this rank's worlds among ``num_worlds`` (equal shards).

    Raises ``ConfigError`` naming ``env.num_worlds`` when the ranks cannot share it equally.
    """
    if num_worlds % ctx.world_size:
        raise ConfigError(
            f"invalid config field 'env.num_worlds': {num_worlds} worlds cannot be shared "
            f"equally by {ctx.world_size} ranks; use a multiple of {ctx.world_size}"
        )
    count = num_worlds // ctx.world_size
    return ctx.rank * count, count
