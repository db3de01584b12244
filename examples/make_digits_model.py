"""Train the small model that ``examples/deployment.yaml`` serves and export it to ONNX.

An MLP (64 -> 32 -> 10) on scikit-learn's 8x8 digits, so the serving example answers real
predictions from a file of a few KB that the repository can hold. Rerun to regenerate it::

    .venv/bin/python examples/make_digits_model.py   # writes examples/models/digits-mlp.onnx

Inputs are the 64 pixel values scaled to [0, 1] (``load_digits().data / 16``); the output is the
10 class logits.
"""

from __future__ import annotations

from pathlib import Path

OUT = Path(__file__).parent / "models" / "digits-mlp.onnx"


def main() -> None:
    import torch
    from sklearn.datasets import load_digits

    from modelplane.serve.export import export_torch

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    report = export_torch(model, x[:4])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(report.onnx_bytes)
    print(f"wrote {OUT} ({len(report.onnx_bytes)} bytes), train accuracy {acc:.3f}, "
          f"max |torch - onnx| {report.max_abs_diff:.2g}")


if __name__ == "__main__":
    main()
