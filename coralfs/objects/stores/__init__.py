"""Object stores: where frames live, keyed by object id.

One interface (:class:`ObjectStore`), a memory and a disk implementation, and one
conformance test class (tests/unit/store_conformance.py) that runs against both and
that later stores (object-store remotes) run as well.
"""

from .base import ObjectStore
from .disk import DiskStore
from .memory import MemoryStore

__all__ = ["DiskStore", "MemoryStore", "ObjectStore"]
