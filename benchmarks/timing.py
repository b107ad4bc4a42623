"""Timing that can be trusted: warm-ups, repetitions, the two sides of a comparison interleaved in
one process (so drift in clock speed or load hits both alike), median and spread reported."""

from __future__ import annotations

import os
import platform
import statistics
import time


def interleaved(functions: dict, repeat: int = 7, warmup: int = 2, sync=None) -> dict:
    """Time each function `repeat` times, round-robin: A B C, A B C, ... after `warmup` rounds.

    Returns {name: {"median_s", "min_s", "max_s", "iqr_s", "times_s"}}. `sync` is called after
    each call (e.g. torch.cuda.synchronize) so asynchronous devices are timed honestly.
    """
    for _ in range(warmup):
        for fn in functions.values():
            fn()
            if sync:
                sync()
    times = {name: [] for name in functions}
    for _ in range(repeat):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            if sync:
                sync()
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        out[name] = {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
                     "iqr_s": q[2] - q[0], "times_s": ts}
    return out


def cpu_vector_isa() -> str:
    """The widest x86 vector extension the CPU reports (avx512f, avx2, ...), from /proc/cpuinfo:
    the kernels oneDNN and ATen pick, and so the speeds, depend on it."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    return next((isa for isa in ("avx512f", "avx2", "avx", "sse4_2") if isa in flags), "unknown")


def environment(device: str) -> dict:
    import numpy
    import tensorflow as tf
    import torch

    import keras
    import transformers

    from shared.provenance import provenance

    return {
        "python": platform.python_version(), "platform": platform.platform(), "processor": platform.processor(),
        "cpu_count": os.cpu_count(), "cpu_vector_isa": cpu_vector_isa(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "tensorflow": tf.__version__, "keras": keras.__version__, "transformers": transformers.__version__,
        "numpy": numpy.__version__, "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "device": device, "dtype": "float32",
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None,
        **provenance(),
    }


def row(suite, case, side, timing, value=None, unit=None):
    return {"suite": suite, "case": case, "side": side, "median_ms": 1e3 * timing["median_s"],
            "iqr_ms": 1e3 * timing["iqr_s"], "value": value, "unit": unit}


def comparison(suite, name, numerator_ms, denominator_ms, target=None, note=""):
    """ratio = numerator / denominator (so > 1 means the second is faster)."""
    ratio = float(numerator_ms / denominator_ms)
    return {"suite": suite, "comparison": name, "ratio": ratio, "target": target,
            "met": None if target is None else ratio >= target, "note": note}
