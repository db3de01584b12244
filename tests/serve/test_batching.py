from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.serve.batching import BatchingConfig, DynamicBatcher
from modelplane.serve.errors import NoReplicaAvailable, Overloaded
from modelplane.serve.runtime import OnnxModel


async def _run_concurrently(model: OnnxModel, cfg: BatchingConfig, requests: list[np.ndarray]):  # type: ignore[no-untyped-def]
    batches: list[int] = []
    batcher = DynamicBatcher(model.run, cfg, on_batch=lambda n, rows, q, e: batches.append(rows))
    batcher.start()
    outs = await asyncio.gather(*(batcher.infer(r) for r in requests))
    await batcher.drain()
    return outs, batches


def test_batched_answers_equal_single_answers(mlp_onnx) -> None:
    model = OnnxModel(mlp_onnx[1])
    rng = np.random.default_rng(0)
    requests = [rng.standard_normal((1 + i % 3, 8)).astype(np.float32) for i in range(40)]
    outs, batches = asyncio.run(_run_concurrently(model, BatchingConfig(16, 0.05, 256), requests))
    for req, out in zip(requests, outs, strict=True):
        np.testing.assert_allclose(out, model.run(req), rtol=1e-5, atol=1e-6)
    assert max(batches) > 1, "concurrent requests should have been batched together"
    assert max(batches) <= 16
    assert sum(batches) == sum(r.shape[0] for r in requests)


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 7), min_size=1, max_size=25), max_batch=st.integers(1, 12))
def test_every_request_gets_its_own_rows_back(mlp_onnx, sizes: list[int], max_batch: int) -> None:
    model = OnnxModel(mlp_onnx[1])
    # Each row is tagged so a mix-up between requests would show in the output.
    requests = [np.full((n, 8), float(i), dtype=np.float32) for i, n in enumerate(sizes)]
    outs, batches = asyncio.run(_run_concurrently(model, BatchingConfig(max_batch, 0.01, 1024), requests))
    for req, out in zip(requests, outs, strict=True):
        assert out.shape == (req.shape[0], 4)
        np.testing.assert_allclose(out, model.run(req), rtol=1e-5, atol=1e-6)
    # A batch exceeds max_batch only when one request alone is bigger.
    assert all(b <= max(max_batch, max(sizes)) for b in batches)


def test_full_queue_answers_overloaded_not_unbounded(mlp_onnx) -> None:
    model = OnnxModel(mlp_onnx[1])

    async def go() -> tuple[int, int, float]:
        batcher = DynamicBatcher(model.run, BatchingConfig(4, 0.2, 8))
        batcher.start()
        x = np.zeros((4, 8), np.float32)
        first = [asyncio.ensure_future(batcher.infer(x)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as exc:
            await batcher.infer(x)
        done = await asyncio.gather(*first)
        await batcher.drain()
        with pytest.raises(NoReplicaAvailable):
            await batcher.infer(x)
        return len(done), done[0].shape[0], exc.value.retry_after_s

    n, rows, retry = asyncio.run(go())
    assert (n, rows) == (2, 4)
    assert retry >= 1.0


def test_model_failure_reaches_every_request_in_the_batch() -> None:
    def broken(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("kernel crashed")

    async def go() -> list[BaseException | np.ndarray]:
        batcher = DynamicBatcher(broken, BatchingConfig(8, 0.01, 64))
        batcher.start()
        res = await asyncio.gather(*(batcher.infer(np.zeros((1, 2))) for _ in range(3)), return_exceptions=True)
        await batcher.drain()
        return res

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(go()))


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        BatchingConfig(0)
    with pytest.raises(ValueError):
        BatchingConfig(8, 0.0, 4)
