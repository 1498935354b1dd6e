"""Heatmaps as small PNG images without any imaging library (zlib only): what the HTML
report inlines as data URIs, scaled up in the browser with crisp pixels."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

# Cool to hot, the terminal's order: blank (unchanged) is white.
_STOPS = np.array([(255, 255, 255), (49, 130, 189), (65, 182, 196), (161, 217, 155),
                   (254, 217, 118), (253, 141, 60), (227, 26, 28)], np.float64)


def colours(values: np.ndarray) -> np.ndarray:
    """RGB uint8 of values scaled to the largest (0: white)."""
    v = np.asarray(values, np.float64)
    top = float(v.max()) if v.size else 0.0
    t = np.where(v > 0, v / top if top > 0 else 0.0, 0.0)
    pos = t * (len(_STOPS) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_STOPS) - 2)
    frac = (pos - lo)[..., None]
    rgb = _STOPS[lo] * (1 - frac) + _STOPS[lo + 1] * frac
    rgb[v <= 0] = _STOPS[0]
    return rgb.round().astype(np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG of an (h, w, 3) uint8 image."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))


def heatmap_png(values: np.ndarray) -> bytes:
    return png_bytes(colours(values))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
