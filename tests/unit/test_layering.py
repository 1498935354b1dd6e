"""Arrows only point down: coralfs.objects never imports the FUSE, trio or CLI layers."""

from __future__ import annotations

import subprocess
import sys

CODE = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('pyfuse3', 'trio', 'typer', 'click', 'torch') or \
           name.startswith(('coralfs.fs', 'coralfs.cli', 'coralfs.formats', 'coralfs.api')):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import pkgutil, importlib, coralfs.objects
for m in pkgutil.iter_modules(coralfs.objects.__path__):
    importlib.import_module('coralfs.objects.' + m.name)
print('ok')
"""


def test_objects_layer_imports_nothing_above_it():
    p = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "ok"


def test_formats_layer_does_not_import_fuse_or_cli():
    code = CODE.replace("'coralfs.formats', ", "").replace("coralfs.objects.__path__", "__import__('coralfs.formats').formats.__path__").replace("'coralfs.objects.' + m.name", "'coralfs.formats.' + m.name").replace("import pkgutil, importlib, coralfs.objects", "import pkgutil, importlib, coralfs.formats")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_fs_layer_never_imports_the_cli_or_the_api():
    code = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.startswith(('coralfs.cli', 'coralfs.api', 'typer')):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import pkgutil, importlib, coralfs.fs
for m in pkgutil.iter_modules(coralfs.fs.__path__):
    importlib.import_module('coralfs.fs.' + m.name)
print('ok')
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


# -- every arrow, checked on the source (module level and inside functions) -------------
import ast  # noqa: E402
import pathlib  # noqa: E402

import coralfs  # noqa: E402

ROOT = pathlib.Path(coralfs.__file__).parent
# Lowest first: a module may import its own layer and the layers below it, never above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("render", ("coralfs.render",)),  # draws numbers it is given: imports nothing of coralfs
    ("objects", ("coralfs.objects",)),
    ("formats", ("coralfs.formats",)),
    ("ingest", ("coralfs.ingest", "coralfs.export", "coralfs.diff", "coralfs.interrupts")),
    ("analysis", ("coralfs.analysis",)),  # numbers about weights, read through objects and diff
    ("staging", ("coralfs.staging",)),
    ("remote", ("coralfs.remote",)),  # object-store remotes: blobs, packs, push/fetch, remote stores
    ("fs", ("coralfs.fs",)),
    ("api", ("coralfs.api", "coralfs.watch")),
    ("workflow", ("coralfs.workflow",)),
    ("integrations", ("coralfs.integrations",)),  # other trackers (MLflow, TensorBoard, W&B): workflow and below
    ("tui", ("coralfs.tui",)),  # the browser: reads through api, analysis and render; only the cli imports it
    ("cli", ("coralfs.cli", "coralfs.__main__")),
]
# coralfs/__init__.py is the composition root (it wires the layers together): above all.
COMPOSITION_ROOT = "coralfs"


def layer_of(module: str) -> int | None:
    """Index in LAYERS of a coralfs module (None: not coralfs, or the root)."""
    for i, (_name, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    if module == COMPOSITION_ROOT or module.startswith(COMPOSITION_ROOT + "."):
        return len(LAYERS)  # the root, or a module no layer claims: treated as above all
    return None


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, at any depth."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from coralfs import api` / `from .. import api` import the submodule api.
            if layer_of(target) == len(LAYERS) and target == COMPOSITION_ROOT:
                out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, target))
    return out


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    own = layer_of(module)
    bad = []
    for line, target in imported_modules(source, module, is_package):
        theirs = layer_of(target)
        if own is not None and theirs is not None and theirs > own:
            bad.append(f"{module}:{line} imports {target} ({LAYERS[theirs][0] if theirs < len(LAYERS) else 'root'}"
                       f" is above {LAYERS[own][0]})")
    return bad


def coralfs_modules() -> list[tuple[str, pathlib.Path, bool]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out.append((".".join(parts), path, is_package))
    return out


def test_every_arrow_points_down_at_module_and_function_level():
    modules = coralfs_modules()
    assert {m for m, _, _ in modules} >= {"coralfs.objects.repository", "coralfs.formats.detect", "coralfs.ingest",
                                          "coralfs.fs.daemon", "coralfs.api", "coralfs.cli.main"}
    bad = []
    for module, path, is_package in modules:
        if module == COMPOSITION_ROOT:
            continue
        bad += violations(path.read_text(), module, is_package)
    assert bad == []


def test_the_arrow_check_sees_imports_inside_functions_and_relative_ones():
    # A lower layer reaching up lazily, inside a function, is caught like a top-level one.
    lazy = "def f():\n    from ..formats import layout_of\n    return layout_of\n"
    assert violations(lazy, "coralfs.objects.repository") == [
        "coralfs.objects.repository:2 imports coralfs.formats (formats is above objects)"]
    assert violations("import coralfs.ingest\n", "coralfs.formats.detect") != []
    assert violations("from .. import api\n", "coralfs.fs.vfs") != []
    assert violations("from . import history\n", "coralfs.objects", is_package=True) == []
    for low, high in zip(LAYERS, LAYERS[1:], strict=False):
        module = low[1][0] + ".m"
        assert violations(f"from {high[1][0]} import x\n", module) != [], (low, high)
        assert violations(f"from {low[1][0]} import x\n", high[1][0] + ".m") == []


BLOCK_RUNTIME = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('pyfuse3', 'trio', 'typer', 'click'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import importlib, pkgutil
for name in MODULES:
    m = importlib.import_module(name)
    for sub in pkgutil.iter_modules(getattr(m, '__path__', [])):
        importlib.import_module(name + '.' + sub.name)
print('ok')
"""


def _imports_without_fuse_trio_typer(modules: list[str]) -> subprocess.CompletedProcess:
    code = f"MODULES = {modules!r}\n" + BLOCK_RUNTIME
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_objects_and_the_staging_area_import_without_fuse_trio_or_typer():
    p = _imports_without_fuse_trio_typer(["coralfs.objects", "coralfs.ingest", "coralfs.export", "coralfs.diff",
                                          "coralfs.formats", "coralfs.staging", "coralfs.fs.lifecycle",
                                          "coralfs.analysis", "coralfs.render"])
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "ok"


def test_the_fuse_blocker_does_block():
    p = _imports_without_fuse_trio_typer(["coralfs.fs.readonly.ops"])
    assert p.returncode != 0 and "blocked: pyfuse3" in p.stderr


def test_one_repository_class_for_every_caller():
    import coralfs.api
    import coralfs.objects.repository

    classes = [(m, p) for m, p, _ in coralfs_modules()
               if any(isinstance(n, ast.ClassDef) and n.name == "Repository" for n in ast.walk(ast.parse(p.read_text())))]
    assert [m for m, _ in classes] == ["coralfs.objects.repository"]
    assert coralfs.Repository is coralfs.api.Repository is coralfs.objects.repository.Repository


def test_analysis_and_render_import_numpy_only_never_torch_or_the_cli():
    code = CODE.replace("'coralfs.formats', 'coralfs.api'", "'coralfs.formats', 'coralfs.api', 'coralfs.staging'").replace(
        "import pkgutil, importlib, coralfs.objects\nfor m in pkgutil.iter_modules(coralfs.objects.__path__):\n"
        "    importlib.import_module('coralfs.objects.' + m.name)",
        "import importlib\nfor m in ('coralfs.analysis', 'coralfs.analysis.heatmap', 'coralfs.analysis.visual',"
        " 'coralfs.render', 'coralfs.render.text'):\n    importlib.import_module(m)\nassert 'torch' not in sys.modules")
    assert "coralfs.analysis.visual" in code
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "ok"


def test_render_imports_nothing_of_coralfs():
    for module, path, is_package in coralfs_modules():
        if module.startswith("coralfs.render"):
            assert [t for _, t in imported_modules(path.read_text(), module, is_package)
                    if t.startswith("coralfs") and not t.startswith("coralfs.render")] == []


def test_no_module_over_800_lines():
    """A module past 800 lines is split where its parts meet (codecs: planes.py and
    sparse.py; remote sync: graph.py), so each can be read whole."""
    root = pathlib.Path(coralfs.__file__).parent
    long = {str(p.relative_to(root)): n for p in root.rglob("*.py") if (n := len(p.read_text().splitlines())) > 800}
    assert not long, long
