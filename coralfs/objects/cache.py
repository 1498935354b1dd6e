"""A thread-safe LRU of byte strings bounded by their total size."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class ByteLRU:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._d: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            v = self._d.get(key)
            if v is None:
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return v

    def peek(self, key: Hashable) -> bytes | None:
        """A lookup that counts neither a hit nor a miss."""
        with self._lock:
            return self._d.get(key)

    def put(self, key: Hashable, value: bytes, keep: bool = True) -> None:
        """``keep``: worth keeping beyond this cache (read for itself, not only as a delta
        base); a cache with a disk tier writes only those out. This one holds both alike."""
        n = len(value)
        if n > self.budget:
            return
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self.used -= len(old)
            self._d[key] = value
            self.used += n
            while self.used > self.budget:
                _, ev = self._d.popitem(last=False)
                self.used -= len(ev)

    def served(self, key: Hashable, value: bytes) -> None:
        """A hit that is read for itself (a disk tier writes it out if it only held it as
        a base so far); nothing to do here."""

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self.used = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)
