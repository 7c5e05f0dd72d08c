"""Issue #14: does torchao's PT2E int8 flow match the lab's int8 path (lib.quant.to_int8,
torch.ao FX graph mode) in accuracy and CPU speed, with torch 2.14?

    python -m pip install --no-deps --target /tmp/torchao_t torchao   # a throwaway copy
    .venv/bin/python scripts/int8_pt2e_check.py --torchao /tmp/torchao_t

Trains a CIFAR-style ResNet-8 (residual adds: the case the eager flow could not run) for a few
hundred SGD steps on Fashion-MNIST, then converts the same float model both ways, calibrated on
the same 512 training images: (a) `to_int8` (prepare_fx / convert_fx, x86 qconfig); (b) PT2E:
`torch.export` → torchao `prepare_pt2e` with `X86InductorQuantizer` → calibrate →
`convert_pt2e`, run as exported (quantize / dequantize ops around float kernels) and compiled
with inductor (which lowers them to int8 kernels). Writes results/quantization/pt2e_check.md:
test accuracy on 2,000 test images, median latency of a batch of 256 (lib.metrics.latency_ms),
saved size, conversion and compile wall time.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--torchao", default=None, help="a folder holding torchao (pip --target)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", default=str(ROOT / "results" / "quantization" / "pt2e_check.md"))
    a = p.parse_args()
    if a.torchao:
        sys.path.insert(0, a.torchao)
    warnings.simplefilter("ignore")
    from lib.data import raw_fashion_mnist
    from lib.models import build
    from lib.quant import latency_ms, model_size_bytes, to_int8

    started = time.perf_counter()
    torch.manual_seed(0)
    xtr, ytr, xte, yte = raw_fashion_mnist()[:4]

    def images(x):
        return (torch.tensor(np.asarray(x), dtype=torch.float32).reshape(-1, 1, 28, 28) / 255
                - 0.286) / 0.353

    xtr, xte = images(xtr), images(xte)[:2000]
    ytr, yte = torch.tensor(np.asarray(ytr)).long(), torch.tensor(np.asarray(yte)).long()[:2000]
    m = build("resnet8", (1, 28, 28), 10)
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    m.train()
    for _ in range(a.steps):
        idx = torch.randint(0, len(xtr), (64,))
        loss = nn.functional.cross_entropy(m(xtr[idx]), ytr[idx])
        opt.zero_grad(), loss.backward(), opt.step()
    m.eval()
    calib, batch = xtr[:512], xte[:256]
    rows = []

    @torch.no_grad()
    def measure(label: str, model, convert_s: float | str = "", note: str = "") -> None:
        acc = (model(xte).argmax(1) == yte).float().mean().item()
        rows.append(f"| {label} | {100 * acc:.2f} | {latency_ms(model, batch):.1f} | "
                    f"{model_size_bytes(model):,} | {convert_s if isinstance(convert_s, str) else f'{convert_s:.1f}'} | {note} |")
        print(rows[-1], flush=True)

    measure("float32", m)
    t = time.perf_counter()
    q = to_int8(m, calib)
    measure("int8, lib.quant.to_int8 (torch.ao FX)", q, time.perf_counter() - t)
    error, versions = "", f"torch {torch.__version__}"
    try:
        import torchao
        from torchao.quantization.pt2e import allow_exported_model_train_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

        versions += f", torchao {torchao.__version__}"
        t = time.perf_counter()
        batch_dim = torch.export.Dim("batch", min=2)
        exported = torch.export.export(copy.deepcopy(m), (calib[:256],),
                                       dynamic_shapes=({0: batch_dim},)).module()
        quantizer = xiq.X86InductorQuantizer().set_global(
            xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, quantizer)
        with torch.no_grad():
            for i in range(0, len(calib), 256):
                prepared(calib[i:i + 256])
        pt2e = convert_pt2e(prepared)
        allow_exported_model_train_eval(pt2e)  # latency_ms calls .eval()
        measure("int8, torchao PT2E, as exported", pt2e, time.perf_counter() - t,
                "q/dq ops around float kernels")
        t = time.perf_counter()
        compiled = torch.compile(pt2e)
        with torch.no_grad():
            compiled(batch)
        measure("int8, torchao PT2E + torch.compile (inductor)", compiled,
                f"+{time.perf_counter() - t:.0f} compile", "int8 kernels after lowering")
    except Exception as e:  # noqa: BLE001 - the failure is the result
        error = f"PT2E failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
        print(error)
    from experiments.common import machine

    text = "\n".join([
        "# int8: torch.ao FX (the lab's path) vs torchao PT2E",
        "",
        f"Written by `scripts/int8_pt2e_check.py` ({versions}; {a.steps} SGD steps of resnet8 on "
        f"Fashion-MNIST; accuracy on 2,000 test images; latency: median of a batch of 256, "
        f"{torch.get_num_threads()} threads).",
        "",
        "| int8 path | test acc % | latency ms | saved bytes | convert s | note |",
        "|---|---|---|---|---|---|",
        *rows, "", *([error, ""] if error else []),
        f"Wall time {time.perf_counter() - started:.0f} s. Machine: {machine()}.", ""])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
