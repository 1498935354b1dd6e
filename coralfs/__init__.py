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


def _log_metric(metric: str, value: float, step: int | None = None, *, repo: str | None = None,
                experiment: str | None = None, mount: str | None = None):
    """Record a metric for the experiment HEAD is on (or ``experiment``) of the repository
    at ``repo`` (default: $CORALFS_REPO or the current directory), like
    ``coralfs experiment log``; with ``mount``, through that writable mount of an
    experiment's branch (a trainer saving into the mount logs there too)."""
    import os

    if mount is not None:
        from .fs.writable.control import request
        from .staging import StagingError
        r = request(mount, {"op": "log-metric", "metric": metric, "value": value, "step": step})
        if not r.get("ok"):
            raise StagingError(r.get("error", "the mount refused the metric"))
        return r

    from .workflow.experiments import log_metric
    path = repo or os.environ.get("CORALFS_REPO") or _repository.Repository.discover(".")
    r = _repository.Repository.open(path)
    try:
        return log_metric(r, metric, value, step, experiment=experiment)
    finally:
        r.close()


def __getattr__(name: str):
    # Lazy, so that importing coralfs.objects alone stays free of the format layer.
    if name == "Repository":
        return _repository.Repository
    if name in ("commit_mount", "mount_status"):
        from . import api
        return getattr(api, name)
    if name == "log_metric":
        return _log_metric
    raise AttributeError(name)
