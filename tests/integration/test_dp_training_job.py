"""DP-SGD and adversarial training as TrainingJob options, end to end through `modelplane apply`:
the example job runs to Succeeded with epsilon reported per epoch within its target, and a job
whose budget runs out stops early, cleanly, with a final checkpoint and an event saying so."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import REPO, Server, make_server
from tests.integration.test_platform import wait_state

pytestmark = pytest.mark.integration
EPSILON = re.compile(r"^epoch (\d+): epsilon ([0-9.]+) at delta")


def budget_events(job: dict[str, Any]) -> list[tuple[int, float]]:
    out = []
    for e in job["events"]:
        if e["reason"] == "PrivacyBudget":
            m = EPSILON.match(e["message"])
            assert m, e
            out.append((int(m.group(1)), float(m.group(2))))
    return out


@pytest.mark.timeout(400)
def test_dp_jobs_report_epsilon_per_epoch_and_stop_when_the_budget_is_spent(tmp_path: Path) -> None:
    example = yaml.safe_load((REPO / "examples" / "dp-training-job.yaml").read_text())
    calibrated = copy.deepcopy(example)  # the example as written, cut to 3 epochs for time
    calibrated["spec"]["template"]["command"][-1] = "3"
    calibrated["spec"]["privacy"]["differentialPrivacy"]["epochs"] = 3
    limited = copy.deepcopy(example)  # fixed noise, budget for 2 of the 6 planned epochs
    limited["metadata"]["name"] = "dp-digits-budget"
    limited["spec"]["privacy"] = {"differentialPrivacy": {"targetEpsilon": 2.5, "delta": 1e-5, "maxGradNorm": 1.0,
                                                          "noiseMultiplier": 1.0}}
    server: Server = make_server(tmp_path).start()
    try:
        for doc in (calibrated, limited):
            path = tmp_path / f"{doc['metadata']['name']}.yaml"
            path.write_text(yaml.safe_dump(doc))
            r = server.cli("apply", "-f", str(path))
            assert r.returncode == 0, r.stderr
        jobs = {}
        for name in ("dp-digits", "dp-digits-budget"):
            job = wait_state(server, name, {"Succeeded", "Failed"}, timeout=300)
            logs = server.cli("logs", name).stdout
            assert job["state"] == "Succeeded", f"{job}\n{logs[-3000:]}"
            jobs[name] = (job, logs)

        job, logs = jobs["dp-digits"]
        eps = budget_events(job)
        assert [e for e, _ in eps] == [1, 2, 3]
        assert all(0 < x <= 3.0 for _, x in eps) and [x for _, x in eps] == sorted(x for _, x in eps)
        assert not [e for e in job["events"] if e["reason"] == "PrivacyBudgetExhausted"]
        assert "robust_test_accuracy" in logs  # PGD ran in the loop

        job, logs = jobs["dp-digits-budget"]
        eps = budget_events(job)
        assert [e for e, _ in eps] == [1, 2] and eps[-1][1] <= 2.5
        (stop,) = [e for e in job["events"] if e["reason"] == "PrivacyBudgetExhausted"]
        assert "after epoch 2" in stop["message"]
        assert "stopped after epoch 2 of 6" in logs
        final = server.home / "checkpoints" / "dp-digits-budget" / f"step-{40:012d}" / "MANIFEST.json"
        assert final.is_file()  # 2 epochs x 20 steps, committed before the clean exit

        described = server.cli("describe", "job", "dp-digits-budget")
        assert described.returncode == 0 and "PrivacyBudgetExhausted" in described.stdout
        assert "epoch 2: epsilon" in described.stdout
    finally:
        server.stop()
