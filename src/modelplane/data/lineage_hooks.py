"""Model-registry hook: each new model version enters the lineage graph with where it came from.

``serve.registry.ModelRegistry(lineage_hooks=[ModelLineageHook(store)])`` calls the hook with every
registered ``ModelVersion``. Its ``Lineage`` names the training run, the checkpoint the model was
exported from and the dataset it was trained on; the hook records::

    dataset -> training run -> checkpoint -> model version
                           \\______________/^

so an impact query from a raw source reaches the model through the run (and on to deployments
serving it). A model node is one *version* (``name:version``): two versions of one model are often
trained on different data. Dataset and checkpoint URIs are split as OpenLineage names datasets
(``s3://bucket/a/b`` -> namespace ``s3://bucket``, name ``a/b``), so they meet the nodes that
pipelines' OpenLineage events created for the same objects.
"""

from __future__ import annotations

from typing import Any

from modelplane.data.lineage import LineageStore


def split_uri(uri: str, default_namespace: str) -> tuple[str, str]:
    """(namespace, name) of a dataset URI under OpenLineage's naming: scheme://authority, then the path."""
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        authority, _, path = rest.partition("/")
        if scheme == "file" or not authority:
            return "file", rest if rest.startswith("/") else "/" + path
        return f"{scheme}://{authority}", path or "/"
    if uri.startswith("/"):
        return "file", uri
    return default_namespace, uri


DEFAULT_NAMESPACE = "modelplane"  # where jobs, models and deployments live, as in our OpenLineage events


class ModelLineageHook:
    """Records model versions, with their training run, checkpoint and dataset, in a lineage store."""

    def __init__(self, store: LineageStore, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.store = store
        self.namespace = namespace  # where jobs (training runs) and models live, as in our OpenLineage events

    def __call__(self, mv: Any) -> int:
        """``mv`` is a ``serve.registry.ModelVersion``; returns the model version's node id."""
        s, lin = self.store, mv.lineage
        model = s.upsert_node("model", mv.ref, self.namespace,
                              {"model": mv.name, "version": mv.version, "uri": mv.uri})
        run = s.upsert_node("training", lin.training_run, self.namespace) if lin.training_run else None
        ckpt = None
        if lin.checkpoint:
            ns, name = split_uri(lin.checkpoint, self.namespace)
            ckpt = s.upsert_node("checkpoint", name, ns)
            s.add_edge(ckpt, model, "exported_to")
        if run is not None:
            s.add_edge(run, model, "produced")
            if ckpt is not None:
                s.add_edge(run, ckpt, "wrote")
        if lin.dataset:
            ns, name = split_uri(lin.dataset, self.namespace)
            ds = s.upsert_node("dataset", name, ns)
            s.add_edge(ds, run if run is not None else model, "read_by")
        return model
