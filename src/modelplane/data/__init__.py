"""Data runtime library: erasure-coded object store, S3 access, hot cache, shards, lineage.

Importing this package registers the ``ec://`` fsspec protocol (cheap: by dotted name) and imports
nothing heavy; torch, redis, pyeclib and s3fs are imported only by the modules that need them.
"""

from __future__ import annotations


def _register_protocols() -> None:
    try:
        import fsspec
    except ImportError:  # fsspec is in the 'data' extra; modules that need it say so
        return
    fsspec.register_implementation("ec", "modelplane.data.ecfs.ErasureCodedFileSystem", clobber=True)


_register_protocols()
