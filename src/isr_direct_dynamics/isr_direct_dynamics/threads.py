"""CPU thread counts that follow the machine's free capacity (numba kernels and torch).

The workspace's parallel CPU code - the numba ``prange`` kernels (``cpu_kernels`` of this package,
of ``isr_sim_bridge`` and of ``isr_training``) and torch's intra-op threads - splits each call
over a team of threads and waits for the whole team at its end. When other processes keep the
cores busy, a team member is often not running: the call then lasts until the scheduler gives it
a core back, and torch's OpenMP threads (libgomp's default policy) busy-wait meanwhile, taking the
core from the very thread they wait for. Measured on 2 cores, load average ~4-7 (``isr bench
dynamics --model direct --drones 65536``): 2 torch threads ran at 0.2 M-1.3 M drone-steps/s against
1.8 M-4.2 M with one; on an idle machine 2 threads are the faster. So the count is chosen here:

* **Decision** (:func:`choose_threads`): with ``cpus`` usable CPUs (affinity mask, cgroup quota)
  of which other processes keep ``others`` busy, ``free = cpus - others`` and the count is
  ``round(free)``, at least 1 and at most the cap. A thread is added only for a core that is at
  least half free.
* **Cap**: ``requested`` threads (``--threads N``, config ``threads``) are an upper bound, never a
  demand; None, 0 or ``"auto"`` mean all usable CPUs. No more threads than CPUs are ever used.
* **Measurement** (:func:`sample_others`): the CPU time the *other* processes used, from the busy
  time of the usable CPUs in ``/proc/stat`` less this process's own CPU time, over a window.
  :func:`configure_threads` (start-up) sleeps :data:`STARTUP_SAMPLE_S` to measure it; without
  ``/proc/stat`` the 1-minute load average stands in. Afterwards :func:`current_threads` measures
  again every :data:`REFRESH_S` seconds over the time since the last measurement (cheap: a
  monotonic clock read per call in between), so a run follows load that comes or goes. Measured
  this way a busy process counts for what the scheduler gives it, which is its fair share: with
  a team of 2 threads and one other busy process, the other gets ~0.67 cores, free = 1.33 and the
  team drops to 1 thread.
* **Applied**: :func:`configure_threads` sets torch's intra-op threads and numba's thread count
  of the calling thread; :func:`isr_direct_dynamics.cpu_kernels.threads_for` (around every kernel
  call of the workspace) brings numba's count of its thread to :func:`current_threads` (1 for
  small batches), and on the thread that called :func:`configure_threads` also torch's. Without a
  call to :func:`configure_threads` (library use, ROS nodes, tests) torch is left alone and only
  numba adapts.

Results do not depend on the count: every numba kernel writes each drone's / camera's outputs
from one loop iteration (no reductions across iterations), and the torch operations of the step
are element-wise or reductions that torch computes the same way for any thread count (checked for
``sum``, ``cumsum``, ``mean``, ``std``, ``softmax`` and ``linear``). A start-up timing of a
parallel against a serial region was tried as an alternative and left out: on a shared machine a
few milliseconds of timing are as noisy as the load itself.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from dataclasses import dataclass

GOMP_SPINCOUNT = "20000"
"""libgomp's busy-wait (spins) before an idle torch thread sleeps, set in the environment at import
unless ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` is set (libgomp reads it once, when torch loads it:
``isr_direct_dynamics`` imports this module before torch)."""
if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT
STARTUP_SAMPLE_S = 0.1
"""Window of the start-up measurement of :func:`configure_threads` (it sleeps meanwhile)."""
REFRESH_S = 1.0
"""Seconds between two measurements of :func:`current_threads`."""
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_threads(text: str | int | None) -> int:
    """``--threads`` value: ``"auto"`` (or None) -> 0, else an integer >= 0 (argparse ``type``)."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "auto"):
        return 0
    value = int(text)
    if value < 0:
        raise ValueError(f"threads must be >= 0 or 'auto', got {value}")
    return value


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, bounded by a cgroup v2 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def choose_threads(requested: int | None, cpus: int, others: float | None) -> int:
    """The thread count for ``cpus`` usable CPUs of which other processes keep ``others`` busy.

    ``requested`` (None/0: no bound) caps the result; ``others`` None (unknown) gives the cap.
    """
    cap = cpus if not requested else min(int(requested), cpus)
    if others is None or not math.isfinite(others):
        return max(1, cap)
    free = cpus - max(0.0, others)
    return max(1, min(cap, math.floor(free + 0.5)))


def _busy_seconds(cpus: frozenset[int] | None, path: str = "/proc/stat") -> float | None:
    """Busy time (user, nice, system, irq, softirq, steal) of ``cpus`` in ``/proc/stat``, s."""
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError:
        return None
    busy = 0
    for line in lines:
        if not line.startswith("cpu") or not line[3:4].isdigit():
            continue
        parts = line.split()
        if cpus is not None and int(parts[0][3:]) not in cpus:
            continue
        v = [int(x) for x in parts[1:9]]
        busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return busy / _CLK_TCK


def _affinity() -> frozenset[int] | None:
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return None


@dataclass
class _Sample:
    """One reading of the clocks that :func:`sample_others` differences."""

    wall: float
    busy: float | None  # busy seconds of the usable CPUs, None without /proc/stat
    own: float  # this process's CPU time, s

    @classmethod
    def now(cls, cpus: frozenset[int] | None) -> _Sample:
        return cls(time.monotonic(), _busy_seconds(cpus), time.process_time())


def sample_others(before: _Sample, after: _Sample) -> float | None:
    """CPUs' worth of time the other processes used between two samples (None: unknown)."""
    wall = after.wall - before.wall
    if before.busy is None or after.busy is None or wall <= 0:
        return None
    others = (after.busy - before.busy) - (after.own - before.own)
    return max(0.0, others / wall)


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover
        return None


class _State:
    """The process-wide decision (one instance, :data:`_STATE`)."""

    def __init__(self) -> None:
        self.cap: int = 0  # requested bound, 0 = none
        self.cpus: int = usable_cpus()
        self.cpu_set = _affinity()
        self.count: int = self.cpus  # current choice
        self.owner: int | None = None  # thread that called configure_threads (torch's)
        self.last: _Sample | None = None
        self.next_refresh = 0.0
        self.lock = threading.Lock()

    def decide(self, others: float | None) -> int:
        self.count = choose_threads(self.cap, self.cpus, others)
        return self.count


_STATE = _State()


def _apply_torch(count: int) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != count:
        torch.set_num_threads(count)


def configure_threads(requested: int | str | None = None) -> int:
    """Choose the thread count now and apply it to torch and numba; return it.

    ``requested``: the user's bound (``--threads``; None, 0 or ``"auto"``: none). Measures the
    other processes' CPU use for :data:`STARTUP_SAMPLE_S` (1-minute load average without
    ``/proc/stat``), then sets ``torch.set_num_threads`` and numba's count (of this thread) to
    the choice. Later :func:`current_threads` keeps adapting it, within the bound, and sets
    torch's count again when it changes (on this thread only: torch's setting is per thread).
    """
    st = _STATE
    with st.lock:
        st.cap = parse_threads(requested)
        st.cpus = usable_cpus()
        st.cpu_set = _affinity()
        st.owner = threading.get_ident()
        before = _Sample.now(st.cpu_set)
        others = None
        if before.busy is not None:
            time.sleep(STARTUP_SAMPLE_S)
            st.last = _Sample.now(st.cpu_set)
            others = sample_others(before, st.last)
        if others is None:
            others = _load_average()
        count = st.decide(others)
        st.next_refresh = time.monotonic() + REFRESH_S
    _apply_torch(count)
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is in requirements.txt
        return count
    numba.set_num_threads(min(count, int(numba.config.NUMBA_NUM_THREADS)))
    return count


def current_threads() -> int:
    """The thread count for the next parallel call: the latest choice, measured again when due.

    Called by :func:`isr_direct_dynamics.cpu_kernels.threads_for` before every kernel; costs a
    clock read unless :data:`REFRESH_S` has passed since the last measurement.
    """
    st = _STATE
    now = time.monotonic()
    if now < st.next_refresh or not st.lock.acquire(blocking=False):
        return st.count
    try:
        st.next_refresh = now + REFRESH_S
        sample = _Sample.now(st.cpu_set)
        others = sample_others(st.last, sample) if st.last is not None else None
        st.last = sample
        if others is not None:
            st.decide(others)
        count = st.count
    finally:
        st.lock.release()
    if st.owner == threading.get_ident():
        _apply_torch(count)
    return count
