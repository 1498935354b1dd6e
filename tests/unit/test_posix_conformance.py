"""scripts/posix_conformance without the suites themselves: the hf-mount subset rule, the
reading of `prove -v` output (failures, TODOs, files that stop early, long names) and the
mapping of fsx's "disabling" messages to the options that turn those operations off."""

from __future__ import annotations

import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "scripts", "posix_conformance")


def _load() -> types.ModuleType:
    # The script has no .py suffix (it is run as a command): load its source as a module.
    mod = types.ModuleType("posix_conformance")
    mod.__file__ = SCRIPT
    sys.modules[mod.__name__] = mod  # dataclasses look their module up there
    with open(SCRIPT) as f:
        exec(compile(f.read(), SCRIPT, "exec"), mod.__dict__)
    return mod


pc = _load()


def test_subset_rule_leaves_out_directories_and_files_as_hf_mount_does(tmp_path):
    t = tmp_path / "tests"
    files = {
        "chmod/00.t": "expect 0 chmod ${n0} 0644\n",
        "chmod/01.t": "for type in regular dir fifo block char socket symlink; do\n",
        "chmod/02.t": "expect ENAMETOOLONG chmod ${nx} 0644\n",
        "open/00.t": "expect 0 open ${n0} O_CREAT 0644\n",
        "open/01.t": "expect 0 link ${n0} ${n1}\n",
        "open/02.t": "expect 0 chmod ${n0} 01777 # S_ISVTX\n",
        "link/00.t": "expect 0 create ${n0} 0644\n",
        "mkfifo/00.t": "expect 0 create ${n0} 0644\n",
    }
    for rel, text in files.items():
        (t / rel).parent.mkdir(parents=True, exist_ok=True)
        (t / rel).write_text(text)
    (t / "misc.sh").write_text("# not a directory\n")
    got = {d: [os.path.relpath(f, t) for f in fs] for d, fs in pc.subset_files(str(t)).items()}
    assert got == {"chmod": ["chmod/00.t"], "open": ["open/00.t"]}


def test_prove_output_gives_failures_todos_and_missing_tests():
    long = "a" * 250
    out = "\n".join([
        "/src/pjdfstest/tests/chmod/00.t .. ",
        "1..4",
        "ok 1",
        f"not ok 2 - tried 'create pjdfstest_{'b' * 32}/{long} 0644', expected 0, got EACCES",
        "not ok 3 # TODO Linux doesn't clear the SGID/SUID bits for directories",
        "ok 4",
        "ok",
        "/src/pjdfstest/tests/utimensat/09.t .. ",
        "1..7",
        "ok 1",
        "Bail out!",
        "Failed 6/7 subtests",
    ])
    res = pc.parse_prove(out)
    a, b = res["/src/pjdfstest/tests/chmod/00.t"], res["/src/pjdfstest/tests/utimensat/09.t"]
    assert (a.planned, a.run, a.failed, a.todo, a.n_failed) == (4, 4, [2], [3], 1)
    assert a.messages[2] == "tried 'create N/<250 chars> 0644', expected 0, got EACCES"
    assert (b.planned, b.run, b.failed, b.n_failed) == (7, 1, [], 6)
    assert pc.ranges([1, 2, 3, 5, 7, 8, 10]) == "1-3, 5, 7-8, 10"


def test_fsx_refusals_map_to_the_options_that_turn_them_off():
    out = ("main: filesystem does not support fallocate mode 0, disabling!\n"
           "main: filesystem does not support fallocate mode FALLOC_FL_KEEP_SIZE, disabling!\n"
           "main: filesystem does not support fallocate mode FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, disabling!\n"
           "main: filesystem does not support dontcache IO, disabling!\n"
           "main: atomic writes need O_DIRECT (-Z), disabling!\n"
           "All 50000 operations completed A-OK!\n")
    assert pc.refused_ops(out) == {"-F", "-K", "-H", "-a"}
    assert pc.refused_ops("All 10 operations completed A-OK!\n") == set()
