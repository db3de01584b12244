"""Accumulation counters served to Prometheus from a training process."""

import socket

import httpx
from prometheus_client.parser import text_string_to_metric_families

from modelplane.train.accumulation import AccumulationStats
from modelplane.train.metrics import AccumulationCollector, serve_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_counters_are_scraped_as_they_change() -> None:
    stats = AccumulationStats()
    collector = AccumulationCollector(rank=1)
    collector.watch(stats)
    port = _free_port()
    server = serve_metrics(collector, port, addr="127.0.0.1")
    try:
        stats.steps, stats.ok, stats.dropped, stats.retried = 4, 14, 2, 1
        stats.reasons["nan_loss"] = 2

        def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            return {(s.name, tuple(sorted(s.labels.items()))): s.value
                    for fam in text_string_to_metric_families(text) for s in fam.samples}

        got = scrape()
        assert got[("modelplane_train_steps_total", (("rank", "1"),))] == 4
        assert got[("modelplane_train_microbatches_total", (("outcome", "dropped"), ("rank", "1")))] == 2
        assert got[("modelplane_train_microbatch_failures_total", (("rank", "1"), ("reason", "nan_loss")))] == 2
        stats.steps += 1
        assert scrape()[("modelplane_train_steps_total", (("rank", "1"),))] == 5
    finally:
        server.shutdown()
