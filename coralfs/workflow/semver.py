"""Semantic Versioning 2.0.0: parsing, precedence and the next release's version.

Pure functions on values (no repository access), so the rules are tested on their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..objects.errors import CoralError

# The grammar of semver.org §2, 9 and 10: numbers without leading zeros, pre-release
# identifiers that are numeric (no leading zero) or alphanumeric, build identifiers free.
_NUM = r"0|[1-9]\d*"
_PRE_ID = rf"(?:{_NUM}|\d*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD_ID = r"[0-9A-Za-z-]+"
_VERSION = re.compile(
    rf"(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>{_PRE_ID}(?:\.{_PRE_ID})*))?"
    rf"(?:\+(?P<build>{_BUILD_ID}(?:\.{_BUILD_ID})*))?")
_PRE_IDS = re.compile(rf"{_PRE_ID}(?:\.{_PRE_ID})*")
_BUILD_IDS = re.compile(rf"{_BUILD_ID}(?:\.{_BUILD_ID})*")

PARTS = ("major", "minor", "patch")
# The first release when there is none yet: what each bump means from "nothing".
FIRST = {"major": (1, 0, 0), "minor": (0, 1, 0), "patch": (0, 0, 1)}


class InvalidVersion(CoralError):
    """A string that is not a Semantic Version 2.0.0 (or a bad --pre / --build)."""


@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: tuple[int | str, ...] = ()
    build: tuple[str, ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        s = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            s += "-" + ".".join(str(p) for p in self.pre)
        if self.build:
            s += "+" + ".".join(self.build)
        return s

    @property
    def core(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    @property
    def tag(self) -> str:
        return "v" + str(self)

    def key(self) -> tuple:
        """Sort key of SemVer precedence (§11); build metadata plays no part."""
        # A release ranks above its pre-releases; numeric identifiers rank below
        # alphanumeric ones and compare as numbers; a longer list of equal prefix ranks higher.
        pre = tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in self.pre)
        return (self.core, 0 if self.pre else 1, pre)


def _pre_ids(text: str) -> tuple[int | str, ...]:
    return tuple(int(p) if p.isdigit() else p for p in text.split("."))


def parse(text: str) -> Version:
    """``1.2.3-rc.1+build.5`` -> Version; InvalidVersion with the reason otherwise."""
    m = _VERSION.fullmatch(text)
    if not m:
        raise InvalidVersion(f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH[-PRE][+BUILD], "
                             "numbers without leading zeros)")
    return Version(int(m["major"]), int(m["minor"]), int(m["patch"]),
                   _pre_ids(m["pre"]) if m["pre"] else (),
                   tuple(m["build"].split(".")) if m["build"] else ())


def parse_tag(name: str) -> Version | None:
    """The version a release tag ``vX.Y.Z...`` names; None for any other tag name."""
    if not name.startswith("v"):
        return None
    try:
        return parse(name[1:])
    except InvalidVersion:
        return None


def compare(a: Version, b: Version) -> int:
    """-1, 0 or 1 by SemVer precedence."""
    ka, kb = a.key(), b.key()
    return (ka > kb) - (ka < kb)


def next_version(existing: Iterable[Version], part: str, pre: str | None = None,
                 build: str | None = None) -> Version:
    """The version of the next ``part`` release after ``existing`` ones.

    The core is the bump of the highest final release (FIRST when there is none), so
    pre-releases of 1.2.4 lead to 1.2.4 itself with ``patch``. ``pre`` gives
    ``CORE-PRE.N`` with N one more than the highest ``CORE-PRE.N`` so far. The result
    must rank above every existing version, else InvalidVersion says which one is in the way.
    """
    if part not in PARTS:
        raise InvalidVersion(f"release part must be one of {', '.join(PARTS)}, not {part!r}")
    if pre is not None and not _PRE_IDS.fullmatch(pre):
        raise InvalidVersion(f"--pre {pre!r}: dot-separated identifiers of [0-9A-Za-z-], no leading zeros in numbers")
    if build is not None and not _BUILD_IDS.fullmatch(build):
        raise InvalidVersion(f"--build {build!r}: dot-separated identifiers of [0-9A-Za-z-]")
    versions = list(existing)
    finals = [v for v in versions if not v.pre]
    if finals:
        ma, mi, pa = max(finals, key=Version.key).core
        core = {"major": (ma + 1, 0, 0), "minor": (ma, mi + 1, 0), "patch": (ma, mi, pa + 1)}[part]
    else:
        core = FIRST[part]
    pre_ids: tuple[int | str, ...] = ()
    if pre is not None:
        label = _pre_ids(pre)
        n = max((v.pre[-1] for v in versions if v.core == core and v.pre[:-1] == label
                 and len(v.pre) == len(label) + 1 and isinstance(v.pre[-1], int)), default=0)
        pre_ids = (*label, n + 1)
    new = Version(*core, pre_ids, tuple(build.split(".")) if build else ())
    top = max(versions, key=Version.key, default=None)
    if top is not None and compare(new, top) <= 0:
        raise InvalidVersion(f"{new.tag} would not be above the highest release {top.tag}; "
                             "choose a larger part or another --pre label")
    return new
