"""``keep_freed_memory``: glibc keeps freed large blocks, so re-allocating costs no page faults."""

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
from stmgt.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def rounds():
    for _ in range(20):
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB: above glibc's largest mmap threshold
        del x
rounds()  # warm-up: the heap grows to its working size
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_keep_freed_memory_stops_page_faults_on_reallocation():
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.strip().splitlines()[-1])

    default, kept = faults("default"), faults("keep")
    # each fresh 64 MiB mapping faults in 16384 pages; kept memory was faulted in by the warm-up
    assert default > 20 * 10000
    assert kept < 1000


def test_keep_freed_memory_is_idempotent():
    from stmgt.runtime import keep_freed_memory

    assert keep_freed_memory() == keep_freed_memory()


# --- the thread policy ---------------------------------------------------------------------------------------------

def test_threads_for_takes_the_usable_cpus_less_the_busy_ones():
    from stmgt.runtime import threads_for

    assert threads_for(0.0, usable=2) == 2
    assert threads_for(0.3, usable=2) == 2  # a mostly idle neighbour
    assert threads_for(0.9, usable=2) == 1  # one CPU-bound neighbour on a 2-core machine
    assert threads_for(5.0, usable=2) == 1  # never fewer than one
    assert threads_for(1.0, usable=8) == 7
    assert threads_for(None, usable=4) == 4  # load unknown (no /proc): every usable CPU


def test_explicit_threads_come_from_the_request_or_omp_num_threads(monkeypatch):
    from stmgt.runtime import explicit_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert explicit_threads(None) is None and explicit_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert explicit_threads(None) == 2 and explicit_threads(1) == 1  # the request wins
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert explicit_threads(None) is None


def test_choose_threads_sets_torch_to_an_explicit_count():
    import torch

    from stmgt.runtime import choose_threads

    before = torch.get_num_threads()
    try:
        assert choose_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cpu_load_counts_another_process_and_not_this_one():
    """A child spinning on one CPU reads as about one busy CPU; this process spinning itself does not count."""
    import time

    from stmgt.runtime import CpuLoad

    load = CpuLoad()
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        time.sleep(0.3)
        load.others()  # start the interval once the child runs
        time.sleep(1.0)
        busy = load.others()
    finally:
        child.wait()
    assert 0.6 <= busy <= len(load.cpus or [0, 0]) + 0.1, busy
    t = time.perf_counter()
    own = CpuLoad()
    while time.perf_counter() - t < 0.6:  # spin here: this process's own time is taken out
        pass
    mine_counted = own.others()
    assert mine_counted is not None and mine_counted < busy


def test_import_stmgt_makes_openmp_workers_wait_passively_unless_told_otherwise():
    code = "import os, stmgt, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_thread_governor_backs_off_when_another_process_takes_a_cpu(monkeypatch):
    import torch

    from stmgt import runtime

    before = torch.get_num_threads()
    readings = iter([0.0, 1.0, 0.0])
    monkeypatch.setattr(runtime.CpuLoad, "others", lambda self, min_interval=0.0: next(readings))
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 2)
    try:
        torch.set_num_threads(2)
        g = runtime.ThreadGovernor(period=0.0)
        assert g.tick() is None  # alone: keeps 2
        assert g.tick() == 1 and torch.get_num_threads() == 1  # a neighbour took a CPU
        assert g.tick() == 2 and torch.get_num_threads() == 2  # and gave it back
        assert g.counts == [2, 1, 2]
    finally:
        torch.set_num_threads(before)
