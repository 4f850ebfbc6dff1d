"""`edgevit bench`: host/board (host.py: TVM vs onnxruntime vs PyTorch, per-op profiles), microcontrollers (mcu.py:
QEMU instruction counts → estimated ms), iPhone (ios.py + iphone.py: predicted on Linux, Core ML on macOS),
the whole zoo (zoo_run.py), Pillow charts (charts.py)."""
