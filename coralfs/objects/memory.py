"""The C allocator's settings for coralfs' own processes (the CLI and the mount daemon).

The codecs work in 4 MiB buffers: decoded chunks, byte planes, zstd outputs, numpy
temporaries. glibc serves blocks that large with mmap (its threshold starts at 128 KiB
and rises only as far as the largest block freed) and gives freed memory back at the top
of the heap once 2x that threshold is free, so nearly every buffer is fresh memory and
pays its page faults again: measured on this project's machine, an fp32 keyframe decode
took 5.4 ms of CPU on the main thread, 3.3 ms with fixed thresholds, and 4.6-5.1 ms in a
pool of four threads, 3.8 ms fixed (docs/decisions.md, "Allocator thresholds"). Fixed
thresholds keep blocks under 32 MiB in the heap and keep up to 64 MiB free before
returning it, so buffers are reused. Only coralfs' own processes call this: a program
that imports coralfs keeps its allocator as it set it.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 64 << 20


def tune_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds for this process; False where there is no
    glibc (another libc, another system) or it refused, which only costs speed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    except (OSError, AttributeError):  # not glibc
        return False
    if not ok:
        log.debug("mallopt refused the allocator thresholds")
    return ok
