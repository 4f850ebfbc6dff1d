"""Thin helpers over onnx: load/validate, shapes, numerics, analysis."""
