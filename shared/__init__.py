"""sftrl's framework-free layer: configs, tokenizer, data, tasks, reference math and metrics.

Imports NumPy, `tokenizers` and the standard library only -- never torch or tensorflow -- so
both framework packages (and the tests) can use it without loading the other framework.
"""

__version__ = "0.1.0"
