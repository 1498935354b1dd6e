"""The shape of coralfs/fs that issue 10 set: the client side imports no FUSE stack, the
models no pyfuse3, and no module or function grows past what a reader can hold."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import coralfs.fs

FS = pathlib.Path(coralfs.fs.__file__).parent
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 60

BLOCKED_IMPORT = r"""
import sys
BLOCK = {blocked!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCK:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import importlib
for m in {modules!r}:
    importlib.import_module(m)
print('ok')
"""


def _imports_without(modules: list[str], blocked: set[str]) -> subprocess.CompletedProcess:
    code = BLOCKED_IMPORT.format(blocked=blocked, modules=modules)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_the_client_side_imports_neither_pyfuse3_nor_trio():
    # The CLI imports lifecycle (mount, umount, mounts) and the control client.
    p = _imports_without(["coralfs.fs.lifecycle", "coralfs.fs.writable.control"], {"pyfuse3", "trio"})
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_the_models_import_no_pyfuse3():
    models = ["coralfs.fs.model", "coralfs.fs.content", "coralfs.fs.readahead", "coralfs.fs.readonly.vfs",
              "coralfs.fs.writable.vfs", "coralfs.fs.writable.control"]
    p = _imports_without(models, {"pyfuse3", "trio"})
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_the_layering_check_itself_can_fail():
    p = _imports_without(["coralfs.fs.readonly.ops"], {"pyfuse3"})
    assert p.returncode != 0 and "blocked: pyfuse3" in p.stderr


def _sources() -> list[pathlib.Path]:
    return sorted(FS.rglob("*.py"))


def test_no_fs_module_over_800_lines():
    long = {str(p.relative_to(FS)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert _sources() and not long, long


def test_no_fs_function_over_60_lines():
    long = {}
    for p in _sources():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{p.relative_to(FS)}:{node.name}"] = n
    assert not long, long
