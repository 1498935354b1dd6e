"""The compiled kernel of the SUBS and SPARSE delta order (coralfs/objects/_native.c), or
None where it is not built: coralfs/objects/sparse.py then runs its numpy code, which gives
the same bytes (docs/decisions.md, "A compiled kernel for the delta order").

The kernel is built by ``setup.py`` (an optional extension: ``pip install`` succeeds without
a C compiler) and, in a checkout, in place by ``scripts/setup``. CORALFS_NATIVE=0 in the
environment runs the numpy code even where the kernel is built (to compare the two).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def load(name: str) -> ModuleType | None:
    """The compiled module ``coralfs.objects.<name>``, or None where it is not built or
    CORALFS_NATIVE=0 asks for the Python code (the entropy coder is loaded the same way)."""
    if os.environ.get("CORALFS_NATIVE", "1") == "0":
        return None
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ImportError:  # not built (no compiler), or built for another Python
        return None


kernel: ModuleType | None = load("_native")
