"""Start-up: what `coralfs --help`, `log`, `status` and `branch` import (issue 16: a git-like
tool answers at once). Each check runs in a fresh interpreter and reads its sys.modules, so
a module counts only when it was really imported. The speed itself is a benchmark
(scripts/bench_cli.py, docs/benchmarks.md), not a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# What none of these commands needs: numbers (numpy and its dtypes), mounts (trio, pyfuse3),
# formats' libraries, typer's pydantic adapters, the remote store, the format layer.
HEAVY = ("numpy", "ml_dtypes", "trio", "pyfuse3", "h5py", "torch", "safetensors", "pydantic",
         "obstore", "boto3", "mlflow", "coralfs.fs", "coralfs.remote", "coralfs.api", "coralfs.formats",
         "coralfs.diff", "coralfs.analysis", "coralfs.integrations", "coralfs.workflow", "coralfs.tui")

RUN = r"""
import contextlib, io, json, sys
args = json.loads(sys.argv[1])
if args is None:
    import coralfs.cli.main
    coralfs.cli.main.load_commands()   # every command module, as `coralfs CMD` loads them
    rc = 0
else:
    from coralfs.cli.main import main
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(args)
print(json.dumps({"rc": rc, "modules": sorted(sys.modules)}))
"""


def loaded(args: list[str] | None, repo: str | None = None) -> tuple[int, set[str]]:
    env = dict(os.environ)
    if repo is not None:
        env["CORALFS_REPO"] = repo
    p = subprocess.run([sys.executable, "-c", RUN, json.dumps(args)], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return out["rc"], set(out["modules"])


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.fixture
def repo_with_commit(tmp_path):
    from coralfs.cli.main import main
    repo = str(tmp_path / "repo")
    assert main(["init", repo]) == 0
    (tmp_path / "notes.txt").write_text("hello\n")
    assert main(["-R", repo, "commit", str(tmp_path / "notes.txt"), "-m", "first"]) == 0
    return repo


def test_importing_the_cli_imports_nothing_heavy():
    rc, modules = loaded(None)
    assert heavy_in(modules) == []
    assert "coralfs.cli.main" in modules


# What the root help does not need: typer (it draws from coralfs/cli/catalog.py with rich's
# console, table and panel), typer's rich_utils and the markdown and traceback modules it
# imports, or any command module.
NOT_FOR_ROOT_HELP = ("typer", "click", "markdown_it", "rich.markdown", "rich.traceback", "rich.syntax", "pygments",
                     "coralfs.cli.app", "coralfs.cli.common", "coralfs.cli.plain_params")


@pytest.mark.parametrize("args", [["--help"], ["-h"], [], ["-R", "/nowhere", "--help"]])
def test_help_imports_nothing_heavy(args):
    rc, modules = loaded(args)
    assert rc == (2 if args == [] else 0)
    assert heavy_in(modules) == []
    assert sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in NOT_FOR_ROOT_HELP)) == []
    assert sorted(m for m in modules if m.startswith("coralfs.cli.") and m.endswith("_cmds")) == []
    assert "coralfs.cli.root_help" in modules and "rich.table" in modules   # it did draw the help


def test_a_command_s_help_still_loads_the_commands():
    rc, modules = loaded(["log", "--help"])
    assert rc == 0
    assert {"typer", "coralfs.cli.repo_cmds", "coralfs.cli.app"} <= modules


@pytest.mark.parametrize("args", [["log"], ["log", "--oneline", "-n", "5"], ["status"], ["branch"], ["branch", "-h"]])
def test_everyday_commands_import_nothing_heavy(repo_with_commit, args):
    rc, modules = loaded(args, repo_with_commit)
    assert rc == 0
    heavy = heavy_in(modules)
    if args == ["status"]:
        # status reads the staging area, which builds trees with the ingest layer (and so
        # the format modules: their own imports are lazy, numpy included).
        heavy = [m for m in heavy if not m.startswith("coralfs.formats")]
    assert heavy == []
    assert "coralfs.objects.repository" in modules   # they did read the repository


def test_lazy_module_imports_on_first_attribute_and_caches_it():
    code = ("import sys; from coralfs.objects.lazy import lazy_module; m = lazy_module('colorsys');"
            "before = 'colorsys' in sys.modules; f = m.rgb_to_hsv;"
            "print(before, 'colorsys' in sys.modules, f is sys.modules['colorsys'].rgb_to_hsv, 'rgb_to_hsv' in vars(m))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["False", "True", "True", "True"]


def test_dtypes_resolve_their_numpy_types_on_use():
    import ml_dtypes
    import numpy as np

    from coralfs.objects import dtypes
    assert dtypes.lookup("BF16").numpy == np.dtype(ml_dtypes.bfloat16)
    assert dtypes.lookup("F8_E8M0").numpy == np.dtype(ml_dtypes.float8_e8m0fnu)
    assert dtypes.lookup("BOOL").numpy == np.dtype(np.bool_)
    assert dtypes.lookup("B3").numpy is None
    for d in dtypes.BY_NAME.values():
        assert dtypes.from_numpy(d.numpy) is d
        assert d.numpy.itemsize == d.width
    assert dtypes.from_array_dtype(np.dtype(">f4")).name == "B4"


def test_a_local_mount_does_not_import_the_remote_store():
    code = ("import sys, coralfs.fs.reads, coralfs.fs.adapter, coralfs.fs.daemon, coralfs.fs.readonly.ops;"
            "print([m for m in sys.modules if m.startswith('coralfs.remote')])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_object_unavailable_is_one_class_re_exported_by_the_remote_store():
    from coralfs.objects.errors import CoralError, ObjectUnavailable
    from coralfs.remote import store
    assert store.ObjectUnavailable is ObjectUnavailable
    e = ObjectUnavailable("ab" * 32, "timed out")
    assert isinstance(e, CoralError) and e.exit_code == 5
    assert str(e) == f"object {'ab' * 32} could not be fetched: timed out"
    assert str(ObjectUnavailable("packs/p1.pack", "gone")) == "packs/p1.pack could not be fetched: gone"
