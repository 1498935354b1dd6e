"""TensorBoard: scalars of tfevents files imported as metric series, and an experiment's
series written as scalars TensorBoard reads.

Every directory under LOGDIR that holds tfevents files is one run (TensorBoard's own
notion) and becomes one experiment: each scalar tag is a metric, each event a point at
its step and wall time. Both the old form (``simple_value``, what torch's SummaryWriter
writes) and the scalars plugin's tensors (TensorFlow 2) are read. Reading goes through
tensorboard's EventAccumulator: no TensorFlow needed.
"""

from __future__ import annotations

import os
import socket
import time

from ..objects.durable import make_dirs, write_durable
from ..objects.errors import CoralError
from ..objects.repository import Repository
from ..workflow import experiments as ex
from . import Imported, Run, add_point, need, ref_safe, store_all

SYSTEM = "tensorboard"
EXTRA = ("TensorBoard", "tensorboard")


def run_dirs(logdir: str) -> list[str]:
    """The directories under ``logdir`` (itself included) holding tfevents files."""
    out = []
    for root, dirs, files in os.walk(logdir):
        dirs.sort()
        if any("tfevents" in f for f in files):
            out.append(root)
    return out


def check_records(path: str) -> None:
    """Check every record's CRCs of one tfevents file. TensorBoard's loader stops quietly
    at the first bad record (it takes it for one still being written), which would
    import a damaged log as a shorter series; a record cut short at the very end is that
    case and is allowed."""
    import struct

    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + 12 <= len(data):
        header = data[pos:pos + 8]
        (length,), (hcrc,) = struct.unpack("<Q", header), struct.unpack_from("<I", data, pos + 8)
        if masked_crc32c(header) != hcrc:
            raise CoralError(f"{path}: record at byte {pos} fails its header checksum (the file is damaged)")
        end = pos + 12 + length + 4
        if end > len(data):
            return
        if masked_crc32c(data[pos + 12:pos + 12 + length]) != struct.unpack_from("<I", data, end - 4)[0]:
            raise CoralError(f"{path}: record at byte {pos} fails its checksum (the file is damaged)")
        pos = end


def _scalars(path: str) -> dict[str, list[tuple[float, int, float]]]:
    """tag -> [(wall time, step, value)] of one run directory."""
    need("tensorboard", *EXTRA)
    for f in sorted(os.listdir(path)):
        if "tfevents" in f and os.path.isfile(os.path.join(path, f)):
            check_records(os.path.join(path, f))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util
    acc = EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0})
    try:
        acc.Reload()
    except Exception as e:  # a damaged file: tensorboard raises its own errors (DataLossError ...)
        raise CoralError(f"{path}: cannot read its tfevents files ({type(e).__name__}: {e})") from None
    tags = acc.Tags()
    out = {t: [(e.wall_time, e.step, e.value) for e in acc.Scalars(t)] for t in tags.get("scalars", [])}
    for t in tags.get("tensors", []):
        md = acc.SummaryMetadata(t)
        if md.plugin_data.plugin_name != "scalars":
            continue
        out[t] = [(e.wall_time, e.step, float(tensor_util.make_ndarray(e.tensor_proto).item())) for e in acc.Tensors(t)]
    return out


def read_logdir(logdir: str, name: str | None = None) -> list[Run]:
    if not os.path.isdir(logdir):
        raise CoralError(f"{logdir}: no such directory (give a TensorBoard log directory)")
    dirs = run_dirs(logdir)
    if not dirs:
        raise CoralError(f"{logdir}: no tfevents files in it or below it")
    base = name or os.path.basename(os.path.abspath(logdir))
    runs = []
    for d in dirs:
        rel = os.path.relpath(d, logdir)
        scalars = _scalars(d)
        if not scalars:
            continue
        run = Run(SYSTEM, os.path.realpath(d), base if rel == "." or len(dirs) == 1 else f"{base}-{ref_safe(rel)}",
                  info={"logdir": os.path.realpath(d)})
        for tag, events in scalars.items():
            for wall, step, value in events:
                add_point(run, tag, value, step, wall)
        run.started = min((p.time for p in run.points), default=int(time.time()))
        runs.append(run)
    if not runs:
        raise CoralError(f"{logdir}: its tfevents files hold no scalars (only scalars are imported)")
    return runs


def import_logdir(repo: Repository, logdir: str, name: str | None = None) -> list[Imported]:
    return store_all(repo, read_logdir(logdir, name))


def export_experiment(repo: Repository, name: str, dest: str) -> tuple[str, int]:
    """Write one tfevents file into ``dest`` with every metric point of the experiment
    (scalars are float32 in TensorBoard); written whole to a temp file, then renamed."""
    exp = ex.load(repo, name)
    need("tensorboard", *EXTRA)
    import io

    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise CoralError(f"{dest} exists and is not a directory")
    if not exp.points:
        raise CoralError(f"experiment {name!r} has no metric points to export")
    buf = io.BytesIO()
    w = RecordWriter(buf)
    w.write(event_pb2.Event(wall_time=float(exp.started), file_version="brain.Event:2").SerializeToString())
    for i, p in enumerate(exp.points):
        # TensorBoard needs a step: a point without one (a commit's --metric) takes its
        # position in the series.
        step = p.step if p.step is not None else i
        s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=p.metric, simple_value=p.value)])
        w.write(event_pb2.Event(wall_time=float(p.time), step=step, summary=s).SerializeToString())
    make_dirs(dest)
    path = os.path.join(dest, f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.coralfs-{name}")
    path = os.path.join(dest, ref_safe(os.path.basename(path)))
    if not write_durable(path, buf.getvalue(), exclusive=True):
        raise CoralError(f"{path} exists already: export again in a moment")
    return path, len(exp.points)
