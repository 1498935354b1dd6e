"""Fuzz: random bytes and text in ref files, HEAD, reflogs and config.toml give either a
valid value or a clean one-line CoralError, never another exception."""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coralfs.objects.config import KEYS, REPO, Config, check_value
from coralfs.objects.errors import CoralError
from coralfs.objects.ids import HEX_LEN
from coralfs.objects.refs import HEAD, DiskRefs, ReflogEntry, parse_reflog_line

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEX = "0123456789abcdef"

hexish = st.text(alphabet=HEX + "ABCDEFxz \t\n\r\x00", min_size=0, max_size=80)
near_id = st.builds(lambda s, cut, extra: (s[:cut] + extra),
                    st.text(alphabet=HEX, min_size=HEX_LEN, max_size=HEX_LEN),
                    st.integers(0, HEX_LEN), st.text(max_size=4))
ref_bytes = st.one_of(st.binary(max_size=200), hexish.map(str.encode), near_id.map(str.encode),
                      st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")))
head_bytes = st.one_of(ref_bytes, st.text(max_size=60).map(lambda t: ("ref: " + t).encode("utf-8", "surrogatepass")),
                       st.sampled_from([b"ref: HEAD\n", b"ref: refs/heads/\n", b"ref: refs/tags/v1\n",
                                        b"ref: refs/heads/../x\n", b"ref: refs/heads/main\n", b"ref:\n"]))


def _one_line(e: CoralError) -> None:
    assert "\n" not in str(e) and str(e)


class _Dir:
    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="coralfs-fuzz-")
        os.makedirs(os.path.join(self.path, "refs", "heads"))

    def write(self, rel: str, data: bytes) -> None:
        p = os.path.join(self.path, *rel.split("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)

    def __enter__(self) -> _Dir:
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path)


@FUZZ
@given(ref_bytes)
def test_fuzz_ref_file(data):
    with _Dir() as d:
        d.write("refs/heads/main", data)
        refs = DiskRefs(d.path)
        try:
            got = refs.read("refs/heads/main")
            assert got is not None and len(got) == 32
        except CoralError as e:
            _one_line(e)
        found, bad = refs.scan("refs/heads/")
        assert len(found) + len(bad) == 1
        for e in bad:
            _one_line(e)


@FUZZ
@given(head_bytes, ref_bytes)
def test_fuzz_head(head, branch):
    with _Dir() as d:
        d.write("HEAD", head)
        d.write("refs/heads/main", branch)
        refs = DiskRefs(d.path)
        for fn in (lambda: refs.read(HEAD), refs.head_target):
            try:
                got = fn()
                assert got is None or isinstance(got, (bytes, str))
            except CoralError as e:
                _one_line(e)


@FUZZ
@given(st.text(max_size=200))
def test_fuzz_reflog_line(line):
    try:
        e = parse_reflog_line(line)
        assert isinstance(e, ReflogEntry)
    except ValueError:
        pass


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_reflog_file(data):
    with _Dir() as d:
        d.write("logs/refs/heads/main", data)
        refs = DiskRefs(d.path)
        entries, bad = refs.reflog_checked("refs/heads/main")
        assert all(isinstance(e, ReflogEntry) for e in entries)
        if bad is not None:
            _one_line(bad)
        try:
            refs.reflog("refs/heads/main")
        except CoralError as e:
            _one_line(e)


toml_value = st.one_of(st.integers(-2 ** 70, 2 ** 70), st.booleans(), st.text(max_size=20),
                       st.floats(allow_nan=True), st.just("[1, 2]"), st.just("{a = 1}"))
toml_text = st.builds(
    lambda section, key, value: f"[{section}]\n{key} = {value!r}\n".replace("'", '"'),
    st.sampled_from(sorted({k.partition('.')[0] for k in KEYS} | {"alias", "x"})),
    st.sampled_from(sorted({k.partition('.')[2] for k in KEYS} | {"save", "nope"})),
    toml_value)


@FUZZ
@given(st.one_of(st.binary(max_size=300), toml_text.map(str.encode),
                 st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_fuzz_config_file(data):
    with _Dir() as d:
        d.write("config.toml", data)
        try:
            cfg = Config(os.path.join(d.path, "config.toml"), REPO)
        except CoralError as e:
            _one_line(e)
            return
        for section, table in cfg.data.items():
            for name, value in table.items():
                check_value(f"{section}.{name}", value, REPO)
        for key in KEYS:
            cfg.get(key)
