"""Apache Beam, imported once with an install hint and without its optional-cloud import noise."""

from __future__ import annotations

import logging
from typing import Any

from modelplane.data.errors import MissingDependency

_root = logging.getLogger()
_level = _root.level
_root.setLevel(logging.ERROR)  # "Failed to import GCSFileSystem" etc.: clouds we do not use
try:
    import apache_beam as _beam
    import apache_beam.metrics
    import apache_beam.options.pipeline_options
    import apache_beam.pvalue  # submodules used as beam.pvalue, beam.metrics, beam.options
except ImportError as exc:
    raise MissingDependency(f"apache_beam is required to run pipelines but could not be imported ({exc}).",
                            hint="pip install 'apache-beam' (or pip install 'modelplane[pipeline]').") from exc
finally:
    _root.setLevel(_level)

# Beam's annotations are partial (untyped calls everywhere under strict mypy): use it as Any.
beam: Any = _beam

__all__ = ["beam"]
