"""The ops tier of a writable mount's control file and names: every field of every request
is checked and answered in JSON (a hypothesis fuzz over the StageFS parser), only the
mount's owner may open the control file, a commit's author is the owner, and names over
255 bytes are refused with ENAMETOOLONG."""

from __future__ import annotations

import errno
import json
import os
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coralfs.fs.writable import control
from coralfs.fs.writable.control import MAX_REQUEST, OPS
from coralfs.fs.writable.vfs import CONTROL_INO
from tests.ops.test_staging import RDWR, errno_of, run

BAD_REQUESTS = [
    (b'{"op": "commit", "message": 5}', "commit: message must be a string, not a JSON number"),
    (b'{"op": "commit", "message": "m", "metadata": "loss=1"}', "metadata must be an object (or null)"),
    (b'{"op": "commit", "message": "m", "metadata": [1, 2]}', "metadata must be an object (or null), not a JSON array"),
    (b'{"op": "commit", "message": "m", "metadata": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}",
     "nested deeper than 32 levels"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"op": "commit", "message": "m", "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "nested too deeply"),
    (b"commit please", "one JSON object a line"),
    (b"", "one JSON object a line"),
    (b"\xff\xfe not utf-8", "one JSON object a line"),
    (b"[1, 2]", "one JSON object a line (got a JSON array)"),
    (b'"commit"', "one JSON object a line (got a JSON string)"),
    (b"null", "one JSON object a line (got JSON null)"),
    (b'{"message": "m"}', "unknown control request None"),
    (b'{"op": ["commit"]}', "unknown control request ['commit']"),
    (b'{"op": "commit", "message": "m", "amend": true}', "commit takes message, metadata, preserve_owner, not 'amend'"),
    (b'{"op": "status", "verbose": 1}', "status takes no fields, not 'verbose'"),
    (b'{"op": "commit", "message": "m", "author": "mallory"}', "cannot name a commit's author"),
    (b'{"op": "stash-pop", "index": "0"}', "stash-pop: index must be an integer"),
    (b'{"op": "stash-pop", "index": true}', "stash-pop: index must be an integer"),
    (b'{"op": "stash-pop", "index": -1}', "stash-pop: index must be an integer"),
    (b'{"op": "stash-pop", "index": 1099511627776}', "stash-pop: index must be an integer"),
    (b'{"op": "stash-pop", "index": 1.0}', "stash-pop: index must be an integer"),
    (b'{"op": "stash", "message": null}', "stash: message must be a string, not JSON null"),
    (b'{"op": "commit", "message": "m", "metadata": {"loss": NaN}}', "holds a number that is not finite"),
    (b'{"op": "commit", "message": "m", "metadata": {"loss": -Infinity}}', "holds a number that is not finite"),
    (b'{"op": "commit", "message": "m", "metadata": {"loss": 1e400}}', "holds a number that is not finite"),
    (b'{"op": "commit", "message": "\\ud800"}', "not valid Unicode"),
    (b'{"op": "commit", "message": "m", "metadata": {"\\udfff": 1}}', "not valid Unicode"),
    (b'{"op": "commit", "message": "m", "metadata": {"n": ' + b"9" * 5000 + b"}}", "one JSON object a line"),
]


def _send(fs, line: bytes) -> dict:
    fh = run(fs.ops.open, CONTROL_INO, RDWR, None).fh
    for i in range(0, len(line), 128 << 10):  # as the kernel hands a long write over
        fs.write(fh, i, line[i:i + (128 << 10)])
    fs.write(fh, len(line), b"\n")
    got = json.loads(fs.read(fh))
    fs.close(fh)
    return got


@pytest.mark.parametrize("line,why", BAD_REQUESTS, ids=range(len(BAD_REQUESTS)))
def test_every_field_of_a_control_request_is_checked_and_answered(fs, line, why):
    fs.put("staged.txt", b"a change a wrong request must not commit")
    head = fs.repo.branch_head("main")
    got = _send(fs, line)
    assert got["ok"] is False and got["exit_code"] == 2 and why in got["error"], got
    assert fs.repo.branch_head("main") == head
    assert [c.path for c in fs.stage.changes()] == ["staged.txt"]


def test_a_line_over_the_limit_is_answered_and_the_next_request_runs(fs):
    fh = run(fs.ops.open, CONTROL_INO, RDWR, None).fh
    chunk = b"x" * (128 << 10)
    for i in range(MAX_REQUEST // len(chunk) + 4):  # 1.5 MiB and no newline
        assert fs.write(fh, i * len(chunk), chunk) == len(chunk)
    assert len(fs.sfs.handles[fh].request) <= MAX_REQUEST  # dropped, not buffered
    got = json.loads(fs.read(fh))
    assert not got["ok"] and f"at most {MAX_REQUEST} bytes" in got["error"]
    fs.write(fh, 0, b"still the long line\n" + json.dumps({"op": "status"}).encode() + b"\n")
    got = json.loads(fs.read(fh))
    assert got["ok"] and got["branch"] == "main"
    fs.close(fh)


def test_a_well_formed_commit_still_runs_with_nested_metadata(fs):
    fs.put("new.txt", b"x")
    meta = {"metrics": {"loss": 0.25, "acc": [0.5, 0.75]}, "config": {"a": {"b": {"c": None}}}, "ok": True}
    got = _send(fs, json.dumps({"op": "commit", "message": "m", "metadata": meta}).encode())
    assert got["ok"] and got["commit"]
    assert fs.repo.read_commit(fs.repo.branch_head("main")).metadata == meta


# -- fuzz: whatever is written, one JSON answer comes back --------------------------------
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)
_fields = st.sampled_from(["message", "metadata", "index", "author", "op", "x"])
_request = st.builds(
    lambda op, extra: json.dumps({"op": op, **extra}).encode(),
    st.sampled_from([*OPS, "", "COMMIT", "stash_pop"]) | _json,
    st.dictionaries(_fields, _json, max_size=3))
_deep = st.builds(lambda n, o, c: o * n + c * n, st.integers(1, 3000), st.sampled_from([b"[", b'{"a":']),
                  st.sampled_from([b"]", b"}"]))
_lines = st.one_of(_request, st.binary(max_size=200), _deep,
                   st.builds(lambda a, b: a + b, _request, st.binary(max_size=8)),
                   st.builds(lambda r, i: r[:i], _request, st.integers(0, 40)))


def _answer_of(sfs, data: bytes) -> list[dict]:
    """What the control file answers to ``data`` (with the adapter's flow, no kernel):
    one answer for each complete line."""
    fh = sfs.open(CONTROL_INO, os.O_RDWR)
    h = sfs.control_buffer(fh)
    sfs.write(fh, 0, data)
    answers = []
    while control.has_request(h):
        req = control.next_request(h)
        if req is not None:
            control.answer(h, control.run_request(sfs, req))
        answers.append(json.loads(h.answer))
    sfs.release(fh)
    return answers


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_lines, min_size=1, max_size=3))
def test_fuzz_every_control_input_gets_a_well_formed_json_answer(fs, lines):
    fs.put("fuzz.txt", os.urandom(8))  # staged, so a request that gets through really runs
    head = fs.repo.branch_head("main")
    data = b"\n".join(ln.replace(b"\n", b" ") for ln in lines) + b"\n"
    answers = _answer_of(fs.sfs, data)
    assert len(answers) == len(lines)
    for got in answers:
        assert isinstance(got, dict) and isinstance(got["ok"], bool)
        if not got["ok"]:
            assert isinstance(got["error"], str) and got["error"] and "\n" not in got["error"]
            assert type(got["exit_code"]) is int and got["exit_code"] > 0
            assert "internal error" not in got["error"], got
    if not any(a["ok"] and a.get("commit") for a in answers):
        assert fs.repo.branch_head("main") == head
    else:
        c = fs.repo.read_commit(fs.repo.branch_head("main"))
        assert isinstance(c.message, str) and isinstance(c.metadata, dict)


# -- who may use the control file, and who authors commits --------------------------------
def test_only_the_mount_owner_opens_the_control_file(fs):
    a = fs.sfs.attr(CONTROL_INO)
    assert a.mode == stat.S_IFREG | 0o600
    with pytest.raises(OSError) as e:
        fs.sfs.open(CONTROL_INO, os.O_WRONLY, uid=fs.sfs.owner + 1)
    assert e.value.errno == errno.EACCES
    with pytest.raises(OSError) as e:
        fs.sfs.open(CONTROL_INO, os.O_RDONLY, uid=65534)
    assert e.value.errno == errno.EACCES
    fs.sfs.release(fs.sfs.open(CONTROL_INO, os.O_RDWR, uid=fs.sfs.owner))


def test_a_commit_is_authored_by_the_mount_owner_never_by_the_request(fs, repo):
    fs.put("a.txt", b"1")
    refused = fs.control({"op": "commit", "message": "m", "author": "mallory <m@evil>"})
    assert not refused["ok"] and "owner" in refused["error"]
    assert fs.repo.branch_head("main") == fs.stage.base
    got = fs.control({"op": "commit", "message": "m"})
    assert repo.read_commit(repo.branch_head("main")).author == repo.identity() != "mallory <m@evil>"
    assert got["ok"]
    repo.config.set("user.name", "Owner Name")
    fs.put("b.txt", b"2")
    fs.control({"op": "commit", "message": "m2"})
    assert repo.read_commit(repo.branch_head("main")).author == "Owner Name"


# -- names ------------------------------------------------------------------------------
def test_names_over_255_bytes_get_enametoolong(fs, repo):
    long_name, ok_name = "n" * 256, "n" * 255
    wide = "é" * 128  # 128 characters, 256 bytes
    for bad in (long_name, wide):
        assert errno_of(fs.create, bad) == errno.ENAMETOOLONG
        assert errno_of(fs.mkdir, bad) == errno.ENAMETOOLONG
        assert errno_of(fs.mkdir, f"sub/{bad}") == errno.ENAMETOOLONG
        assert errno_of(fs.rename, "sub/notes.txt", bad) == errno.ENAMETOOLONG
        assert errno_of(fs.ino, f"sub/{bad}/x") == errno.ENAMETOOLONG  # a path component
        assert errno_of(fs.unlink, bad) == errno.ENAMETOOLONG
    assert fs.ls("sub") == ["notes.txt"]
    fs.put(ok_name, b"fits")
    fs.mkdir("d")
    fs.rename(ok_name, f"d/{ok_name}")
    assert fs.control({"op": "commit", "message": "long names"})["ok"]
    assert f"d/{ok_name}" in repo.tree_of("main").entries
    assert run(fs.ops.statfs, None).f_namemax == 255


def test_a_long_name_in_coral_is_refused_too(fs):
    from coralfs.fs.writable.vfs import CORAL_INO
    assert errno_of(run, fs.ops.lookup, CORAL_INO, b"c" * 300, None) == errno.ENAMETOOLONG
