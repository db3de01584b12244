"""The extractor the dashboard test relies on finds metric names and nothing else."""

from __future__ import annotations

import pytest

from tests.obs.promql import metric_names


@pytest.mark.parametrize(("expr", "names"), [
    ("modelplane_nodes", {"modelplane_nodes"}),
    ('sum by (state) (modelplane_jobs{state="Pending", queue=~"a.*"})', {"modelplane_jobs"}),
    ("histogram_quantile(0.95, sum by (le, route) (rate(x_bucket[$__rate_interval])))", {"x_bucket"}),
    ("sum by (model) (a{status=\"allocated\"}) / sum by (model) (b) * 60", {"a", "b"}),
    ("rate(c_total[5m] offset 1h) > bool 3e2", {"c_total"}),
    ("sum(a) without (instance) + on(job) group_left(team) b_info", {"a", "b_info"}),
])
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
