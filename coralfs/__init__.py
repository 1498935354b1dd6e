"""coralfs: version control for neural-network weights, used through the file system."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that importing coralfs.objects alone stays free of the format layer.
    if name in ("Repository", "commit_mount", "mount_status"):
        from . import api
        return getattr(api, name)
    raise AttributeError(name)
