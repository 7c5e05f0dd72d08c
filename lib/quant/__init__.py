"""Quantization: uniform quantizers with STE, range calibration, fake-quant PTQ / QAT layers,
fixed-point and low-precision float views, and real int8 execution through torch.ao."""
from lib.quant.calibrate import OBSERVERS, calibrate, check_calibration_name
from lib.quant.fold import fold_bn, fold_conv_bn, has_batchnorm
from lib.quant.int8 import (check_int8_supported, est_size_bytes, int8_weight_bytes, latency_ms, model_size_bytes,
                            to_int8)
from lib.quant.precision import apply_to_weights, cast_roundtrip, fixed_point, relative_precision
from lib.quant.qat import (QuantConv2d, QuantLinear, calibrate_model, float_mode, prepare,
                           quantize_weights_)
from lib.quant.quantizer import QuantSpec, dequantize, fake_quantize, qparams, quantize

__all__ = [
    "OBSERVERS", "QuantConv2d", "QuantLinear", "QuantSpec", "apply_to_weights", "calibrate",
    "calibrate_model", "cast_roundtrip", "check_calibration_name", "check_int8_supported",
    "dequantize", "est_size_bytes", "fake_quantize", "fixed_point", "float_mode", "fold_bn", "fold_conv_bn",
    "has_batchnorm", "int8_weight_bytes", "latency_ms", "model_size_bytes",
    "prepare", "qparams", "quantize", "quantize_weights_", "relative_precision", "to_int8",
]
