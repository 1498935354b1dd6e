"""The staging area is not mount code: coralfs.staging and every module in it import with
pyfuse3, trio and typer (and the layers above the staging area) unavailable."""

from __future__ import annotations

import subprocess
import sys

CODE = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('pyfuse3', 'trio', 'typer', 'click') or \
           name.startswith(('coralfs.fs', 'coralfs.cli', 'coralfs.api', 'coralfs.watch')):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import pkgutil, importlib, coralfs.staging
names = [m.name for m in pkgutil.walk_packages(coralfs.staging.__path__, 'coralfs.staging.')]
for n in names:
    importlib.import_module(n)
print(' '.join(sorted(names)))
"""


def test_the_staging_package_imports_without_fuse_trio_typer_or_the_layers_above():
    p = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert "coralfs.staging.area" in p.stdout.split()
