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
