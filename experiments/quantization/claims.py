"""The claims of Krishnamoorthi (2018), *Quantizing deep convolutional networks for efficient
inference: A whitepaper* (arXiv:1806.08342), checked on our trials, one comparison per model.

The paper's words and numbers are those of its abstract. Every accuracy comparison is paired by
seed: every quantized copy of a seed starts from that seed's float model. PTQ arms quantize the
deployed weights (BN folded into the convs); QAT is compared with `float_ft`, the float model
fine-tuned with QAT's recipe for QAT's extra epochs without fake quantization, so that the extra
training is not counted as QAT's doing.
"""
from __future__ import annotations

import pandas as pd

from experiments.claims import Claim, Comparison, better, judge, no_worse, per_seed

LOW_BITS = 4  # "low bits": the weight widths at or below the whitepaper's 4-bit setting


def _models(trials: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(trials.model)) if "model" in trials else []


def _arm(trials: pd.DataFrame, model: str, method: str, metric: str = "test_acc",
         **where) -> pd.Series:
    return per_seed(trials, metric, model=model, method=method, **where)


def _ptq(trials: pd.DataFrame, model: str, bits: int, act_bits: int, granularity: str,
         calibration: str = "") -> pd.Series:
    """PTQ at W`bits`A`act_bits` (0: float activations; their rows have no calibration)."""
    where = dict(bits=bits, act_bits=act_bits, granularity=granularity)
    return _arm(trials, model, "ptq", **where, **({"calibration": calibration} if calibration
                                                  else {}))


def _qat(trials: pd.DataFrame, model: str, bits: int, act_bits: int) -> pd.Series:
    return _arm(trials, model, "qat", bits=bits, act_bits=act_bits)


def ptq8_within_2(trials: pd.DataFrame) -> list[Comparison]:
    """8-bit per-channel weights + per-tensor activations (minmax ranges), post-training, and
    the real int8 model, each within 2 points of float."""
    parts = []
    for m in _models(trials):
        fp = _arm(trials, m, "float")
        parts.append(no_worse(f"{m}: PTQ W8A8 per-channel vs float",
                              _ptq(trials, m, 8, 8, "per_channel", "minmax"), fp, tolerance=2.0))
        parts.append(no_worse(f"{m}: int8 (torch.ao) vs float", _arm(trials, m, "int8"), fp,
                              tolerance=2.0))
    return parts


def per_channel_beats_per_tensor(trials: pd.DataFrame) -> list[Comparison]:
    """Weights alone, per-channel vs per-tensor ranges, at every width <= 4 bits."""
    parts = []
    for m in _models(trials):
        ptq = trials[(trials.model == m) & (trials.method == "ptq") & (trials.act_bits == 0)]
        for b in sorted({int(x) for x in ptq.bits if x <= LOW_BITS}, reverse=True):
            parts.append(better(f"{m}: W{b} per-channel vs per-tensor",
                                _ptq(trials, m, b, 0, "per_channel"),
                                _ptq(trials, m, b, 0, "per_tensor")))
    return parts


def four_bit_needs_qat(trials: pd.DataFrame) -> list[Comparison]:
    """W4A8: QAT beats the best PTQ we run (per-channel weights, MSE activation ranges), and
    stays within the paper's worst 4-bit loss (10 points) of the float control."""
    parts = []
    for m in _models(trials):
        qat = _qat(trials, m, 4, 8)
        parts.append(better(f"{m}: QAT W4A8 vs PTQ W4A8", qat,
                            _ptq(trials, m, 4, 8, "per_channel", "mse")))
        parts.append(no_worse(f"{m}: QAT W4A8 vs float fine-tuned alike", qat,
                              _arm(trials, m, "float_ft"), tolerance=10.0))
    return parts


def qat8_within_1(trials: pd.DataFrame) -> list[Comparison]:
    return [no_worse(f"{m}: QAT W8A8 vs float fine-tuned alike", _qat(trials, m, 8, 8),
                     _arm(trials, m, "float_ft"), tolerance=1.0) for m in _models(trials)]


def int8_four_times_smaller(trials: pd.DataFrame, saved_cols: tuple[str, str] = (
        "float_size_bytes", "size_bytes")) -> list[Comparison]:
    """float / int8 bytes, of the weight tensors and of the whole saved model, vs 4. The int8
    rows hold both sides; `saved_cols` names their columns of saved bytes (float, int8)."""
    parts = []
    float_saved, int8_saved = saved_cols
    for m in _models(trials):
        int8 = trials[(trials.model == m) & (trials.method == "int8")]
        if not len(int8):
            continue
        weights = (int8.float_weight_bytes / int8.weight_bytes).set_axis(int8.seed.rename("seed"))
        saved = (int8[float_saved] / int8[int8_saved]).set_axis(int8.seed.rename("seed"))
        parts.append(no_worse(f"{m}: weights, float32 / int8 bytes vs 4", weights, [4.0], scale=1))
        parts.append(no_worse(f"{m}: saved model, float / int8 bytes vs 4", saved, [4.0], scale=1))
    return parts


def int8_faster(trials: pd.DataFrame) -> list[Comparison]:
    """float / int8 CPU latency (batch of test images) vs the paper's lower end, 2x."""
    parts = []
    for m in _models(trials):
        int8 = trials[(trials.model == m) & (trials.method == "int8")]
        if len(int8):
            speedup = (int8.float_latency_ms / int8.latency_ms).set_axis(int8.seed.rename("seed"))
            parts.append(no_worse(f"{m}: int8 speed-up vs 2x", speedup, [2.0], scale=1))
    return parts


CLAIMS = [
    Claim("ptq8_within_2pct",
          "Per-channel quantization of weights and per-layer quantization of activations to "
          "8-bits of precision post-training produces classification accuracies within 2% of "
          "floating point networks for a wide variety of CNN architectures.",
          lambda t: judge(ptq8_within_2(t)), "abstract"),
    Claim("per_channel_beats_per_tensor",
          "\"Per-channel quantization of weights\" is the scheme that keeps post-training "
          "accuracy; tested here as: at low bit widths (weights alone, 4 bits and below) "
          "per-channel weight ranges beat one range per tensor.",
          lambda t: judge(per_channel_beats_per_tensor(t)), "abstract"),
    Claim("four_bit_weights_need_qat",
          "Quantization-aware training also allows for reducing the precision of weights to "
          "four bits with accuracy losses ranging from 2% to 10%, with higher accuracy drop for "
          "smaller networks (4-bit weights, 8-bit activations: QAT beats post-training "
          "quantization and loses at most 10%).",
          lambda t: judge(four_bit_needs_qat(t)), "abstract"),
    Claim("qat8_within_1pct",
          "Quantization-aware training can provide further improvements, reducing the gap to "
          "floating point to 1% at 8-bit precision.", lambda t: judge(qat8_within_1(t)),
          "abstract"),
    Claim("int8_4x_smaller",
          "Model sizes can be reduced by a factor of 4 by quantizing weights to 8-bits.",
          lambda t: judge(int8_four_times_smaller(t)), "abstract"),
    Claim("int8_2x_faster",
          "We benchmark latencies of quantized networks on CPUs and DSPs and observe a speedup "
          "of 2x-3x for quantized implementations compared to floating point on CPUs.",
          lambda t: judge(int8_faster(t)), "abstract"),
]
