"""The exponent order of SUBS and SPARSE deltas: the sort-key shortcut gives exactly the
stable argsort it replaced (frames written before it decode, and decode the same)."""

from __future__ import annotations

import numpy as np
import pytest

from coralfs.objects import planes, sparse


@pytest.mark.parametrize("width,n", [(2, 1), (2, 5000), (4, 300_000), (8, 70_000), (2, (1 << sparse._KEY_BITS) + 3)])
def test_the_exponent_order_is_the_stable_argsort(width, n):
    rng = np.random.default_rng(n)
    dt = planes._UINT[width]
    # Few distinct exponents, many ties: what weights look like, and where stability matters.
    bu = (rng.integers(100, 130, n).astype(dt) << dt(8 * width - 9)) | rng.integers(0, 1 << 20, n).astype(dt)
    perm, classes = sparse._order(bu, width)
    cls = (bu >> dt(8 * width - 9)).astype(np.uint8)
    want = np.argsort(cls, kind="stable")
    assert np.array_equal(perm, want)
    assert np.array_equal(classes, cls[want])


def test_bytes_have_no_order():
    assert sparse._order(np.arange(10, dtype=np.uint8), 1) is None
