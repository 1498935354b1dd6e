"""The writable mount as a POSIX file system, without a kernel: owners and modes taken from
the request context and changed by chmod/chown as POSIX says, set-ID bits cleared by
writes, ctime and parent-directory times, atime kept, name limits, directory link counts,
symbolic links, hard links (one inode, several names) and what stays EPERM."""

from __future__ import annotations

import errno
import os
import stat
from types import SimpleNamespace

import pyfuse3
import pytest

from coralfs.fs.writable.vfs import CONTROL_INO, CORAL_INO, ROOT_INO
from coralfs.staging import StagingArea
from tests.ops.test_staging import FS, WRONLY, _Fields, errno_of, run

ALICE, BOB, STAFF = 1000, 1001, 50


def ctx(uid=0, gid=0, umask=0, pid=0):
    """A request context as pyfuse3 passes it (pid 0: no supplementary groups)."""
    return SimpleNamespace(uid=uid, gid=gid, pid=pid, umask=umask)


def attr(fs, path):
    return run(fs.ops.getattr, fs.ino(path), None)


def create(fs, path, mode=0o644, who=None):
    p, n = fs.split(path)
    fi, a = run(fs.ops.create, p, n, mode, WRONLY | os.O_CREAT, who or ctx())
    run(fs.ops.flush, fi.fh)
    run(fs.ops.release, fi.fh)
    return a


FIELDS = {"mode": "st_mode", "uid": "st_uid", "gid": "st_gid", "size": "st_size", "atime": "st_atime_ns",
          "mtime": "st_mtime_ns"}


def change(fs, path, who=None, **values):
    """setattr as the kernel sends it: the values given, their update_* fields set."""
    a = pyfuse3.EntryAttributes()
    fields = {}
    for k, v in values.items():
        setattr(a, FIELDS[k], v)
        fields["update_" + k] = True
    return run(fs.ops.setattr, fs.ino(path), a, _Fields(**fields), None, who or ctx())


def refused(fs, path, who, **values) -> int:
    """The errno a setattr fails with."""
    return errno_of(lambda: change(fs, path, who, **values))


def aged(fs, path):
    """Make the inode's times old, so any change of them shows (no clocks compared)."""
    e = fs.stage.get(path)
    e.mtime_ns = e.ctime_ns = e.atime_ns = 1
    return e


# -- owners and modes ---------------------------------------------------------------------

def test_new_entries_belong_to_the_caller_with_its_umask_applied(fs):
    a = create(fs, "f", 0o666, ctx(ALICE, STAFF, umask=0o022))
    assert (a.st_uid, a.st_gid, stat.S_IMODE(a.st_mode)) == (ALICE, STAFF, 0o644)
    p, n = fs.split("d")
    d = run(fs.ops.mkdir, p, n, 0o777, ctx(BOB, BOB, umask=0o027))
    assert (d.st_uid, d.st_gid, stat.S_IMODE(d.st_mode)) == (BOB, BOB, 0o750)
    lnk = run(fs.ops.symlink, ROOT_INO, b"l", b"f", ctx(ALICE, ALICE))
    assert (lnk.st_uid, lnk.st_gid) == (ALICE, ALICE)
    fs.close_all()  # the owners are in the manifest, not in the mount
    again = FS(fs.repo)
    try:
        a = attr(again, "f")
        assert (a.st_uid, a.st_gid) == (ALICE, STAFF)
    finally:
        again.close_all()
        fs.stage = StagingArea.open(fs.repo, "main")  # for the fixture's close
        fs.serving = None


def test_mode_0000_stays_0000(fs):
    assert stat.S_IMODE(create(fs, "zero", 0).st_mode) == 0
    p, n = fs.split("zdir")
    assert stat.S_IMODE(run(fs.ops.mkdir, p, n, 0, ctx()).st_mode) == 0


def test_a_set_group_id_directory_gives_its_group_and_bit_to_what_is_made_in_it(fs):
    p, n = fs.split("shared")
    run(fs.ops.mkdir, p, n, 0o2775, ctx(ALICE, STAFF))
    a = create(fs, "shared/f", 0o644, ctx(BOB, BOB))
    assert (a.st_uid, a.st_gid) == (BOB, STAFF)
    p, n = fs.split("shared/sub")
    d = run(fs.ops.mkdir, p, n, 0o755, ctx(BOB, BOB))
    assert d.st_gid == STAFF and d.st_mode & stat.S_ISGID


def test_only_root_changes_the_owner_and_chown_is_never_a_silent_no_op(fs):
    create(fs, "f", 0o644, ctx(ALICE, ALICE))
    a = change(fs, "f", ctx(), uid=1234, gid=5678)
    assert (a.st_uid, a.st_gid) == (1234, 5678)
    assert (fs.stage.get("f").uid, fs.stage.get("f").gid) == (1234, 5678)  # kept
    create(fs, "g", 0o644, ctx(ALICE, ALICE))
    assert refused(fs, "g", ctx(ALICE, ALICE), uid=BOB) == errno.EPERM
    assert refused(fs, "g", ctx(BOB, BOB), gid=BOB) == errno.EPERM  # not the owner
    assert refused(fs, "g", ctx(ALICE, ALICE), gid=STAFF) == errno.EPERM  # not its group
    a = change(fs, "g", SimpleNamespace(uid=ALICE, gid=ALICE, pid=0, umask=0), uid=ALICE)
    assert a.st_uid == ALICE  # chown to oneself: allowed
    assert change(fs, "g", ctx(ALICE, STAFF), gid=STAFF).st_gid == STAFF  # its own (primary) group


def test_the_owner_may_change_the_group_to_a_supplementary_group(fs):
    create(fs, "f", 0o644, ctx(ALICE, ALICE))
    mine = os.getpid()  # this process's groups, read from /proc/PID/status as for a caller
    with open(f"/proc/{mine}/status") as f:
        groups = [int(g) for ln in f if ln.startswith("Groups:") for g in ln.split()[1:]]
    before = os.getgroups()
    extra = next((g for g in groups if g != ALICE), None)
    if extra is None:  # give this process a supplementary group to read back
        os.setgroups([STAFF])
        extra = STAFF
    try:
        a = change(fs, "f", ctx(ALICE, ALICE, pid=mine), gid=extra)
        assert a.st_gid == extra
        assert refused(fs, "f", ctx(ALICE, ALICE, pid=mine), gid=4242) == errno.EPERM
    finally:
        os.setgroups(before)


def test_chown_by_a_non_root_caller_clears_the_set_id_bits_of_a_file(fs):
    create(fs, "f", 0o6755, ctx(ALICE, ALICE))
    assert stat.S_IMODE(attr(fs, "f").st_mode) == 0o6755
    a = change(fs, "f", ctx(ALICE, ALICE), gid=ALICE)
    assert stat.S_IMODE(a.st_mode) == 0o755
    create(fs, "r", 0o6755, ctx(ALICE, ALICE))
    assert stat.S_IMODE(change(fs, "r", ctx(), uid=BOB).st_mode) == 0o6755  # root's chown here keeps them


def test_chmod_needs_the_owner_and_drops_set_group_id_outside_the_group(fs):
    create(fs, "f", 0o644, ctx(ALICE, STAFF))
    assert refused(fs, "f", ctx(BOB, BOB), mode=0o777) == errno.EPERM
    assert stat.S_IMODE(change(fs, "f", ctx(ALICE, ALICE), mode=0o2755).st_mode) == 0o755  # not in STAFF
    assert stat.S_IMODE(change(fs, "f", ctx(ALICE, STAFF), mode=0o2755).st_mode) == 0o2755
    # The kernel clearing set-ID bits for someone else's write is not a chmod of theirs.
    assert stat.S_IMODE(change(fs, "f", ctx(BOB, BOB), mode=0o755).st_mode) == 0o755
    assert stat.S_IMODE(change(fs, "f", ctx(), mode=0o4711).st_mode) == 0o4711  # root


def test_a_write_or_truncate_by_a_non_root_caller_clears_set_id_bits(fs):
    create(fs, "f", 0o6777, ctx(ALICE, ALICE))
    fh = run(fs.ops.open, fs.ino("f"), os.O_WRONLY, ctx()).fh  # root writes: kept
    fs.write(fh, 0, b"x")
    fs.close(fh)
    assert stat.S_IMODE(attr(fs, "f").st_mode) == 0o6777
    fh = run(fs.ops.open, fs.ino("f"), os.O_WRONLY, ctx(BOB, BOB)).fh
    fs.write(fh, 0, b"y")
    fs.close(fh)
    assert stat.S_IMODE(attr(fs, "f").st_mode) == 0o777
    change(fs, "f", ctx(), mode=0o6777)
    assert stat.S_IMODE(change(fs, "f", ctx(ALICE, ALICE), size=0).st_mode) == 0o777


def test_virtual_files_refuse_owner_and_mode_changes(fs):
    for ino in (CORAL_INO, CONTROL_INO):
        a = pyfuse3.EntryAttributes()
        a.st_uid = 5
        assert errno_of(run, fs.ops.setattr, ino, a, _Fields(update_uid=True), None, ctx()) == errno.EPERM


# -- times --------------------------------------------------------------------------------

def test_chmod_chown_and_xattrs_move_ctime_not_mtime(fs):
    for values in ({"mode": 0o600}, {"uid": 7}):
        e = aged(fs, "sub/notes.txt")
        a = change(fs, "sub/notes.txt", ctx(), **values)
        assert a.st_ctime_ns > 1 and a.st_mtime_ns == 1 and e.ctime_ns > 1
    aged(fs, "sub/notes.txt")
    run(fs.ops.setxattr, fs.ino("sub/notes.txt"), b"user.k", b"v", None)
    assert attr(fs, "sub/notes.txt").st_ctime_ns > 1


def test_utimens_sets_atime_and_mtime_separately_and_ctime_to_now(fs):
    a = change(fs, "model.safetensors", ctx(), atime=1_000_000_000, mtime=2_000_000_000)
    assert (a.st_atime_ns, a.st_mtime_ns) == (1_000_000_000, 2_000_000_000) and a.st_ctime_ns > 2_000_000_000
    a = change(fs, "model.safetensors", ctx(), atime=5)  # mtime omitted (UTIME_OMIT)
    assert (a.st_atime_ns, a.st_mtime_ns) == (5, 2_000_000_000)
    a = change(fs, "model.safetensors", ctx(), mtime=7)
    assert (a.st_atime_ns, a.st_mtime_ns) == (5, 7)
    create(fs, "spooled")  # a file in the spool keeps them too
    a = change(fs, "spooled", ctx(), atime=11, mtime=13)
    assert (a.st_atime_ns, a.st_mtime_ns) == (11, 13)
    assert (attr(fs, "spooled").st_atime_ns, attr(fs, "spooled").st_mtime_ns) == (11, 13)


def test_a_write_and_a_truncate_move_mtime_and_ctime(fs):
    create(fs, "f")
    change(fs, "f", ctx(), atime=1, mtime=1)
    fh = fs.open("f", WRONLY)
    fs.write(fh, 0, b"data")
    fs.close(fh)
    a = attr(fs, "f")
    assert a.st_mtime_ns > 1 and a.st_ctime_ns > 1 and a.st_atime_ns == 1
    change(fs, "f", ctx(), mtime=1)
    assert change(fs, "f", ctx(), size=1).st_mtime_ns > 1


def test_namespace_changes_move_the_parent_directories_times(fs):
    fs.mkdir("a")
    fs.mkdir("b")
    for path, op in (("a", lambda: create(fs, "a/f")),
                     ("a", lambda: fs.mkdir("a/d")),
                     ("a", lambda: fs.rmdir("a/d")),
                     ("", lambda: fs.mkdir("c")),
                     ("a", lambda: fs.unlink("a/f"))):
        aged(fs, path)
        op()
        got = attr(fs, path) if path else run(fs.ops.getattr, ROOT_INO, None)
        assert got.st_mtime_ns > 1 and got.st_ctime_ns > 1, path
    create(fs, "a/g")
    a, b, g = aged(fs, "a"), aged(fs, "b"), aged(fs, "a/g")
    fs.rename("a/g", "b/g")
    assert a.mtime_ns > 1 and a.ctime_ns > 1 and b.mtime_ns > 1 and b.ctime_ns > 1
    assert g.ctime_ns > 1 and g.mtime_ns == 1  # the renamed entry: ctime only


def test_unlink_of_a_linked_file_moves_the_ctime_of_the_name_left(fs):
    create(fs, "f")
    run(fs.ops.link, fs.ino("f"), ROOT_INO, b"g", ctx())
    aged(fs, "g")
    fs.unlink("f")
    a = attr(fs, "g")
    assert a.st_ctime_ns > 1 and a.st_nlink == 1


# -- names and link counts ----------------------------------------------------------------

def test_names_over_255_bytes_and_paths_over_4095_are_enametoolong(fs):
    long = b"n" * 256
    create(fs, "f")
    assert errno_of(run, fs.ops.lookup, ROOT_INO, long, None) == errno.ENAMETOOLONG
    assert errno_of(run, fs.ops.create, ROOT_INO, long, 0o644, WRONLY | os.O_CREAT, ctx()) == errno.ENAMETOOLONG
    assert errno_of(run, fs.ops.mkdir, ROOT_INO, long, 0o755, ctx()) == errno.ENAMETOOLONG
    assert errno_of(run, fs.ops.symlink, ROOT_INO, long, b"f", ctx()) == errno.ENAMETOOLONG
    assert errno_of(run, fs.ops.link, fs.ino("f"), ROOT_INO, long, ctx()) == errno.ENAMETOOLONG
    assert errno_of(run, fs.ops.rename, ROOT_INO, b"f", ROOT_INO, long, 0, ctx()) == errno.ENAMETOOLONG
    assert errno_of(run, fs.ops.mknod, ROOT_INO, long, stat.S_IFIFO | 0o644, 0, ctx()) == errno.ENAMETOOLONG
    assert errno_of(run, fs.ops.symlink, ROOT_INO, b"s", b"t" * 4096, ctx()) == errno.ENAMETOOLONG
    assert fs.ls() == [".coral", "f", "model.safetensors", "sub"]
    name = "d" * 255
    path = ""
    for _ in range(16):  # 16 * 256 - 1 = 4095 bytes: the longest path there is
        path = f"{path}/{name}" if path else name
        fs.mkdir(path)
    assert errno_of(run, fs.ops.mkdir, fs.ino(path), b"x", 0o755, ctx()) == errno.ENAMETOOLONG
    assert errno_of(run, fs.ops.lookup, fs.ino(path), b"x", None) == errno.ENAMETOOLONG


def test_a_directory_counts_its_subdirectories_in_st_nlink(fs):
    assert attr(fs, "sub").st_nlink == 2
    fs.mkdir("sub/a")
    fs.mkdir("sub/b")
    create(fs, "sub/f")
    assert attr(fs, "sub").st_nlink == 4
    fs.rename("sub/b", "b")
    assert attr(fs, "sub").st_nlink == 3
    assert run(fs.ops.getattr, ROOT_INO, None).st_nlink == 2 + 2 + 1  # sub, b and .coral
    fs.rmdir("sub/a")
    assert attr(fs, "sub").st_nlink == 2


# -- symbolic links -----------------------------------------------------------------------

def test_symlink_readlink_and_lstat(fs):
    a = run(fs.ops.symlink, ROOT_INO, b"latest", b"checkpoint-500", ctx())
    assert stat.S_ISLNK(a.st_mode) and a.st_size == len(b"checkpoint-500")
    assert run(fs.ops.readlink, fs.ino("latest"), None) == b"checkpoint-500"
    assert stat.S_ISLNK(attr(fs, "latest").st_mode)
    assert errno_of(run, fs.ops.symlink, ROOT_INO, b"latest", b"x", ctx()) == errno.EEXIST
    assert errno_of(run, fs.ops.readlink, fs.ino("model.safetensors"), None) == errno.EINVAL
    run(fs.ops.symlink, ROOT_INO, b"evil", b"/etc/shadow", ctx())  # text only: never followed
    assert run(fs.ops.readlink, fs.ino("evil"), None) == b"/etc/shadow"
    fs.rename("latest", "sub/latest")
    assert run(fs.ops.readlink, fs.ino("sub/latest"), None) == b"checkpoint-500"
    got = {(c.status, c.path, c.kind, c.target) for c in fs.stage.changes()}
    assert got == {("added", "sub/latest", "l", "checkpoint-500"), ("added", "evil", "l", "/etc/shadow")}
    fs.unlink("evil")
    assert "evil" not in fs.ls()


def test_links_and_empty_directories_survive_a_reopen_and_show_in_status(fs):
    run(fs.ops.symlink, ROOT_INO, b"latest", b"checkpoint-500", ctx())
    fs.mkdir("logs")
    status = fs.sfs.status()["changes"]
    assert {"status": "added", "path": "logs", "size": 0, "kind": "d"} in status
    assert {"status": "added", "path": "latest", "size": 14, "kind": "l", "target": "checkpoint-500"} in status
    create(fs, "logs/run.txt")
    assert [c.path for c in fs.stage.changes()] == ["latest", "logs/run.txt"]  # logs is no longer empty
    fs.unlink("logs/run.txt")
    fs.close_all()
    st = StagingArea.open(fs.repo, "main")
    try:
        assert st.get("latest").target == "checkpoint-500" and st.get("logs").kind == "d"
        assert [(c.status, c.path, c.kind) for c in st.changes()] == [("added", "latest", "l"), ("added", "logs", "d")]
    finally:
        st.close()
    fs.serving = None


def test_mknod_of_fifos_sockets_and_devices_stays_eperm(fs):
    for kind in (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
        assert errno_of(run, fs.ops.mknod, ROOT_INO, b"x", kind | 0o644, 0, ctx()) == errno.EPERM
    assert "x" not in fs.ls()
    assert errno_of(run, fs.ops.mknod, ROOT_INO, b"sub", stat.S_IFIFO | 0o644, 0, ctx()) == errno.EEXIST


# -- hard links ---------------------------------------------------------------------------

def test_a_hard_link_is_one_inode_with_two_names(fs):
    fh = fs.create("a")
    fs.write(fh, 0, b"first")
    fs.close(fh)
    a = run(fs.ops.link, fs.ino("a"), fs.ino("sub"), b"b", ctx())
    ia, ib = attr(fs, "a"), attr(fs, "sub/b")
    assert ia.st_ino == ib.st_ino == a.st_ino and ia.st_nlink == ib.st_nlink == 2
    fh = fs.open("sub/b", os.O_RDWR)
    fs.write(fh, 0, b"FIRST")
    fs.close(fh)
    assert fs.cat("a") == b"FIRST"
    change(fs, "a", ctx(), mode=0o600)
    assert stat.S_IMODE(attr(fs, "sub/b").st_mode) == 0o600
    spool = fs.stage.get("a").spool
    fs.unlink("a")
    assert fs.cat("sub/b") == b"FIRST" and attr(fs, "sub/b").st_nlink == 1
    assert os.path.exists(fs.stage.spool_path(spool))  # the other name still holds it
    fs.unlink("sub/b")
    assert not os.path.exists(fs.stage.spool_path(spool))


def test_a_hard_link_to_a_committed_file_copies_once_for_both_names(fs, committed):
    run(fs.ops.link, fs.ino("model.safetensors"), ROOT_INO, b"copy.safetensors", ctx())
    fh = fs.open("copy.safetensors", os.O_RDWR)
    fs.write(fh, 0, b"\x00")
    fs.close(fh)
    a, b = fs.stage.get("model.safetensors"), fs.stage.get("copy.safetensors")
    assert a is b and a.spool is not None and fs.sfs.counters["copy_ups"] == 1
    assert fs.cat("model.safetensors")[:1] == b"\x00"
    assert fs.cat("model.safetensors")[1:] == (committed / "model.safetensors").read_bytes()[1:]


def test_hard_links_survive_a_reopen_and_rename(fs):
    create(fs, "a")
    run(fs.ops.link, fs.ino("a"), ROOT_INO, b"b", ctx())
    fs.rename("b", "sub/c")
    fs.close_all()
    st = StagingArea.open(fs.repo, "main")
    try:
        a, c = st.get("a"), st.get("sub/c")
        assert a is c and a.link and st.nlink("a", a) == 2 and st.links[a.link] == {"a", "sub/c"}
    finally:
        st.close()
    fs.serving = None


def test_hard_links_to_directories_and_across_coral_are_eperm(fs):
    assert errno_of(run, fs.ops.link, fs.ino("sub"), ROOT_INO, b"d2", ctx()) == errno.EPERM
    assert errno_of(run, fs.ops.link, CONTROL_INO, ROOT_INO, b"c2", ctx()) == errno.EPERM
    assert errno_of(run, fs.ops.link, fs.ino("model.safetensors"), CORAL_INO, b"m", ctx()) == errno.EPERM
    assert errno_of(run, fs.ops.link, fs.ino("model.safetensors"), ROOT_INO, b"sub", ctx()) == errno.EEXIST


def test_rename_onto_another_name_of_the_same_inode_changes_nothing(fs):
    create(fs, "a")
    run(fs.ops.link, fs.ino("a"), ROOT_INO, b"b", ctx())
    fs.rename("a", "b")
    assert {"a", "b"} <= set(fs.ls()) and attr(fs, "a").st_nlink == 2


@pytest.mark.parametrize("first", ["a", "b"])
def test_a_hard_link_keeps_its_inode_when_the_name_looked_up_first_goes(fs, first):
    create(fs, "a")
    run(fs.ops.link, fs.ino("a"), ROOT_INO, b"b", ctx())
    ino = attr(fs, first).st_ino
    fs.unlink(first)
    other = "b" if first == "a" else "a"
    assert run(fs.ops.getattr, ino, None).st_nlink == 1 and attr(fs, other).st_ino == ino


# -- fallocate (the model's; pyfuse3 does not dispatch it yet) ---------------------------

def test_fallocate_allocates_keeps_the_size_or_punches_and_refuses_other_modes(fs, committed):
    fh = fs.create("pre")
    fs.write(fh, 0, b"x" * 8192)
    run(fs.ops.fallocate, fh, 0, 0, 1 << 20)  # mode 0: allocated, and the size follows
    assert fs.size("pre") == 1 << 20
    run(fs.ops.fallocate, fh, 0x01, 0, 4 << 20)  # KEEP_SIZE
    spool = fs.stage.spool_path(fs.stage.get("pre").spool)
    assert fs.size("pre") == 1 << 20 and os.stat(spool).st_blocks * 512 >= 4 << 20
    run(fs.ops.fallocate, fh, 0x03, 100, 1000)  # PUNCH_HOLE | KEEP_SIZE
    assert fs.read(fh, 0, 8192) == b"x" * 100 + b"\0" * 1000 + b"x" * 7092
    for mode in (0x02, 0x10, 0x20, 0x08):  # PUNCH_HOLE alone, ZERO_RANGE, INSERT_RANGE, COLLAPSE_RANGE
        assert errno_of(run, fs.ops.fallocate, fh, mode, 0, 10) == errno.EOPNOTSUPP
    fs.close(fh)
    fh = fs.open("sub/notes.txt", os.O_RDWR)  # a committed file is copied first, as for a write
    run(fs.ops.fallocate, fh, 0, 0, 4096)
    fs.close(fh)
    assert fs.cat("sub/notes.txt") == b"hello" + b"\0" * 4091
