"""The compiled kernel of the SUBS and SPARSE delta order (coralfs/objects/_native.c), or
None where it is not built: coralfs/objects/sparse.py then runs its numpy code, which gives
the same bytes (docs/decisions.md, "A compiled kernel for the delta order").

The kernel is built by ``setup.py`` (an optional extension: ``pip install`` succeeds without
a C compiler) and, in a checkout, in place by ``scripts/setup``. CORALFS_NATIVE=0 in the
environment runs the numpy code even where the kernel is built (to compare the two).
"""

from __future__ import annotations

import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("CORALFS_NATIVE", "1") == "0":
        return None
    try:
        from . import _native
    except ImportError:  # not built (no compiler), or built for another Python
        return None
    return _native


kernel: ModuleType | None = _load()
