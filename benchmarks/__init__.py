"""Benchmarks of PyTorch against TensorFlow, against the libraries people use instead, and
against the machine's own matmul peak. Run with `sftrl bench` (see benchmarks/README.md)."""
