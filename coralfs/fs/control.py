"""The control-file protocol of a writable mount: one JSON object a line in, one JSON
object out.

Every request is checked here before anything runs: the line's size and encoding, that
it is one JSON object, the operation, and each field's name and type (``message`` a
string, ``metadata`` an object of finite JSON values nested at most MAX_DEPTH deep,
``index`` a small integer). Whatever a client writes gets an answer
``{"ok": false, "error": ..., "exit_code": 2}`` rather than an exception in the daemon
(which the kernel would turn into EIO). Nothing here touches the staging area.
"""

from __future__ import annotations

import json
import math

from ..objects.errors import CoralError

MAX_REQUEST = 1 << 20   # bytes of one request line
MAX_DEPTH = 32          # nesting of metadata (a commit's metadata is read back by every log)
MAX_INDEX = 1 << 31     # a stash index fits SQLite and a file name

# op -> {field: (check, what the field must be)}; "op" itself is always there.
_STRING = (lambda v: isinstance(v, str), "a string")
_OBJECT = (lambda v: v is None or isinstance(v, dict), "an object (or null)")
_INDEX = (lambda v: v is None or (type(v) is int and 0 <= v < MAX_INDEX), f"an integer 0..{MAX_INDEX - 1} (or null)")
OPS: dict[str, dict[str, tuple]] = {
    "commit": {"message": _STRING, "metadata": _OBJECT},
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


__all__ = ["MAX_REQUEST", "OPS", "BadRequest", "error_answer", "parse_request"]
