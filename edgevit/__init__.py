"""edgevit: a deployment compiler for efficient vision transformers."""

__version__ = "0.1.0"
