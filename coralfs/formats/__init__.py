"""File formats as "bytes with numeric regions".

Each reader validates a file and returns its :class:`Layout`: a format name and the
typed tensor regions inside it (everything else is literal bytes). Concatenating the
regions and the literal bytes between them gives back the file exactly, so every format
round-trips byte-for-byte by construction.
"""

from .base import FormatError, Layout
from .detect import layout_of

__all__ = ["FormatError", "Layout", "layout_of"]
