"""The base of every error coralfs reports to a user, and the store's own errors."""

from __future__ import annotations


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
