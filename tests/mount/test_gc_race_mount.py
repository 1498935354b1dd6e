"""gc racing commits of a real writable mount (the daemon's StagingArea.commit under its own
write session, gc in this process): every acknowledged commit exports, fsck is clean."""

from __future__ import annotations

import os
import random

import pytest

from coralfs import Repository
from coralfs.fs.writable.control import request
from coralfs.objects.ids import from_hex
from tests.mount.conftest import mounted
from tests.ops.test_gc_race import DEFAULT_AGE, ROUNDS, GcLoop, check, orphan, write_content

pytestmark = pytest.mark.mount


@pytest.mark.parametrize("prune_age", [0.0, DEFAULT_AGE], ids=["prune-age-0", "default-age"])
def test_gc_racing_writable_mount_commits(tmp_path, prune_age):
    path = str(tmp_path / "repo")
    Repository.init(path).close()
    mp = str(tmp_path / "stage")
    rng = random.Random(11)
    repo = Repository.open(path)
    try:
        with mounted(path, mp, None, "--write"):
            for r in range(ROUNDS):
                src = str(tmp_path / f"src{r}")
                content = write_content(src, r)
                orphan(repo, src, age=prune_age > 0)
                for name, data in content.items():
                    with open(os.path.join(mp, name), "wb") as f:
                        f.write(data)
                with GcLoop(path, prune_age, continuous=True, delay=rng.uniform(0.0, 0.05)):
                    got = request(mp, {"op": "commit", "message": f"round {r}"})
                assert got.get("ok"), got
                check(repo, from_hex(got["commit"]), content, str(tmp_path / f"out{r}"))
    finally:
        repo.close()
