"""Read-ahead policy of a mount: which chunks to decode before a reader asks for them.

Pure (no pyfuse3, no trio): reads.py asks it after each read and schedules what it
returns. The kernel reads 128 KiB at a time and aligns its readahead, so a reader of one
tensor touches the last chunk of the tensor before and the first of the one after.
Read-ahead therefore starts only once a reader has gone ``PREFETCH_AFTER`` bytes
sequentially within one tensor (or literal run), stays within it, and crosses one chunk
into the next only for a streaming reader (``CROSS_AFTER`` bytes in a row). The window is
planned again once per chunk of progress, so most reads cost one comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..objects.ids import ObjectId
from .content import Content

PREFETCH_CHUNKS = 4
STEP = 4 << 20  # plan again after this much progress (the default tensor chunk size; a
#                 repository with another one still plans about once per WINDOW / 4)
WINDOW = PREFETCH_CHUNKS * STEP
PREFETCH_AFTER = 512 << 10
CROSS_AFTER = 16 << 20


@dataclass
class ReadAhead:
    """Read-ahead state of one open file."""

    last_end: int = -1
    run_start: int = 0       # where the current run of sequential reads began
    region: int = -1         # start of the tensor or literal run being read
    planned_to: int = -1     # read-ahead already scheduled up to this offset

    def after_read(self, content: Content, off: int, n: int, region: int | None = None) -> list[ObjectId]:
        """Chunk ids worth decoding now, after a read of ``n`` bytes at ``off`` (``region``:
        where its tensor or literal run begins, if the caller resolved it already)."""
        end = off + n
        region = content.region_start(off) if region is None else region
        if off != self.last_end:
            self.run_start = off
            self.planned_to = -1
        if region != self.region:
            self.region = region
            self.planned_to = -1
        self.last_end = end
        run = end - max(self.run_start, region)
        if run < PREFETCH_AFTER or end >= content.size or self.planned_to > end + WINDOW - STEP:
            return []
        self.planned_to = end + WINDOW
        return list(dict.fromkeys(content.prefetch_ids(end, WINDOW, cross=run >= CROSS_AFTER)))
