"""Semantic Versioning 2.0.0 parsing, precedence and the next release's version."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coralfs.workflow.semver import InvalidVersion, Version, compare, next_version, parse, parse_tag

SPEC_ORDER = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
              "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"]


@pytest.mark.parametrize("text,fields", [
    ("0.0.0", (0, 0, 0, (), ())),
    ("1.2.3", (1, 2, 3, (), ())),
    ("10.20.30", (10, 20, 30, (), ())),
    ("1.0.0-alpha.1", (1, 0, 0, ("alpha", 1), ())),
    ("1.0.0-0A.is.legal", (1, 0, 0, ("0A", "is", "legal"), ())),
    ("1.0.0-x-y-z.--", (1, 0, 0, ("x-y-z", "--"), ())),
    ("1.0.0+20130313144700", (1, 0, 0, (), ("20130313144700",))),
    ("1.0.0-beta+exp.sha.5114f85", (1, 0, 0, ("beta",), ("exp", "sha", "5114f85"))),
    ("1.0.0+21AF26D3----117B344092BD", (1, 0, 0, (), ("21AF26D3----117B344092BD",))),
    ("1.0.0+001", (1, 0, 0, (), ("001",))),  # build identifiers may have leading zeros
])
def test_valid_versions_parse_and_print_back(text, fields):
    v = parse(text)
    assert (v.major, v.minor, v.patch, v.pre, v.build) == fields
    assert str(v) == text


@pytest.mark.parametrize("text", [
    "1", "1.2", "1.2.3.4", "01.1.1", "1.01.1", "1.1.01", "1.2.3-0123", "1.2.3-01.1", "1.2.3-",
    "1.2.3+", "1.2.3-alpha..1", "1.2.3+a..b", "1.2.3-al$pha", "v1.2.3", "-1.0.0", "1.2.3 ", "",
    "1.2.3-beta+", "+1.2.3",
])
def test_invalid_versions_are_refused_with_one_line(text):
    with pytest.raises(InvalidVersion) as e:
        parse(text)
    assert "\n" not in str(e.value) and "semantic version" in str(e.value)


def test_the_specs_precedence_example():
    vs = [parse(s) for s in SPEC_ORDER]
    for a, b in zip(vs, vs[1:], strict=False):
        assert compare(a, b) == -1 and compare(b, a) == 1, (a, b)
    assert [str(v) for v in sorted([vs[i] for i in (5, 7, 0, 3, 6, 1, 4, 2)], key=Version.key)] == SPEC_ORDER
    assert compare(parse("1.0.0"), parse("2.0.0")) < 0
    assert compare(parse("2.0.0"), parse("2.1.0")) < 0 < compare(parse("2.1.1"), parse("2.1.0"))
    assert compare(parse("1.0.0-2"), parse("1.0.0-10")) < 0  # numeric identifiers as numbers
    assert compare(parse("1.0.0-10"), parse("1.0.0-a")) < 0  # numeric below alphanumeric


def test_build_metadata_is_ignored_for_precedence():
    a, b = parse("1.0.0+a"), parse("1.0.0+b.2")
    assert compare(a, b) == 0 and a == b and a.key() == b.key()
    assert compare(parse("1.0.0-rc.1+x"), parse("1.0.0")) < 0


def test_release_tags_are_v_and_a_version():
    assert parse_tag("v1.2.3-rc.1") == parse("1.2.3-rc.1")
    for name in ("v1", "v1.2", "1.2.3", "auto/main/3", "v01.2.3", "version1.0.0", "v1.2.3/x"):
        assert parse_tag(name) is None, name


def _v(*texts):
    return [parse(t) for t in texts]


def test_first_release_per_part():
    assert str(next_version([], "major")) == "1.0.0"
    assert str(next_version([], "minor")) == "0.1.0"
    assert str(next_version([], "patch")) == "0.0.1"
    assert str(next_version([], "minor", pre="rc")) == "0.1.0-rc.1"


def test_bumps_from_the_highest_final_release():
    existing = _v("1.2.3", "0.9.0", "1.1.7")
    assert str(next_version(existing, "major")) == "2.0.0"
    assert str(next_version(existing, "minor")) == "1.3.0"
    assert str(next_version(existing, "patch")) == "1.2.4"
    assert str(next_version(existing, "patch", build="exp.5")) == "1.2.4+exp.5"


def test_pre_releases_count_up_and_graduate():
    existing = _v("1.2.3")
    first = next_version(existing, "patch", pre="beta")
    assert str(first) == "1.2.4-beta.1"
    second = next_version([*existing, first], "patch", pre="beta")
    assert str(second) == "1.2.4-beta.2"
    rc = next_version([*existing, first, second], "patch", pre="rc")
    assert str(rc) == "1.2.4-rc.1"
    assert str(next_version([*existing, first, second, rc], "patch")) == "1.2.4"
    assert str(next_version([*existing, first, second, rc], "minor", pre="beta")) == "1.3.0-beta.1"
    # beta.11 counts as a number: the next is 12, not 2
    assert str(next_version(_v("1.2.3", "1.2.4-beta.11", "1.2.4-beta.9"), "patch", pre="beta")) == "1.2.4-beta.12"


def test_a_version_not_above_the_highest_is_refused():
    with pytest.raises(InvalidVersion, match="1.2.4-beta.1 would not be above the highest release v1.2.4-rc.1"):
        next_version(_v("1.2.3", "1.2.4-rc.1"), "patch", pre="beta")
    # only pre-releases so far: the first patch, 0.0.1, ranks below them
    with pytest.raises(InvalidVersion, match="v0.0.1 would not be above the highest release v1.0.0-rc.1"):
        next_version(_v("1.0.0-rc.1"), "patch")
    assert str(next_version(_v("1.0.0-rc.1"), "major")) == "1.0.0"


@pytest.mark.parametrize("kwargs,what", [
    ({"part": "huge"}, "major, minor, patch"), ({"part": "patch", "pre": "01"}, "--pre"),
    ({"part": "patch", "pre": "be ta"}, "--pre"), ({"part": "patch", "pre": ""}, "--pre"),
    ({"part": "patch", "build": "a+b"}, "--build"), ({"part": "patch", "build": "a..b"}, "--build"),
])
def test_bad_bump_arguments(kwargs, what):
    with pytest.raises(InvalidVersion, match=what):
        next_version(_v("1.0.0"), **kwargs)


_num = st.integers(0, 12)
_ident = st.one_of(_num, st.sampled_from(["alpha", "beta", "rc", "a-b", "0a", "x"]))
versions = st.builds(lambda M, m, p, pre, b: Version(M, m, p, tuple(pre), tuple(b)),
                     _num, _num, _num, st.lists(_ident, max_size=3),
                     st.lists(st.sampled_from(["b1", "001", "exp"]), max_size=2))


@given(versions)
def test_printed_versions_parse_back(v):
    assert parse(str(v)) == v and parse(str(v)).build == v.build


@given(st.lists(versions, max_size=12))
def test_sorting_by_precedence_agrees_with_pairwise_comparison(vs):
    by_key = sorted(vs, key=Version.key)
    by_cmp = sorted(vs, key=functools.cmp_to_key(compare))
    assert [v.key() for v in by_key] == [v.key() for v in by_cmp]
    for a, b in zip(by_key, by_key[1:], strict=False):
        assert compare(a, b) <= 0 and compare(b, a) >= 0
    for a in vs:
        for b in vs:
            assert compare(a, b) == -compare(b, a)
