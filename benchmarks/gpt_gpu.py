"""A small GPT trained for a few hundred steps on one GPU, with the planner's prediction for the
same shape and configuration printed beside the measured tokens/s, MFU and peak memory.

Why: the planner's calibration was fitted to SC'21 Table 1 (large models on A100s); this checks how
far its first-principles arithmetic carries to a small model on the card at hand, and says so in
numbers rather than assuming it. The model is a plain pre-LayerNorm decoder (learned positions, tied
embeddings, 4h MLP, causal scaled-dot-product attention), so its parameter count is exactly the
planner's 12lh^2 + 13lh + (V+s)h. Data are random tokens drawn on the device: the figure is the
training step's speed, not a data loader's. Mixed precision (bf16 autocast, fp32 master weights,
fused AdamW), optionally ``torch.compile``.

MFU counts model FLOPs without recomputation, 72 B s l h^2 (1 + s/(6h) + V/(16 l h)) per
iteration (SC'21, the planner's own formula), over the device's dense bf16 peak from the
planner's device table.

    PYTHONPATH=src python benchmarks/gpt_gpu.py [--layers 12 --hidden 768 --heads 12 --seq 1024]
        [--micro-batch 16 --steps 300 --warmup 30] [--no-compile]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def planner_device(name: str) -> str:
    """Map torch's device name to the planner's device table."""
    lowered = name.lower()
    if "h200" in lowered:
        return "h200"
    if "h100" in lowered:
        return "h100-sxm"
    if "a100" in lowered:
        return "a100-80gb" if "80" in lowered else "a100-40gb"
    raise SystemExit(f"no planner device for {name!r}: add it to train/planner/shapes.py DEVICES")


def build_model(layers: int, hidden: int, heads: int, vocab: int, seq: int):  # type: ignore[no-untyped-def]
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(hidden)
            self.qkv = nn.Linear(hidden, 3 * hidden)
            self.proj = nn.Linear(hidden, hidden)
            self.ln2 = nn.LayerNorm(hidden)
            self.fc = nn.Linear(hidden, 4 * hidden)
            self.out = nn.Linear(4 * hidden, hidden)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, s, h = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(h, dim=2)
            q, k, v = (t.view(b, s, heads, h // heads).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, s, h))
            return x + self.out(F.gelu(self.fc(self.ln2(x))))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding(vocab, hidden)
            self.pos = nn.Embedding(seq, hidden)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f = nn.LayerNorm(hidden)
            for module in self.modules():  # GPT-2's initialisation: logits start near uniform
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            pos = torch.arange(idx.shape[1], device=idx.device)
            x = self.tok(idx) + self.pos(pos)
            for block in self.blocks:
                x = block(x)
            return self.ln_f(x) @ self.tok.weight.t()  # tied output layer

    return GPT()


def run(args: argparse.Namespace) -> dict[str, object]:
    import torch
    from torch.nn import functional as F

    from modelplane.train.planner import Cluster, ParallelConfig, TransformerShape, device, predict

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures a GPU (run it on one)")
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    shape = TransformerShape(args.layers, args.hidden, args.heads, args.vocab, args.seq)
    cfg = ParallelConfig(
        data=1,
        tensor=1,
        pipeline=1,
        micro_batch=args.micro_batch,
        global_batch=args.micro_batch,
        zero_stage=0,
        recompute="none",
    )
    pdev = device(planner_device(name))
    pred = predict(shape, cfg, Cluster(pdev, gpus=1, gpus_per_node=1), check_memory=False)

    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    model = build_model(args.layers, args.hidden, args.heads, args.vocab, args.seq).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    step_fn = model
    compiled = False
    if args.compile:
        try:
            step_fn = torch.compile(model)
            compiled = True
        except Exception as exc:  # fall back to eager and say so
            log(f"torch.compile unavailable ({exc}); running eager")

    def step() -> torch.Tensor:
        idx = torch.randint(0, args.vocab, (args.micro_batch, args.seq + 1), device=dev)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = step_fn(idx[:, :-1])
            loss = F.cross_entropy(logits.float().view(-1, args.vocab), idx[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        loss = step()
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(args.steps):
        loss = step()
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000
    final_loss = float(loss)
    if not math.isfinite(final_loss):
        raise SystemExit(f"training diverged (loss {final_loss})")
    tokens = args.steps * args.micro_batch * args.seq
    tok_s = tokens / seconds
    model_flops_per_token = shape.model_flops_per_token()
    mfu = tok_s * model_flops_per_token / pdev.peak_flops
    peak_mem = torch.cuda.max_memory_allocated()
    return {
        "device": name,
        "planner_device": pdev.name,
        "peak_bf16_tflops": pdev.peak_flops / 1e12,
        "model": {
            "layers": args.layers,
            "hidden": args.hidden,
            "heads": args.heads,
            "seq": args.seq,
            "vocab": args.vocab,
            "params_m": round(n_params / 1e6, 1),
            "planner_params_m": round(shape.parameters / 1e6, 1),
        },
        "micro_batch": args.micro_batch,
        "compiled": compiled,
        "warmup_steps": args.warmup,
        "warmup_s": round(warm_s, 1),
        "steps": args.steps,
        "final_loss": round(final_loss, 3),
        "measured": {
            "tokens_per_s": round(tok_s),
            "step_ms": round(seconds / args.steps * 1e3, 2),
            "mfu": round(mfu, 4),
            "model_tflops_per_s": round(tok_s * model_flops_per_token / 1e12, 1),
            "peak_memory_gb": round(peak_mem / 1e9, 2),
        },
        "planner": {
            "tokens_per_s": round(pred.tokens_per_s),
            "step_ms": round(pred.time.total * 1e3, 2),
            "mfu": round(pred.mfu, 4),
            "memory_gb": round(pred.memory.total / 1e9, 2),
            "memory_note": "activations per Korthikanti et al. without recomputation store the s x s "
            "attention scores; flash attention (SDPA) does not, so measured memory is lower",
        },
        "ratio_measured_over_predicted_tokens_per_s": round(tok_s / pred.tokens_per_s, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    print(json.dumps(run(ap.parse_args()), indent=2))


if __name__ == "__main__":
    main()
