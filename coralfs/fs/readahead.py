"""Read-ahead policy of a mount: which chunks to decode before a reader asks for them.

Pure (no pyfuse3, no trio): reads.py asks it after each read and schedules what it
returns. The kernel reads 128 KiB at a time and aligns its readahead, so a reader of one
tensor touches the last chunk of the tensor before and the first of the one after.
Read-ahead therefore starts only once a reader has gone ``PREFETCH_AFTER`` bytes
sequentially within one tensor (or literal run), stays within it, and crosses one chunk
into the next only for a streaming reader (``CROSS_AFTER`` bytes in a row).

Once it starts it takes the rest of the tensor (whole-tensor decode-ahead, up to
``window`` bytes, which the read path keeps within a quarter of its chunk cache): readers
that fault pages in (mmap, safetensors ``load_file``, ``torch.load(mmap=True)``) keep only
a request or two in flight, so every chunk they will need should already be decoding on
every thread when they ask. The window is planned again when the reader is halfway
through it, so most reads cost one comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..objects.ids import ObjectId
from .content import Content

STEP = 4 << 20              # the default tensor chunk size
WINDOW = 64 << 20            # decode-ahead: the rest of the tensor, up to this much
MIN_WINDOW = 4 * STEP        # the smallest window (small chunk caches)
PREFETCH_AFTER = 512 << 10
CROSS_AFTER = 16 << 20


@dataclass
class ReadAhead:
    """Read-ahead state of one open file."""

    last_end: int = -1
    run_start: int = 0       # where the current run of sequential reads began
    region: int = -1         # start of the tensor or literal run being read
    planned_to: int = -1     # read-ahead already scheduled up to this offset
    crossed: bool = False    # the chunk after this region is scheduled too

    def after_read(self, content: Content, off: int, n: int, region: int | None = None,
                   window: int = WINDOW) -> list[ObjectId]:
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
            self.crossed = False
        self.last_end = end
        run = end - max(self.run_start, region)
        if run < PREFETCH_AFTER or end >= content.size:
            return []
        cross = run >= CROSS_AFTER
        if self.planned_to > end + window // 2 and (self.crossed or not cross):
            return []
        self.planned_to = end + window
        self.crossed = cross
        return list(dict.fromkeys(content.prefetch_ids(end, window, cross=cross)))
