"""Remotes: a repository's objects and refs in an object store (S3, GCS, Azure Blob, or a
plain directory), reached through one small interface, :class:`~.blobs.BlobStore`.

Nothing here is imported by ``import coralfs``; a cloud backend imports its client library
only when a remote of its scheme is opened, and a missing extra is a one-line error naming
``pip install 'coralfs[cloud]'``.
"""
