"""The pieces of horizontal FL that need no network: the split, the model, the screening, the CLIs' bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.privacy.errors import PrivacyError
from modelplane.privacy.horizontal import model
from modelplane.privacy.horizontal.data import (
    digits_split,
    dirichlet_partition,
    read_shard,
    write_digits_shards,
)
from modelplane.privacy.horizontal.register import check_onnx, register_from_env, to_onnx
from modelplane.privacy.horizontal.screening import screen_masked_vector, screen_parameters
from modelplane.privacy.horizontal.server import resolve_rounds
from modelplane.privacy.horizontal.serverapp import Settings
from modelplane.privacy.horizontal.supernode import Pacer


@settings(max_examples=40, deadline=None)
@given(parties=st.integers(1, 8), alpha=st.floats(0.3, 100.0), seed=st.integers(0, 10_000))
def test_dirichlet_partition_is_a_partition(parties: int, alpha: float, seed: int) -> None:
    labels = np.repeat(np.arange(10), 40)
    parts = dirichlet_partition(labels, parties, alpha, seed, min_size=5)
    assert len(parts) == parties
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(labels)))  # every row to exactly one party
    assert all(len(p) >= 5 for p in parts)
    again = dirichlet_partition(labels, parties, alpha, seed, min_size=5)
    assert all(
        np.array_equal(a, b) for a, b in zip(parts, again, strict=True)
    )  # each party can rebuild its own


def test_small_alpha_skews_labels() -> None:
    _, y, _, _ = digits_split()
    parts = dirichlet_partition(y, 5, 0.5, 0)
    # Under label skew some party misses most of some class; an IID split would give each ~20%.
    shares = np.array([[np.mean(y[p] == c) for c in range(10)] for p in parts])
    assert shares.min() < 0.03 and shares.max() > 0.2


def test_bad_split_requests_are_refused() -> None:
    with pytest.raises(PrivacyError, match="alpha"):
        dirichlet_partition(np.zeros(10, dtype=int), 2, 0.0)
    with pytest.raises(PrivacyError, match="cannot give"):
        dirichlet_partition(np.zeros(10, dtype=int), 5, 1.0, min_size=5)


def test_shards_round_trip_and_bad_shards_are_named(tmp_path: Path) -> None:
    paths = write_digits_shards(tmp_path, 5)
    x, y = read_shard(paths["party-0"])
    assert x.shape[1] == 64 and len(x) == len(y)
    total = sum(len(read_shard(paths[f"party-{i}"])[1]) for i in range(5))
    assert total + len(read_shard(paths["test"])[1]) == 1797
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 5)), y=np.zeros(3))
    with pytest.raises(PrivacyError, match=r"bad\.npz"):
        read_shard(bad)
    with pytest.raises(PrivacyError, match="does not exist"):
        read_shard(tmp_path / "missing.npz")


def test_local_training_learns_and_fedprox_stays_closer_to_the_global_model() -> None:
    x, y, xt, yt = digits_split()
    params = model.train_local(model.zeros(), x, y, model.LocalConfig(epochs=5))
    assert model.evaluate(params, xt, yt)[1] > 0.9
    start = model.train_local(model.zeros(), x[:50], y[:50], model.LocalConfig(epochs=1))
    free = model.train_local(start, x[y < 3], y[y < 3], model.LocalConfig(epochs=5))
    prox = model.train_local(start, x[y < 3], y[y < 3], model.LocalConfig(epochs=5, proximal_mu=1.0))
    assert np.linalg.norm(prox[0] - start[0]) < np.linalg.norm(free[0] - start[0])


def test_screening_names_what_is_wrong() -> None:
    ref = model.zeros()
    assert screen_parameters([p + 0.01 for p in ref], ref, 50.0) is None
    assert "shape" in str(screen_parameters([ref[0][:, :3], ref[1]], ref, 50.0))
    assert "expected 2 arrays" in str(screen_parameters([ref[0]], ref, 50.0))
    nan = [ref[0].copy(), ref[1]]
    nan[0][1, 1] = np.nan
    assert "NaN" in str(screen_parameters(nan, ref, 50.0))
    assert "exceeds the bound" in str(screen_parameters([p + 10 for p in ref], ref, 50.0))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_masked_vectors_inside_the_modulus_pass(value: int) -> None:
    shapes = model.shapes()
    arrays = [np.full((1,), value, dtype=np.int64)] + [np.full(s, value, dtype=np.int64) for s in shapes]
    assert screen_masked_vector(arrays, shapes, 2**32) is None


def test_malformed_masked_vectors_are_refused() -> None:
    shapes = model.shapes()
    good = [np.zeros((1,), np.int64)] + [np.zeros(s, np.int64) for s in shapes]
    assert "has 2 arrays" in str(screen_masked_vector(good[:-1], shapes, 2**32))
    assert "outside" in str(screen_masked_vector([good[0], good[1] + 2**32, good[2]], shapes, 2**32))
    assert "expected integers" in str(
        screen_masked_vector([good[0], good[1].astype(float), good[2]], shapes, 2**32)
    )


def test_run_config_names_map_to_settings() -> None:
    s = Settings.from_run_config(
        {"output-dir": "/o", "test-data": "/t", "rounds": 4, "secagg": False, "reconstruction-threshold": 0.8}
    )
    assert (s.rounds, s.secagg, s.reconstruction_threshold, s.strategy) == (4, False, 0.8, "fedavg")


def _cli(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"modelplane.privacy.horizontal.{module}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_clis_refuse_bad_input_without_a_traceback(tmp_path: Path) -> None:
    r = _cli("client", "--party", "a", "--data", str(tmp_path / "none.npz"), "--superlink", "127.0.0.1:1")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = _cli("server", "--test-data", str(tmp_path / "none.npz"), "--output-dir", str(tmp_path / "o"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = _cli("server", "--listen", "nonsense", "--test-data", "x", "--output-dir", str(tmp_path / "o"))
    assert r.returncode == 2 and "HOST:PORT" in r.stderr


def test_server_refuses_rounds_that_contradict_the_job_spec(tmp_path: Path) -> None:
    env = dict(os.environ, MODELPLANE_FL_ROUNDS="3")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelplane.privacy.horizontal.server",
            "--rounds",
            "5",
            "--test-data",
            "x",
            "--output-dir",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 2 and "spec.rounds 3" in r.stderr and "Traceback" not in r.stderr


@given(flag=st.one_of(st.none(), st.integers(1, 500)), spec=st.one_of(st.none(), st.integers(1, 500)))
def test_rounds_come_from_the_spec_or_the_flag_and_never_silently_from_one_of_two(
    flag: int | None, spec: int | None
) -> None:
    env = None if spec is None else str(spec)
    if flag is not None and spec is not None and flag != spec:
        with pytest.raises(PrivacyError, match="contradicts"):
            resolve_rounds(flag, env)
    else:
        assert resolve_rounds(flag, env) == (flag if flag is not None else spec if spec is not None else 30)


def test_bad_rounds_are_named() -> None:
    with pytest.raises(PrivacyError, match="whole number"):
        resolve_rounds(None, "three")
    with pytest.raises(PrivacyError, match=">= 1"):
        resolve_rounds(0, None)


@settings(max_examples=50, deadline=None)
@given(
    fast=st.floats(0.001, 1.0),
    ratio=st.floats(1.0, 100.0),
    growth=st.floats(1.0, 3.0),
    idles=st.integers(0, 60),
)
def test_pacer_waits_grow_from_fast_to_slow_and_reset_on_activity(
    fast: float, ratio: float, growth: float, idles: int
) -> None:
    pacer = Pacer(fast=fast, slow=fast * ratio, growth=growth)
    waits = [pacer.idle() for _ in range(idles)]
    assert all(fast <= w <= fast * ratio for w in waits)
    assert waits == sorted(waits)  # never shorter while nothing happens
    pacer.active()
    assert pacer.idle() == fast


def test_pacer_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="fast <= slow"):
        Pacer(fast=2.0, slow=1.0)


def test_supernode_sets_its_isolation_itself() -> None:
    r = _cli("supernode", "--isolation", "subprocess")
    assert r.returncode == 2 and "--isolation" in r.stderr and "Traceback" not in r.stderr


def test_final_model_exports_to_onnx_that_computes_the_same_function() -> None:
    x, y, xt, _ = digits_split()
    params = model.train_local(model.zeros(), x, y, model.LocalConfig(epochs=2))
    onnx_bytes = to_onnx(params)
    assert check_onnx(onnx_bytes, params, xt) < 1e-5
    with pytest.raises(PrivacyError, match="expected W"):
        to_onnx([params[0][:, :5], params[1]])
    other = [params[0].copy(), params[1]]
    other[0][:, 0] += 1.0  # one class's weights only (a shift of every logit alike would not change softmax)
    with pytest.raises(PrivacyError, match="differs from the trained one"):
        check_onnx(onnx_bytes, other, xt)


def test_registered_model_has_the_job_as_its_training_run(tmp_path: Path) -> None:
    from modelplane.data.lineage import open_platform_lineage
    from modelplane.serve.registry import ModelRegistry

    out = tmp_path / "out"
    out.mkdir()
    x, y, xt, _ = digits_split()
    params = model.train_local(model.zeros(), x, y, model.LocalConfig(epochs=1))
    np.savez(out / "model.npz", W=params[0], b=params[1])
    (out / "summary.json").write_text(json.dumps({"accuracy": 0.9, "rounds": 4, "secagg": True}))
    lineage_url = f"sqlite:///{tmp_path / 'lineage.db'}"
    env = {
        "MODELPLANE_MODEL_REGISTRY_URL": str(tmp_path / "models"),
        "MODELPLANE_LINEAGE_URL": lineage_url,
        "MODELPLANE_JOB_NAME": "digits-fedavg",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        first = register_from_env(out, None, probe=xt)
        second = register_from_env(out, None, probe=xt)
        mp.delenv("MODELPLANE_MODEL_REGISTRY_URL")
        assert register_from_env(out, None) is None  # not run by the platform: nothing to register in
    assert first is not None and second is not None
    assert (first["ref"], second["ref"]) == ("digits-fedavg:1", "digits-fedavg:2")
    assert json.loads((out / "registered.json").read_text())["ref"] == "digits-fedavg:2"
    mv = ModelRegistry(str(tmp_path / "models")).get("digits-fedavg", 1)
    assert mv.lineage.training_run == "digits-fedavg"
    assert (mv.metadata["rounds"], mv.metadata["secagg"]) == (4, True)
    store = open_platform_lineage(lineage_url)
    up = store.upstream(store.locate("model", "digits-fedavg:1", None).id, depth=1)
    assert [(h.node.kind, h.node.name) for h in up] == [("training", "digits-fedavg")]


def test_registry_versions_are_claimed_once_by_concurrent_writers(tmp_path: Path) -> None:
    """The API and a federation's server may register one model at once: no number is handed out twice."""
    from concurrent.futures import ThreadPoolExecutor

    from modelplane.serve.registry import ModelRegistry

    reg = ModelRegistry(str(tmp_path / "models"))
    onnx_bytes = to_onnx(model.zeros())
    with ThreadPoolExecutor(8) as pool:
        refs = list(pool.map(lambda _: reg.register("m", onnx_bytes, now=0.0).ref, range(16)))
    assert sorted(refs, key=lambda r: int(r.split(":")[1])) == [f"m:{i}" for i in range(1, 17)]
    assert [v.version for v in reg.versions("m")] == list(range(1, 17))
