"""coralfs: version control for neural-network weights, used through the file system.

This module is the composition root: it tells the one Repository class where its
format-aware operations live (coralfs.api.Operations), without the object layer ever
importing the layers above it. The upper layers are imported on first use only, so
``import coralfs.objects`` stays free of them.
"""

from .objects import repository as _repository

__version__ = "0.1.0"


def _format_ops() -> _repository.FormatOps:
    from .api import OPERATIONS
    return OPERATIONS


_repository.use_format_ops(_format_ops)


def _store_of(repo: _repository.Repository, store):
    """A partial clone reads what it lacks from its remote (coralfs.remote.partial); any
    other repository keeps its own store, without importing the remote layer."""
    if "remote" not in repo.config.data:
        return store
    from .remote.partial import FallbackStore, partial_remote
    name = partial_remote(repo.config)
    return store if name is None else FallbackStore(store, repo.config, name)


_repository.use_store_wrapper(_store_of)


def __getattr__(name: str):
    # Lazy, so that importing coralfs.objects alone stays free of the format layer.
    if name == "Repository":
        return _repository.Repository
    if name in ("commit_mount", "mount_status"):
        from . import api
        return getattr(api, name)
    raise AttributeError(name)
