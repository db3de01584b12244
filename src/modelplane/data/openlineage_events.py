"""OpenLineage run events for pipelines, training runs and deployments, and their graph edges.

Events are built with ``openlineage-python`` (so any OpenLineage consumer, e.g. Marquez, accepts
them) and folded into our :class:`LineageStore`: every input dataset -> the job -> every output.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from typing import Any

from modelplane.data._deps import require
from modelplane.data.lineage import LineageStore

PRODUCER = "https://github.com/modelplane/modelplane"
JOB_KINDS = ("pipeline", "training", "deployment")
# What an output of each job kind is in our graph; a deployment is itself the end of the line.
OUTPUT_KIND = {"pipeline": "dataset", "training": "model"}


def run_event(*, job: str, namespace: str = "modelplane", inputs: Sequence[tuple[str, str]] = (),
              outputs: Sequence[tuple[str, str]] = (), state: str = "COMPLETE", run_id: str | None = None,
              event_time: datetime.datetime | None = None) -> Any:
    """An OpenLineage ``RunEvent``; datasets are (namespace, name) pairs, e.g. ("s3://bucket", "raw/a")."""
    ev = require("openlineage.client.event_v2", package="openlineage-python")
    when = event_time or datetime.datetime.now(datetime.UTC)
    return ev.RunEvent(
        eventType=getattr(ev.RunState, state),
        eventTime=when.isoformat(),
        producer=PRODUCER,
        run=ev.Run(runId=run_id or str(uuid.uuid4())),
        job=ev.Job(namespace=namespace, name=job),
        inputs=[ev.InputDataset(namespace=ns, name=name) for ns, name in inputs],
        outputs=[ev.OutputDataset(namespace=ns, name=name) for ns, name in outputs],
    )


def to_json(event: Any) -> str:
    serde = require("openlineage.client.serde", package="openlineage-python")
    return str(serde.Serde.to_json(event))


def record(store: LineageStore, event: Any, *, job_kind: str = "pipeline") -> int:
    """Add the event's job, datasets and edges to the graph; returns the job's node id."""
    if job_kind not in JOB_KINDS:
        from modelplane.data.errors import DataError

        raise DataError(f"unknown job kind {job_kind!r}.", field="job_kind", hint=f"Use one of {JOB_KINDS}.")
    job_id = store.upsert_node(job_kind, event.job.name, event.job.namespace, {"run": event.run.runId})
    for ds in event.inputs or []:
        kind = "model" if job_kind == "deployment" else "dataset"
        store.add_edge(store.upsert_node(kind, ds.name, ds.namespace), job_id)
    for ds in event.outputs or [] if job_kind in OUTPUT_KIND else []:
        store.add_edge(job_id, store.upsert_node(OUTPUT_KIND[job_kind], ds.name, ds.namespace))
    return job_id
