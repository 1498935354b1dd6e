"""coralfs' own processes fix the allocator's thresholds, so 4 MiB buffers are reused
instead of being fresh, page-faulted memory every time (objects/memory.py)."""

from __future__ import annotations

import subprocess

from tests.conftest import PYTHON

PROBE = """
import resource, sys
import numpy as np
if sys.argv[1] == "tuned":
    from coralfs.objects.memory import tune_allocator
    assert tune_allocator()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):  # warm up: the first buffers are fresh either way
    a = np.ones(4 << 20, np.uint8); b = a + 1; del a, b
before = faults()
for _ in range(50):
    a = np.ones(4 << 20, np.uint8)  # a decoded chunk, and a temporary made from it
    b = a + 1
    del a, b
print(faults() - before)
"""


def _faults(mode: str) -> int:
    p = subprocess.run([PYTHON, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(p.stdout)


def test_tuned_4_mib_buffers_are_reused_not_faulted_in_again():
    plain, tuned = _faults("plain"), _faults("tuned")
    pages = 50 * 2 * (4 << 20) // 4096
    assert plain > pages // 4  # glibc's defaults: a buffer a round faulted in again
    assert tuned < pages // 20, (plain, tuned)

