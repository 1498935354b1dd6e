"""``coralfs fsck --remote NAME``: prove a remote is whole without trusting it.

Every index must parse and name bytes its pack has; every indexed or loose frame must
decode to the content its id hashes (packs are read range by range, at most RANGE_MAX
bytes in memory; a delta's base is read by one range GET if it is not in the range at
hand); every remote ref must point at an object the remote has. Each damaged object is
named with the pack it is in. Packs without an index (uploads a push was interrupted in)
are not damage: no reader ever sees them, and the push that left them removes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..objects import codecs
from ..objects.cache import ByteLRU
from ..objects.errors import CoralError, CorruptObject
from ..objects.ids import ObjectId, from_hex, hash_bytes, to_hex
from ..objects.refs import HEAD, HEADS, TAGS
from . import layout
from .blobs import BlobNotFound, BlobStore
from .packs import PACKS, DamagedPack, decode_index
from .packs import coalesce as _ranges
from .refs import RemoteRefs


@dataclass
class RemoteFsckReport:
    objects: int = 0
    packs: int = 0
    problems: list[str] = field(default_factory=list)
    unindexed: list[str] = field(default_factory=list)   # interrupted uploads, ignored

    @property
    def ok(self) -> bool:
        return not self.problems


def fsck_remote(blobs: BlobStore, progress: Callable[[int, int], None] | None = None) -> RemoteFsckReport:
    rep = RemoteFsckReport()
    layout.check_remote(blobs)
    keys = set(blobs.list(""))
    where: dict[ObjectId, tuple[str, int, int]] = {}
    packs: dict[str, list[tuple[int, int, ObjectId]]] = {}
    for key in sorted(k for k in keys if k.startswith(PACKS) and k.endswith(".idx")):
        pack = key[: -len(".idx")] + ".pack"
        try:
            recs = decode_index(blobs.get(key), blobs.url, key)
        except DamagedPack as e:
            rep.problems.append(str(e))
            continue
        info = blobs.head(pack)
        if info is None:
            rep.problems.append(f"{key}: its pack {pack} is missing ({len(recs)} objects lost)")
            continue
        rep.packs += 1
        for oid, off, n in recs:
            if off + n > info.size:
                rep.problems.append(f"object {to_hex(oid)} in {pack}: the index names bytes {off}..{off + n} "
                                    f"past the pack's end ({info.size}): the pack is truncated")
                continue
            where.setdefault(oid, (pack, off, n))
            packs.setdefault(pack, []).append((off, n, oid))
    rep.unindexed = sorted(k for k in keys if k.startswith(PACKS) and k.endswith(".pack")
                           and k[: -len(".pack")] + ".idx" not in keys)
    loose: dict[ObjectId, str] = {}
    for key in keys:
        if key.startswith(layout.LOOSE):
            try:
                loose[from_hex(key[len(layout.LOOSE):])] = key
            except ValueError:
                rep.problems.append(f"{key}: not an object id")
    total = len(where) + len(loose)
    decoded = ByteLRU(256 << 20)

    def frame_of(oid: ObjectId) -> bytes:
        if oid in where:
            pack, off, n = where[oid]
            return blobs.get_range(pack, off, n)
        if oid in loose:
            return blobs.get(loose[oid])
        raise CorruptObject(to_hex(oid), "its delta base is not in the remote")

    def base_of(oid: ObjectId) -> bytes:
        data = decoded.get(oid)
        if data is None:
            frame = frame_of(oid)
            data = codecs.decode(frame, oid, base_of, header=codecs.parse_header(frame, oid))
            decoded.put(oid, data)
        return data

    def check(oid: ObjectId, frame: bytes, key: str) -> None:
        rep.objects += 1
        try:
            h = codecs.parse_header(frame, oid)
            data = codecs.decode(frame, oid, base_of, header=h)
            if hash_bytes(data) != oid:
                raise CorruptObject(to_hex(oid), "content does not hash to its id")
            if h.base is None:
                decoded.put(oid, data)
        except CorruptObject as e:
            rep.problems.append(f"object {to_hex(oid)} in {key}: {e.why}")
        except BlobNotFound as e:
            rep.problems.append(f"object {to_hex(oid)} in {key}: {e}")
        except Exception as e:  # noqa: BLE001 - a crafted frame is reported, never a crash
            rep.problems.append(f"object {to_hex(oid)} in {key}: does not decode ({type(e).__name__}: {e})")
        if progress:
            progress(rep.objects, total)

    for pack in sorted(packs):
        for start, end, members in _ranges(sorted(packs[pack])):
            try:
                data = blobs.get_range(pack, start, end - start)
            except BlobNotFound as e:
                rep.problems.append(str(e))
                break
            for off, n, oid in members:
                frame = data[off - start: off - start + n]
                if len(frame) != n:
                    rep.objects += 1
                    rep.problems.append(f"object {to_hex(oid)} in {pack}: cut short ({len(frame)} of {n} bytes)")
                    continue
                check(oid, frame, pack)
    for oid, key in sorted(loose.items()):
        try:
            check(oid, blobs.get(key), key)
        except BlobNotFound:
            continue   # removed since the listing
    have = set(where) | set(loose)
    refs = RemoteRefs(blobs)
    for prefix in (HEADS, TAGS):
        good, bad = refs.scan(prefix)
        rep.problems += [str(e) for e in bad]
        for short, oid in good.items():
            if oid not in have:
                rep.problems.append(f"{prefix}{short} points at {to_hex(oid)}, which the remote does not have")
    try:
        refs.head_target()
    except CoralError as e:
        rep.problems.append(f"{HEAD}: {e}")
    return rep
