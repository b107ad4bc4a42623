"""The parity registry's machinery: what a case is, how it runs, how results are reported.

A case gives seeded NumPy inputs, a NumPy reference (computed in float64 from the very inputs
the frameworks get), a PyTorch and a TensorFlow implementation, tolerances per dtype and the
formula it checks. Each implementation returns a dict of named NumPy outputs; the case passes
when every output of each framework is within tolerance of the reference (or, where NumPy has
no counterpart -- gradients, optimizers, training runs -- of the other framework).

Known framework differences are cases too: they set `min_error`, so they pass only while the
difference they document is really there, and a matched twin case shows how to remove it.
"""

from __future__ import annotations

import inspect
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

LEVELS = ("ops", "attention", "block", "model", "losses", "gradients", "optimizer", "training",
          "generation")
DTYPES = ("float32", "float64")
FORWARD_TOL = {"float32": 1e-5, "float64": 1e-10}
GRADIENT_TOL = {"float32": 1e-4, "float64": 1e-10}


@dataclass(frozen=True)
class Case:
    name: str
    level: str
    formula: str
    inputs: Callable[[np.random.Generator], dict]   # seeded float64 inputs (ints stay ints)
    numpy: Callable[[dict], dict] | None             # reference, run on float64 inputs
    torch: Callable[[dict, str], dict]               # (inputs cast to dtype, dtype) -> outputs
    tf: Callable[[dict, str], dict]
    tol: dict = field(default_factory=lambda: dict(FORWARD_TOL))
    min_error: dict | None = None                    # known-difference cases: {dtype: the gap that must show}
    note: str = ""
    shows: tuple = ()                                # (numpy, torch, tf) objects `--show` prints
    reference_name: str = "numpy"                    # what `numpy` computes with (a library, for the library cases)

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(f"{self.name}: unknown level {self.level!r}")


@dataclass
class Result:
    case: str
    level: str
    dtype: str
    max_abs: float
    max_rel: float
    tol: float
    passed: bool
    worst: str          # which comparison and tensor gave max_abs
    min_error: float | None = None

    def as_dict(self):
        return dict(self.__dict__)


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def _cast(inputs: dict, dtype: str) -> dict:
    """Floating arrays to `dtype`; integers, booleans and non-arrays unchanged."""
    out = {}
    for key, value in inputs.items():
        if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
            out[key] = value.astype(dtype)
        elif isinstance(value, dict):
            out[key] = _cast(value, dtype)
        else:
            out[key] = value
    return out


def _compare(got: dict, expected: dict, label: str):
    """(max abs error, relative error, worst tensor) of got vs expected, same keys and shapes.

    The relative error is the max abs error over the largest |expected| value of the case, so
    tensors that are round-off around zero (e.g. a gradient that is zero in exact arithmetic)
    do not read as huge relative errors.
    """
    if set(got) != set(expected):
        raise AssertionError(f"{label}: outputs {sorted(got)} != expected {sorted(expected)}")
    worst_abs, largest, worst = 0.0, 0.0, f"{label}"
    for key in expected:
        a = np.asarray(got[key], dtype=np.float64)
        b = np.asarray(expected[key], dtype=np.float64)
        if a.shape != b.shape:
            raise AssertionError(f"{label}/{key}: shape {a.shape} != expected {b.shape}")
        if a.size == 0:
            continue
        diff = np.abs(a - b)
        if not np.all(np.isfinite(diff)):
            return float("inf"), float("inf"), f"{label}/{key} (non-finite)"
        abs_err = float(diff.max())
        largest = max(largest, float(np.abs(b).max()))
        if abs_err >= worst_abs:
            worst_abs, worst = abs_err, f"{label}/{key}"
    return worst_abs, worst_abs / largest if largest > 0 else worst_abs, worst


def run_case(case: Case, dtype: str) -> Result:
    inputs = case.inputs(np.random.default_rng(_seed(case.name)))
    cast = _cast(inputs, dtype)
    torch_out = case.torch(cast, dtype)
    tf_out = case.tf(cast, dtype)
    if case.numpy is not None:
        reference = case.numpy(_cast(cast, "float64"))
        comparisons = [_compare(torch_out, reference, f"torch-{case.reference_name}"),
                       _compare(tf_out, reference, f"tf-{case.reference_name}")]
    else:
        comparisons = [_compare(torch_out, tf_out, "torch-tf")]
    max_abs = max(c[0] for c in comparisons)
    max_rel = max(c[1] for c in comparisons)
    worst = max(comparisons, key=lambda c: c[0])[2]
    tol = case.tol[dtype]
    min_error = (case.min_error or {}).get(dtype)
    passed = max_abs <= tol and (min_error is None or max_abs >= min_error)
    return Result(case.name, case.level, dtype, max_abs, max_rel, tol, passed, worst, min_error)


def select(cases, level=None, names=None):
    return [c for c in cases if (level is None or c.level == level) and (names is None or c.name in names)]


def format_table(results) -> str:
    """A Markdown table: case, level, dtype, max abs error, max rel error, tolerance, pass."""
    lines = ["| case | level | dtype | max abs error | rel. to max abs value | tolerance | pass |",
             "| --- | --- | --- | ---: | ---: | ---: | :---: |"]
    for r in results:
        bound = f"{r.tol:.0e}" if r.min_error is None else f"[{r.min_error:.0e}, {r.tol:.0e}]"
        lines.append(f"| {r.case} | {r.level} | {r.dtype} | {r.max_abs:.2e} | {r.max_rel:.2e} | "
                     f"{bound} | {'yes' if r.passed else 'NO'} |")
    return "\n".join(lines)


def results_json(results) -> str:
    """The results with the versions, CPU and commit they were measured with (the docs' parity
    tables are generated from this file)."""
    from sftrl.reports.common import versions
    return json.dumps({"versions": versions(), "results": [r.as_dict() for r in results]}, indent=2)


def show(case: Case) -> str:
    """The formula, the note and the NumPy, PyTorch and TensorFlow sources of a case."""
    parts = [f"{case.name}  (level: {case.level})", "", f"formula: {case.formula}"]
    if case.note:
        parts += ["", f"note: {case.note}"]
    labels = ("NumPy", "PyTorch", "TensorFlow")
    objects = case.shows or (case.numpy, case.torch, case.tf)
    for label, obj in zip(labels, objects):
        if obj is None:
            continue
        parts += ["", f"--- {label}: {source_location(obj)}", inspect.getsource(obj).rstrip()]
    return "\n".join(parts)


def source_location(obj) -> str:
    """Where a function is written, as a reader would look for it: `shared/reference.py:168`."""
    path = Path(inspect.getsourcefile(obj)).resolve()
    root = Path(__file__).resolve().parents[1]
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    return f"{shown.as_posix()}:{inspect.getsourcelines(obj)[1]}"
