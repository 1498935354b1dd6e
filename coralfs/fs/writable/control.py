"""The control-file protocol of a writable mount, in one place: one JSON object a line
in, one JSON object out. The bytes a handle collects (:class:`ControlBuffer`), the check
of each request, running it against the model (:func:`run_request`) and the client
(:func:`request`, which the CLI and the lifecycle use: nothing here imports pyfuse3 or trio).

Every request is checked here before anything runs: the line's size and encoding, that
it is one JSON object, the operation, and each field's name and type (``message`` a
string, ``metadata`` an object of finite JSON values nested at most MAX_DEPTH deep,
``index`` a small integer). Whatever a client writes gets an answer
``{"ok": false, "error": ..., "exit_code": 2}`` rather than an exception in the daemon
(which the kernel would turn into EIO). ops.py decides only where a request runs (a
commit in a worker thread, after the rebase on the serving thread).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...objects.errors import CoralError
from ...staging import RESERVED, StagingError

if TYPE_CHECKING:
    from .vfs import StageFS

log = logging.getLogger(__name__)

MAX_REQUEST = 1 << 20   # bytes of one request line
MAX_DEPTH = 32          # nesting of metadata (a commit's metadata is read back by every log)
MAX_INDEX = 1 << 31     # a stash index fits SQLite and a file name

# op -> {field: (check, what the field must be)}; "op" itself is always there.
_STRING = (lambda v: isinstance(v, str), "a string")
_OBJECT = (lambda v: v is None or isinstance(v, dict), "an object (or null)")
_BOOL = (lambda v: v is None or isinstance(v, bool), "true or false (or null)")
_INDEX = (lambda v: v is None or (type(v) is int and 0 <= v < MAX_INDEX), f"an integer 0..{MAX_INDEX - 1} (or null)")
_NUMBER = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number")
OPS: dict[str, dict[str, tuple]] = {
    "commit": {"message": _STRING, "metadata": _OBJECT, "preserve_owner": _BOOL},
    # A trainer logs a metric of the experiment whose branch (exp/NAME) is mounted.
    "log-metric": {"metric": _STRING, "value": _NUMBER, "step": _INDEX},
    "status": {},
    "rebase": {},
    "stash": {"message": _STRING},
    "stash-pop": {"index": _INDEX},
}


class BadRequest(CoralError):
    """A control request that cannot run as written."""

    exit_code = 2


def error_answer(error: str, exit_code: int = 2) -> dict:
    return {"ok": False, "error": error, "exit_code": exit_code}


@dataclass(kw_only=True)
class ControlBuffer:
    """What one open control file holds: request bytes not yet run, the last answer."""

    request: bytearray = field(default_factory=bytearray)
    answer: bytes = b""
    overflow: bool = False  # a request line over MAX_REQUEST: dropped up to its newline


def take_bytes(buf: ControlBuffer, data: bytes) -> None:
    """Bytes written to a control handle. A line longer than MAX_REQUEST is answered
    with an error at once and dropped up to its newline (memory stays bounded)."""
    if buf.overflow:
        nl = data.find(b"\n")
        if nl < 0:
            return
        buf.overflow = False
        data = data[nl + 1:]
    buf.request += data
    if len(buf.request) > MAX_REQUEST and b"\n" not in buf.request:
        buf.answer = json.dumps(error_answer(f"a control request is at most {MAX_REQUEST} bytes")).encode()
        buf.request = bytearray()
        buf.overflow = True


def has_request(buf: ControlBuffer) -> bool:
    """A complete line waits to run."""
    return b"\n" in buf.request


def next_request(buf: ControlBuffer) -> dict | None:
    """The first request line written to a control handle, or None (and an error
    answer on the handle) when it is not a valid request (:func:`parse_request`)."""
    line, _, rest = bytes(buf.request).partition(b"\n")
    buf.request = bytearray(rest)
    try:
        return parse_request(line)
    except BadRequest as e:
        buf.answer = json.dumps(error_answer(str(e), e.exit_code)).encode()
        return None


def answer(buf: ControlBuffer, reply: dict) -> None:
    buf.answer = json.dumps(reply).encode()


def run_request(model: StageFS, req: dict) -> dict:
    """One checked request against the model (changes to the staging area paused; a
    commit may run in a worker thread once :meth:`StageFS.rebase` ran on the serving
    thread). Every failure is an answer, never an exception."""
    op = req.get("op")
    try:
        if op == "commit":
            return model.commit(req.get("message") or "", req.get("metadata"), bool(req.get("preserve_owner")))
        if op == "status":
            return {"ok": True, **model.status()}
        if op == "rebase":
            model.rebase()
            return {"ok": True}
        if op == "stash":
            return model.stash(req.get("message") or "")
        if op == "stash-pop":
            return model.stash_pop(req.get("index"))
        if op == "log-metric":
            return model.log_metric(req.get("metric"), req.get("value"), req.get("step"))
        return error_answer(f"unknown control request {op!r}")
    except CoralError as e:
        return {"ok": False, "error": str(e), "exit_code": e.exit_code}
    except OSError as e:
        return {"ok": False, "error": f"{e.strerror or e}: {e.filename or ''}".rstrip(": "), "exit_code": 1}
    except Exception as e:  # a bug must not become EIO for the client: logged, answered
        log.exception("control request %s failed", op)
        return error_answer(f"internal error in {op}: {type(e).__name__}: {e} (see the daemon log)", 1)


def request(mountpoint: str, req: dict) -> dict:
    """Send one request to the writable mount at ``mountpoint`` and return its answer."""
    path = os.path.join(mountpoint, RESERVED, "control")
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise StagingError(f"{mountpoint} is not a writable coralfs mount (no {RESERVED}/control); "
                           "mount it with `coralfs mount REPO MNT --write`") from None
    try:
        os.write(fd, (json.dumps(req) + "\n").encode())
        buf = b""
        while True:
            got = os.pread(fd, 1 << 20, len(buf))
            if not got:
                break
            buf += got
    finally:
        os.close(fd)
    try:
        return json.loads(buf)
    except ValueError:
        raise StagingError(f"{mountpoint}: the mount gave no answer to {req.get('op')!r}") from None


def parse_request(line: bytes) -> dict:
    """The request on one control line, checked field by field (BadRequest otherwise)."""
    if len(line) > MAX_REQUEST:
        raise BadRequest(f"a control request is at most {MAX_REQUEST} bytes (got {len(line)})")
    try:
        req = json.loads(line.decode("utf-8"))
    except RecursionError:
        raise BadRequest("a control request is nested too deeply") from None
    except ValueError as e:  # also UnicodeDecodeError
        raise BadRequest(f"a control request is one JSON object a line ({_short(str(e))})") from None
    if not isinstance(req, dict):
        raise BadRequest(f"a control request is one JSON object a line (got {_kind(req)})")
    op = req.get("op")
    fields = OPS.get(op) if isinstance(op, str) else None
    if fields is None:
        raise BadRequest(f"unknown control request {_short(repr(op))}")
    for name, value in req.items():
        if name == "op":
            continue
        if name == "author" and op == "commit":
            raise BadRequest("a request cannot name a commit's author: a mount records its commits as its owner "
                             "(set user.name with `coralfs config set user.name NAME`)")
        if name not in fields:
            allowed = ", ".join(fields) or "no fields"
            raise BadRequest(f"{op} takes {allowed}, not {_short(repr(name))}")
        check, what = fields[name]
        if not check(value):
            raise BadRequest(f"{op}: {name} must be {what}, not {_kind(value)}")
        _check_value(value, f"{op}: {name}", 0)
    return req


def _check_value(v, where: str, depth: int) -> None:
    """Strings encodable as UTF-8 (JSON escapes can spell lone surrogates), finite
    numbers, and no deeper than MAX_DEPTH: what canonical commit JSON can hold."""
    if depth > MAX_DEPTH:
        raise BadRequest(f"{where} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(f"{where} holds a string that is not valid Unicode (a lone surrogate)") from None
    elif isinstance(v, float) and not math.isfinite(v):
        raise BadRequest(f"{where} holds a number that is not finite (NaN or infinity): commits keep finite JSON")
    elif isinstance(v, dict):
        for k, x in v.items():
            _check_value(k, where, depth + 1)
            _check_value(x, where, depth + 1)
    elif isinstance(v, list):
        for x in v:
            _check_value(x, where, depth + 1)


def _kind(v) -> str:
    if isinstance(v, bool):
        return f"JSON {str(v).lower()}"
    kinds = {str: "a JSON string", int: "a JSON number", float: "a JSON number", list: "a JSON array",
             dict: "a JSON object", type(None): "JSON null"}
    return kinds.get(type(v), type(v).__name__)


def _short(s: str, n: int = 60) -> str:
    return s if len(s) <= n else s[:n] + "..."


__all__ = ["MAX_REQUEST", "OPS", "BadRequest", "ControlBuffer", "answer", "error_answer", "has_request",
           "next_request", "parse_request", "request", "run_request", "take_bytes"]
