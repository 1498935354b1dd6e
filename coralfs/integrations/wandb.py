"""Weights & Biases: an offline run directory (``wandb/offline-run-*``, written with
``WANDB_MODE=offline``) imported as an experiment, without network.

The run's transaction log ``run-ID.wandb`` is read record by record: wandb writes it in
LevelDB's log format (32 KiB blocks of CRC-checked fragments after a 7-byte ``:W&B``
header) and each record is a ``wandb.proto`` Record. The run record and config records
give the params (config keys, ``_wandb`` left out), history records the metric series
(``_step`` as the step, ``_timestamp`` as the time; keys starting with ``_`` are wandb's
own) and summary records the final values: a summary value no history row holds (set
with ``run.summary[...]``) becomes one point without a step at the run's end. A record
that fails its CRC is named, never skipped; a log cut short at the end (a run that did
not finish writing) is read up to the cut.
"""

from __future__ import annotations

import glob
import json
import os
import struct
import zlib
from collections.abc import Iterator

from ..objects.errors import CoralError
from ..objects.repository import Repository
from . import Imported, Run, add_point, need, param_value, store_all

SYSTEM = "wandb"
_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: str) -> Iterator[bytes]:
    """The records of a ``.wandb`` file, each checked against its CRC."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:7] != _HEADER:
        raise CoralError(f"{path} is not a wandb run log (no :W&B header)")
    pos, parts = 7, None
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:            # the writer pads a block's tail too short for a header
            pos += left
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if crc == 0 and length == 0 and kind == 0:
            pos += left
            continue
        payload = data[pos + 7:pos + 7 + length]
        if len(payload) < length:
            return              # cut short by a writer that stopped: the rest is not there
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise CoralError(f"{path}: record at byte {pos} fails its checksum (the run log is damaged)")
        pos += 7 + length
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            parts = [payload]
        elif kind in (_MIDDLE, _LAST) and parts is not None:
            parts.append(payload)
            if kind == _LAST:
                yield b"".join(parts)
                parts = None
        else:
            raise CoralError(f"{path}: record at byte {pos} has an unknown fragment type {kind}")


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def _json(v: str):
    try:
        return json.loads(v)
    except ValueError:
        return v


def _apply(into: dict, record) -> None:
    """A config or summary record's updates and removals."""
    for item in record.update:
        into[_key(item)] = _json(item.value_json)
    for item in record.remove:
        into.pop(_key(item), None)


def find_run_log(run_dir: str) -> str:
    if not os.path.isdir(run_dir):
        raise CoralError(f"{run_dir}: no such directory (give a wandb run directory, e.g. wandb/offline-run-...)")
    found = sorted(glob.glob(os.path.join(glob.escape(run_dir), "run-*.wandb")))
    if not found:
        latest = os.path.join(run_dir, "latest-run")
        if os.path.isdir(latest):
            return find_run_log(latest)
        raise CoralError(f"{run_dir} is not a wandb run directory (no run-*.wandb file in it)")
    if len(found) > 1:
        raise CoralError(f"{run_dir} holds {len(found)} run logs: give one run directory")
    return found[0]


def read_run_dir(run_dir: str, name: str | None = None) -> Run:
    need("wandb.proto.wandb_internal_pb2", "Weights & Biases", "wandb")
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb
    path = find_run_log(run_dir)
    run: Run | None = None
    config: dict = {}
    summary: dict = {}
    history_keys: set[str] = set()
    last_time = 0.0
    rows: list[dict] = []
    exited = False
    for data in records(path):
        rec = pb.Record()
        try:
            rec.ParseFromString(data)
        except DecodeError:
            raise CoralError(f"{path}: a record does not decode (the run log is damaged)") from None
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run = Run(SYSTEM, r.run_id, name or r.display_name or r.run_id,
                      started=int(r.start_time.seconds) if r.HasField("start_time") else 0,
                      info={"run_id": r.run_id, "project": r.project, "entity": r.entity, "dir": os.path.realpath(run_dir)})
            for item in r.config.update:
                config[_key(item)] = _json(item.value_json)
        elif kind == "config":
            _apply(config, rec.config)
        elif kind == "history":
            row = {_key(i): _json(i.value_json) for i in rec.history.item}
            rows.append(row)
        elif kind == "summary":
            _apply(summary, rec.summary)
        elif kind == "exit":
            exited = True
    if run is None:
        raise CoralError(f"{path} holds no run record: not a wandb run log")
    run.params = {k: param_value(v) for k, v in config.items() if not k.startswith("_")}
    for row in rows:
        when = row.get("_timestamp")
        when = float(when) if isinstance(when, (int, float)) else float(run.started)
        last_time = max(last_time, when)
        for k, v in row.items():
            if k.startswith("_"):
                continue
            history_keys.add(k)
            add_point(run, k, v, row.get("_step"), when)
    end = int(max(last_time, run.started))
    for k, v in summary.items():
        if k.startswith("_") or k in history_keys or not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        add_point(run, k, v, None, end)
    if exited:
        run.stopped = end
    return run


def import_run_dir(repo: Repository, run_dir: str, name: str | None = None) -> list[Imported]:
    return store_all(repo, [read_run_dir(run_dir, name)])


# --- `coralfs import wandb RUN_DIR_OR_ARTIFACT_DIR`: the model files as a commit ---------

# What wandb itself writes into a run's files/ (not the run's model files).
_OWN_FILES = {"requirements.txt", "config.yaml", "wandb-summary.json", "wandb-metadata.json", "output.log",
              "diff.patch", "conda-environment.yaml"}


def _logged_artifacts(path: str) -> list[tuple[str, str, str]]:
    """(artifact name, path in the artifact, local copy) of the files of each artifact the
    run logged (an offline run keeps a staged copy of each file until it is synced)."""
    from wandb.proto import wandb_internal_pb2 as pb
    out = []
    for data in records(path):
        rec = pb.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "artifact":
            for e in rec.artifact.manifest.contents:
                out.append((rec.artifact.name, e.path, e.local_path))
    return out


def _stage(stage: str, rel: str, src: str, what: str) -> None:
    """Put ``src`` at ``stage/rel`` (a hard link, or a copy across file systems)."""
    import shutil
    parts = rel.replace("\\", "/").split("/")
    if rel.startswith("/") or ".." in parts or not all(parts):
        raise CoralError(f"{what}: the file name {rel!r} would leave the import; nothing was committed")
    if not os.path.isfile(src):
        raise CoralError(f"{what}: {src} is missing (was the run's file moved?); nothing was committed")
    dest = os.path.join(stage, *parts)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    try:
        os.link(os.path.realpath(src), dest)
    except OSError:
        shutil.copy2(src, dest)


def _final_metrics(run: Run) -> dict:
    """Each metric's last value (the summary a run shows)."""
    out: dict = {}
    for p in run.points:
        out[p.metric] = p.value
    return out


def prepare_import(path: str):
    """What ``coralfs import wandb PATH`` commits. A run directory (offline, or synced
    and kept): the model files the run saved (``wandb.save`` puts links to them in
    ``files/``; those links are followed, as the run asked to keep those files) and the
    files of the artifacts it logged (under ``artifacts/NAME/``), with the run's config
    and final metrics in the commit's metadata. Any other directory is a downloaded
    artifact folder (``artifact.download()``): its files as they are."""
    import tempfile

    from . import ImportSource
    path = path.rstrip("/") or path
    if not os.path.isdir(path):
        raise CoralError(f"{path}: not a directory: give a wandb run directory or a downloaded artifact folder")
    try:
        log = find_run_log(path)
    except CoralError:
        log = None
    if log is None:  # a downloaded artifact folder: "name:v3" as wandb names it
        name, _, version = os.path.basename(os.path.abspath(path)).partition(":")
        meta = {"wandb": {"artifact": name, **({"version": version} if version else {})}}
        return ImportSource([path], meta, os.path.basename(os.path.abspath(path)))
    run = read_run_dir(os.path.dirname(log))
    stage = tempfile.mkdtemp(prefix="coral-wandb-")
    try:
        files = os.path.join(os.path.dirname(log), "files")
        n = 0
        if os.path.isdir(files):
            for root, dirs, names in os.walk(files):
                dirs[:] = [d for d in dirs if d != "media"]
                for f in names:
                    rel = os.path.relpath(os.path.join(root, f), files)
                    if rel in _OWN_FILES:
                        continue
                    _stage(stage, rel, os.path.join(root, f), path)
                    n += 1
        for art, rel, local in _logged_artifacts(log):
            _stage(stage, f"artifacts/{art}/{rel}", local, path)
            n += 1
        if not n:
            raise CoralError(f"{path}: the run saved no model files (wandb.save or log_artifact): nothing to "
                             "import; `coralfs experiment import wandb` imports its metrics alone")
    except BaseException:
        import shutil
        shutil.rmtree(stage, ignore_errors=True)
        raise
    meta = {"wandb": {"run_id": run.info.get("run_id"), "project": run.info.get("project"),
                      "entity": run.info.get("entity"), "name": run.name, "config": run.params},
            "metrics": _final_metrics(run)}
    return ImportSource([stage], meta, run.name, cleanup=[stage])
