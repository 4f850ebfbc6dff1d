"""ONNX → ONNX rewrite passes (one module per rule) and the pipeline that runs and verifies them."""
