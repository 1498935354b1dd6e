"""experiment import/export tensorboard: tfevents written by torch's SummaryWriter, read
back with tensorboard's EventAccumulator."""

from __future__ import annotations

import json
import os

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from tests.cli.test_cli import cli
from tests.integrations.helpers import fails, names, series, show, trained


def _write(logdir, steps=range(5), start=0):
    w = SummaryWriter(str(logdir))
    for i in steps:
        w.add_scalar("train/loss", 1.0 / (i + 1), i, walltime=1_700_000_000 + i)
        w.add_scalar("eval/acc", 0.5 + i / 10, i, walltime=1_700_000_000 + i)
    w.close()


def test_import_scalars_written_by_summarywriter(tmp_path):
    logs = tmp_path / "runs"
    _write(logs / "lr-small")
    _write(logs / "lr-big", range(3))
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    got = json.loads(cli(repo, "experiment", "import", "tensorboard", str(logs), "--name", "sweep", "--json").output)
    assert sorted((d["name"], d["points"]) for d in got) == [("sweep-lr-big", 6), ("sweep-lr-small", 10)]
    small = show(repo, "sweep-lr-small")
    want = sorted([("train/loss", i, float(np.float32(1.0 / (i + 1))), 1_700_000_000 + i) for i in range(5)]
                  + [("eval/acc", i, float(np.float32(0.5 + i / 10)), 1_700_000_000 + i) for i in range(5)])
    assert series(small) == want
    # the run goes on: importing again adds only the new events
    _write(logs / "lr-small", range(5, 7))
    again = {d["name"]: (d["status"], d["points"]) for d in json.loads(
        cli(repo, "experiment", "import", "tensorboard", str(logs), "--name", "sweep", "--json").output)}
    assert again == {"sweep-lr-small": ("updated", 4), "sweep-lr-big": ("unchanged", 0)}
    assert len(series(show(repo, "sweep-lr-small"))) == 14


def test_new_style_scalars_are_read_too(tmp_path):
    # new_style: the scalars plugin's tensor form (what TensorFlow 2 writes)
    w = SummaryWriter(str(tmp_path / "tf2"))
    for i in range(4):
        w.add_scalar("lr", 0.1 * 2 ** -i, i, walltime=1_700_000_100 + i, new_style=True)
    w.close()
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "experiment", "import", "tensorboard", str(tmp_path / "tf2"))
    assert [(m, s, v) for m, s, v, _ in series(show(repo, "tf2"))] == \
        sorted(("lr", i, float(np.float32(0.1 * 2 ** -i))) for i in range(4))


def test_export_writes_scalars_tensorboard_reads(tmp_path):
    repo = trained(tmp_path)
    out = tmp_path / "tb"
    r = cli(repo, "experiment", "export", "tensorboard", "lr-a", str(out))
    assert "wrote 6 scalars" in r.output
    acc = EventAccumulator(str(out), size_guidance={"scalars": 0})
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["accuracy", "loss"]
    exp = show(repo, "lr-a")
    for metric in ("loss", "accuracy"):
        want = [(m["step"], np.float32(m["value"]), m["time"]) for m in exp["metrics"] if m["metric"] == metric]
        assert [(e.step, np.float32(e.value), e.wall_time) for e in acc.Scalars(metric)] == want
    # and it imports back as the same series (float32, as TensorBoard keeps scalars)
    fresh = str(tmp_path / "fresh")
    cli(None, "init", fresh)
    cli(fresh, "experiment", "import", "tensorboard", str(out), "--name", "lr-a")
    assert [(m, s, np.float32(v), t) for m, s, v, t in series(show(fresh, "lr-a"))] == \
        [(m, s, np.float32(v), t) for m, s, v, t in series(exp)]


def test_bad_logdirs_are_one_line_and_change_nothing(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    assert "no such directory" in fails(repo, "experiment", "import", "tensorboard", str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    assert "no tfevents files" in fails(repo, "experiment", "import", "tensorboard", str(tmp_path / "empty"))
    w = SummaryWriter(str(tmp_path / "text"))
    w.add_text("note", "no scalars here")
    w.close()
    assert "hold no scalars" in fails(repo, "experiment", "import", "tensorboard", str(tmp_path / "text"))
    # a damaged record in the middle of a log is named, not read as a shorter series
    _write(tmp_path / "damaged", range(50))
    [events] = os.listdir(tmp_path / "damaged")
    path = tmp_path / "damaged" / events
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert "fails its" in fails(repo, "experiment", "import", "tensorboard", str(tmp_path / "damaged"))
    assert "no experiment named 'ghost'" in fails(repo, "experiment", "export", "tensorboard", "ghost", str(tmp_path / "o"))
    assert not os.path.exists(tmp_path / "o")
    assert names(repo) == []
