"""Modules imported on first use, so a command that never computes with values (``coralfs
log``, ``status``, ``branch``, ``--help``) never pays for numpy (~150 ms of start-up).

``np = lazy_module("numpy")`` stands where ``import numpy as np`` stood: the first attribute
read imports numpy, and each attribute read is then cached on the stand-in, so later reads
are an instance-dict lookup, not a ``__getattr__`` call. numpy appears in ``sys.modules``
only once something used it (tests/unit/test_startup_imports.py checks that).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LazyModule:
    """Stands in for the module ``name`` until an attribute of it is read."""

    def __init__(self, name: str) -> None:
        self.__dict__["_lazy_name"] = name

    def __getattr__(self, attr: str) -> Any:
        # Only called for attributes not cached yet.
        value = getattr(importlib.import_module(self.__dict__["_lazy_name"]), attr)
        self.__dict__[attr] = value
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_lazy_name']!r}>"


def lazy_module(name: str) -> Any:
    """A stand-in for ``import name`` that imports on first attribute access."""
    return LazyModule(name)


class LazyMapping(Mapping, Generic[K, V]):
    """A read-only mapping built by ``factory`` on first use (a module-level table of
    numpy types that would otherwise import numpy when its module is imported)."""

    def __init__(self, factory: Callable[[], Mapping[K, V]]) -> None:
        self._factory = factory
        self._data: Mapping[K, V] | None = None

    def _get(self) -> Mapping[K, V]:
        if self._data is None:
            self._data = self._factory()
        return self._data

    def __getitem__(self, key: K) -> V:
        return self._get()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._get()

    def __iter__(self) -> Iterator[K]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())
