"""What the CPU and its math-library settings allow, read without importing a framework."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_flags() -> set[str]:
    """The instruction-set flags of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def onednn_bf16_would_crash_tensorflow() -> bool:
    """True where TensorFlow would crash (SIGSEGV) on its first bfloat16 matmul.

    TensorFlow sends bfloat16 ops to oneDNN when the CPU has AVX-512 -- its own CPUID check,
    which ignores ONEDNN_MAX_CPU_ISA. Capped below AVX-512 (e.g. ONEDNN_MAX_CPU_ISA=AVX2, the
    setting that makes this machine compute as an AVX2-only one), oneDNN has no bfloat16 kernel
    to run. On a CPU that really lacks AVX-512, TensorFlow uses its own bfloat16 kernels instead;
    `TF_ENABLE_ONEDNN_OPTS=0`, set before TensorFlow is imported, makes it do that here too.
    """
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        return False
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    capped = bool(isa) and not isa.startswith(("AVX512", "AVX10", "AMX", "ALL", "DEFAULT"))
    return capped and "avx512f" in cpu_flags()
