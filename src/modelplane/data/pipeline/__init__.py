"""Data pipelines on Apache Beam: sources -> validate -> transforms -> sinks, dead letter, lineage.

``python -m modelplane.data.pipeline run SPEC.yaml`` is what a ``Pipeline`` job runs. Importing this
package is cheap; Beam is imported when a pipeline is compiled.
"""

from __future__ import annotations

from modelplane.data.pipeline.load import SPEC_ENV, from_env, from_file, from_mapping
from modelplane.data.pipeline.spec import PipelineDef

__all__ = ["SPEC_ENV", "PipelineDef", "from_env", "from_file", "from_mapping"]
