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
