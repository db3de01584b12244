"""Record a pipeline run's lineage (sources -> run -> sink datasets) as OpenLineage events.

The lineage database is the platform's: the control plane passes its URL to a Pipeline job in
``MODELPLANE_LINEAGE_URL``; a run without one fails before reading anything rather than writing a
private SQLite file nobody queries (set ``lineage.enabled: false`` to opt out explicitly).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from modelplane.data.errors import DataError
from modelplane.data.lineage import LINEAGE_URL_ENV
from modelplane.data.pipeline.spec import LineageSpec

__all__ = ["LINEAGE_URL_ENV", "record_run", "resolve_url"]


def resolve_url(spec: LineageSpec, override: str | None = None) -> str | None:
    """Explicit option > the spec's ``lineage.url`` > ``$MODELPLANE_LINEAGE_URL``; None when disabled."""
    if not spec.enabled:
        return None
    url = override or spec.url or os.environ.get(LINEAGE_URL_ENV)
    if not url:
        raise DataError("no lineage database: the run's lineage would be lost.", field="lineage.url",
                        hint=f"Set {LINEAGE_URL_ENV} (the control plane sets it for Pipeline jobs), pass "
                             "--lineage-url, or set lineage.enabled: false in the pipeline.")
    return url


def record_run(url: str, *, job: str, namespace: str, run_id: str, inputs: Sequence[tuple[str, str]],
               outputs: Sequence[tuple[str, str]]) -> int:
    """Emit the COMPLETE event into the store; returns the pipeline's node id."""
    from modelplane.data.lineage import LineageStore
    from modelplane.data.openlineage_events import record, run_event

    store = LineageStore(url)
    try:
        store.create_schema()
        event = run_event(job=job, namespace=namespace, inputs=inputs, outputs=outputs, run_id=run_id)
        return record(store, event, job_kind="pipeline")
    finally:
        store.engine.dispose()
