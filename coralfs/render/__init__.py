"""Turning analysis results into pictures and text. No repository access: every function
takes plain numbers and returns lines, so the terminal, files and other front ends share it."""

from __future__ import annotations

from .text import Style, bar_lines, heatmap_lines

__all__ = ["Style", "bar_lines", "heatmap_lines"]
