"""sftrl: the CLI and the pipeline -- the only package that imports both PyTorch and TensorFlow."""

__version__ = "0.1.0"
