"""The parity suite: the same math in NumPy, PyTorch and TensorFlow, case by case.

    registry    what a case is, how it runs and compares, how results are reported (NumPy only)
    cases/      the cases, one module per level (importing it imports both frameworks)
    page        `sftrl parity --html`: the cases as one page to teach from

Served to `pytest tests/parity` and to `sftrl parity` (sftrl/commands/parity.py).
"""
