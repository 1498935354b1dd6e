"""Region: how a format describes a file to the writer (a byte range, maybe a typed tensor).

Formats produce regions and objects' writer consumes them; the type lives here, below
both, so neither has to import the other's module for it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Region:
    """A byte range of a source file; with ``name`` it is a typed tensor."""

    offset: int
    length: int
    name: str | None = None
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
