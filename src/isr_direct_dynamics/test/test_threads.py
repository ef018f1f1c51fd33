"""Thread-count decision of :mod:`isr_direct_dynamics.threads` (no timing: fake samples)."""

from __future__ import annotations

import numba
import pytest
import torch

from isr_direct_dynamics import cpu_kernels, threads
from isr_direct_dynamics.threads import _Sample, choose_threads, parse_threads, sample_others

pytestmark = pytest.mark.unit


@pytest.fixture
def state(monkeypatch):
    """The module's state on 2 CPUs, restored afterwards with torch's and numba's counts."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has fewer than 2 threads here")
    st = threads._STATE
    saved = {k: v for k, v in vars(st).items() if k != "lock"}
    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    st.cpus, st.cap, st.count, st.owner, st.last = 2, 0, 2, None, None
    yield st
    vars(st).update(saved)
    torch.set_num_threads(torch_threads)
    numba.set_num_threads(numba_threads)


def script_samples(monkeypatch, samples):
    """Make ``_Sample.now`` return ``samples`` in turn and ``configure_threads`` not sleep."""
    it = iter(samples)
    monkeypatch.setattr(threads._Sample, "now", classmethod(lambda cls, cpus: next(it)))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)


@pytest.mark.parametrize(
    "requested, cpus, others, expected",
    [
        (None, 2, 0.0, 2),  # idle: all cores
        (0, 2, 0.3, 2),  # light background load: a core more than half free
        (None, 2, 0.6, 1),  # second core less than half free
        (None, 2, 1.0, 1),  # one busy process: one core left
        (None, 2, 4.6, 1),  # the load: never below 1
        (2, 2, 4.0, 1),  # --threads 2 is a bound, not a demand
        (1, 2, 0.0, 1),  # --threads 1 on an idle machine
        (8, 2, 0.0, 2),  # never more threads than CPUs
        (None, 16, 3.2, 13),
        (4, 16, 3.2, 4),
        (None, 2, None, 2),  # unknown load: the cap
        (1, 2, None, 1),
        (None, 2, -0.5, 2),  # measurement noise below 0
        (None, 2, float("nan"), 2),
    ],
)
def test_choose_threads(requested, cpus, others, expected):
    assert choose_threads(requested, cpus, others) == expected


def test_parse_threads():
    assert parse_threads("auto") == 0
    assert parse_threads(" AUTO ") == 0
    assert parse_threads(None) == 0
    assert parse_threads("0") == 0
    assert parse_threads("3") == 3
    assert parse_threads(2) == 2
    with pytest.raises(ValueError):
        parse_threads("-1")
    with pytest.raises(ValueError):
        parse_threads("many")


def test_sample_others_subtracts_own_cpu_time():
    before = _Sample(wall=10.0, busy=100.0, own=5.0)
    # 2 s: the CPUs were busy 3.2 s, 1.2 s of it this process's -> others used 1 CPU
    assert sample_others(before, _Sample(wall=12.0, busy=103.2, own=6.2)) == pytest.approx(1.0)
    # own time counted on other CPUs / rounding of the tick counts: never below 0
    assert sample_others(before, _Sample(wall=12.0, busy=100.5, own=6.0)) == 0.0
    assert sample_others(before, _Sample(wall=12.0, busy=None, own=6.0)) is None
    assert sample_others(before, _Sample(wall=10.0, busy=101.0, own=5.0)) is None


def test_busy_seconds_reads_the_usable_cpus(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  300 0 100 900 0 0 0 0 0 0\n"
        "cpu0 100 0 50 400 7 0 0 0 0 0\n"  # busy 150 ticks (iowait is idle)
        "cpu1 200 10 50 500 0 3 2 5 0 0\n"  # busy 270 ticks
        "intr 1 2 3\n"
    )
    tck = threads._CLK_TCK
    assert threads._busy_seconds(None, str(stat)) == pytest.approx(420 / tck)
    assert threads._busy_seconds(frozenset({1}), str(stat)) == pytest.approx(270 / tck)
    assert threads._busy_seconds(None, str(tmp_path / "missing")) is None


def test_configure_threads_applies_the_choice(state, monkeypatch):
    # start-up window of 0.1 s in which others kept 1 CPU busy -> 1 thread for torch and numba
    script_samples(monkeypatch, [_Sample(0.0, 50.0, 1.0), _Sample(0.1, 50.1, 1.0)])
    assert threads.configure_threads(None) == 1
    assert torch.get_num_threads() == 1
    assert numba.get_num_threads() == 1
    # idle -> the bound
    script_samples(monkeypatch, [_Sample(0.0, 50.0, 1.0), _Sample(0.1, 50.0, 1.0)])
    assert threads.configure_threads("auto") == 2
    assert torch.get_num_threads() == 2
    assert numba.get_num_threads() == 2
    script_samples(monkeypatch, [_Sample(0.0, 50.0, 1.0), _Sample(0.1, 50.0, 1.0)])
    assert threads.configure_threads(1) == 1
    assert torch.get_num_threads() == 1


def test_configure_threads_without_proc_stat_uses_load_average(state, monkeypatch):
    script_samples(monkeypatch, [_Sample(0.0, None, 1.0)])
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (4.6, 4.0, 3.0))
    assert threads.configure_threads(None) == 1
    script_samples(monkeypatch, [_Sample(0.0, None, 1.0)])
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.1, 0.2, 0.3))
    assert threads.configure_threads(None) == 2


def test_current_threads_follows_the_load_within_the_bound(state, monkeypatch):
    script_samples(monkeypatch, [_Sample(0.0, 0.0, 0.0), _Sample(0.1, 0.0, 0.0)])
    assert threads.configure_threads(None) == 2

    def refresh(sample):
        script_samples(monkeypatch, [sample])
        state.next_refresh = 0.0  # due now
        return threads.current_threads()

    # load arrives: others used 1.1 of the 2 CPUs -> 1 thread, torch follows (configuring thread)
    assert refresh(_Sample(1.1, 1.9, 0.8)) == 1
    assert torch.get_num_threads() == 1
    assert threads.current_threads() == 1  # not due: no new sample taken
    # threads_for brings numba's count to the choice
    with cpu_kernels.threads_for(10_000, 100):
        assert numba.get_num_threads() == 1
    # the load goes: back to 2 threads, numba and torch
    assert refresh(_Sample(2.1, 2.9, 1.8)) == 2
    assert torch.get_num_threads() == 2
    with cpu_kernels.threads_for(10_000, 100):
        assert numba.get_num_threads() == 2
    with cpu_kernels.threads_for(10, 100):  # small batch: serial
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == 2
    # a bound of 1 holds on an idle machine
    script_samples(monkeypatch, [_Sample(3.0, 3.0, 2.0), _Sample(3.1, 3.0, 2.0)])
    assert threads.configure_threads(1) == 1
    assert refresh(_Sample(4.1, 3.0, 2.0)) == 1


def test_current_threads_leaves_torch_alone_without_configure(state, monkeypatch):
    torch.set_num_threads(1)
    state.last = _Sample(0.0, 0.0, 0.0)
    script_samples(monkeypatch, [_Sample(1.0, 0.0, 0.0)])
    state.next_refresh = 0.0
    assert threads.current_threads() == 2  # numba's choice: idle
    assert torch.get_num_threads() == 1  # torch untouched (no configure_threads call)
