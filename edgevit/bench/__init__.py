"""Benchmarks: edgevit's TVM build against onnxruntime and PyTorch on the same inputs (`edgevit bench`)."""
