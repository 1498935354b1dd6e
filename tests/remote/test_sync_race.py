"""Two pushers on one branch, each from its own clone: every round each commits and
pushes; the loser of a race gets RemoteRefMoved (exit code 4), fetches, merges and
pushes again. After 20 rounds no commit is lost."""

from __future__ import annotations

import os
import threading

from coralfs.objects import history
from coralfs.objects.kinds import Tree, TreeEntry
from coralfs.remote.refs import RemoteRefs
from coralfs.remote.sync import RemoteRefMoved, clone, fetch, push
from tests.remote.sync_helpers import CountingBlobs, make_repo

MAIN = "refs/heads/main"
ROUNDS = 20


def _commit_one(repo, tmp, who: str, i: int):
    src = os.path.join(tmp, f"{who}-{i}.txt")
    with open(src, "w") as f:
        f.write(f"{who} round {i}\n")
    fid, _ = repo.write_file(src)
    entries = dict(repo.tree_of("HEAD").entries)
    entries[f"{who}/round-{i:02d}.txt"] = TreeEntry(fid)
    return repo.commit(Tree(entries), f"{who} {i}")


def test_two_pushers_on_one_branch_lose_no_commit(tmp_path):
    root = str(tmp_path / "remote")
    race(tmp_path, f"file://{root}", lambda: CountingBlobs(root))


def race(tmp_path, url: str, open_blobs, endpoint: str | None = None) -> None:
    """ROUNDS rounds of two pushers from separate clones of ``url``; asserts no commit is lost."""
    seed, _ = make_repo(tmp_path, steps=1, name="seed")
    push(seed, open_blobs(), "origin", [MAIN])
    clones = {w: clone(url, str(tmp_path / w), endpoint=endpoint)[0] for w in ("ann", "bob")}
    made: dict[str, list] = {"ann": [], "bob": []}
    lost_races = {"ann": 0, "bob": 0}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def pusher(who: str) -> None:
        repo = clones[who]
        blobs = open_blobs()
        try:
            for i in range(ROUNDS):
                start.wait()   # both commit and push at the same moment, every round
                made[who].append(_commit_one(repo, str(tmp_path), who, i))
                while True:
                    try:
                        push(repo, blobs, "origin", [MAIN])
                        break
                    except RemoteRefMoved:
                        lost_races[who] += 1
                        fetch(repo, blobs, "origin")
                        repo.merge("origin/main")
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
            start.abort()

    threads = [threading.Thread(target=pusher, args=(w,)) for w in clones]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(lost_races.values()) > 0   # the races did happen
    check = clones["ann"]
    fetch(check, open_blobs(), "origin")
    tip = RemoteRefs(open_blobs()).read(MAIN)
    reached = history.ancestors(check, tip)
    assert all(c in reached for w in made for c in made[w]) and len(made["ann"]) == len(made["bob"]) == ROUNDS
    files = check.tree_of(tip.hex()).entries
    assert {p for p in files if p.endswith(".txt")} == {f"{w}/round-{i:02d}.txt" for w in made for i in range(ROUNDS)}
