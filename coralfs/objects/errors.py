"""The base of every error coralfs reports to a user, and the store's own errors."""

from __future__ import annotations

from .ids import is_hex_prefix


class CoralError(Exception):
    """An error with a one-line message a user can act on.

    The CLI prints ``str(error)`` alone (no traceback unless verbose) and exits with
    ``exit_code``.
    """

    exit_code = 1


class NotARepository(CoralError):
    def __init__(self, path: str, why: str = "") -> None:
        self.path = path
        extra = f" ({why})" if why else ""
        super().__init__(
            f"not a coralfs repository: {path}{extra}; create one with `coralfs init PATH` "
            "or point at one with --repo/-R or CORALFS_REPO"
        )


class ObjectNotFound(CoralError):
    def __init__(self, object_id_hex: str, what: str = "object") -> None:
        self.object_id = object_id_hex
        super().__init__(f"{what} {object_id_hex} is missing from the repository; run `coralfs fsck`")


class CorruptObject(CoralError):
    """A stored object failed verification: never served as wrong bytes."""

    exit_code = 3

    def __init__(self, object_id_hex: str, why: str) -> None:
        self.object_id = object_id_hex
        self.why = why
        super().__init__(f"corrupt object {object_id_hex}: {why}; run `coralfs fsck` to list damage")


class ObjectUnavailable(CoralError):
    """A remote did not deliver an object within the read's budget. Defined here, below
    the file system layer that turns it into EIO, so a local mount never imports the
    remote store (coralfs.remote.store raises it and re-exports it)."""

    exit_code = 5

    def __init__(self, object_id_hex: str, why: str) -> None:
        self.object_id = object_id_hex
        self.why = why
        what = f"object {object_id_hex}" if is_hex_prefix(object_id_hex) and len(object_id_hex) == 64 else object_id_hex
        super().__init__(f"{what} could not be fetched: {why}")
