"""The scaling suite: how one training step's time and memory grow with the model's size, the
sequence length and the batch, in PyTorch (`SFTModel`, eager) and in Keras (`PolicyModel`, XLA).

Three sweeps (`SIZES[...]["scaling"]`): (a) width and depth together at a fixed batch and length,
(b) the sequence length at one mid-size model and a fixed batch (so the tokens per batch grow with
T), (c) the batch at that model and length. Both frameworks take the same MLM step (forward,
backward, AdamW) with the LM head on every position -- PyTorch's `sparse=False`, as the Keras step
always does -- so the two do the same FLOPs and every parameter counts towards every token.

Each (framework, point) runs in a process of its own, which imports only its framework:

    python -m benchmarks.scaling FRAMEWORK POINT_JSON     FRAMEWORK: pytorch | keras

prints one JSON line {"params", "median_s", "iqr_s", "peak_mib", "imports_mib", "memory_unit"}.
A process per point is what makes the memory honest: in one long process, the allocators keep
what earlier points freed and reuse it, so RSS growth would under-count later points. On the CPU
the peak is the resident set's high-water mark (VmHWM) during the timed steps -- reset after the
first calls, so XLA's compiler and the warm-up do not count -- less the RSS after the imports:
what the model, its gradients, AdamW's moments and one step's activations take. On CUDA it is the
framework's own peak of allocated GPU memory during the timed steps.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import numpy as np

FRAMEWORKS = {"pytorch": "pytorch (SFTModel, eager)", "keras": "keras (PolicyModel, XLA)"}


# ----------------------------------------------------------------------------- one point, in its own process

def reset_peak_memory(framework, device) -> bool:
    """Start the peak-memory count afresh; False where it cannot be (no /proc/self/clear_refs: the
    CPU peak then covers the whole process, first calls included)."""
    if device == "cuda" and framework == "pytorch":
        import torch
        torch.cuda.reset_peak_memory_stats()
    elif device == "cuda":
        import tensorflow as tf
        tf.config.experimental.reset_memory_stats("GPU:0")
    else:
        try:  # glibc: hand the heap's freed pages (the compile's, the warm-up's) back to the OS first
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # another C library: nothing to trim
            pass
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")                    # Linux: VmHWM := the current RSS
        except OSError:
            return False
    return True


def peak_memory_mib(framework, device) -> float:
    from benchmarks.memory import peak_rss_mib

    if device == "cuda" and framework == "pytorch":
        import torch
        return torch.cuda.max_memory_allocated() / 2 ** 20
    if device == "cuda":
        import tensorflow as tf
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20
    return peak_rss_mib()


def pytorch_step(point, device):
    """-> (one SFTModel MLM step, its parameter count, the sync to call after it)."""
    import torch

    from benchmarks.steps import mlm_batch, model_config, torch_train_step
    from torch_impl.model import SFTModel

    torch.manual_seed(0)
    model = SFTModel(model_config(point)).to(device).train()
    ids, mask, labels = (torch.as_tensor(a, device=device) for a in mlm_batch(point, np.random.default_rng(0)))
    step = torch_train_step(model, lambda: model(ids, mask, labels, sparse=False))
    params = sum(p.numel() for p in model.parameters())                   # tied weights counted once
    return step, params, torch.cuda.synchronize if device == "cuda" else None


def keras_step(point, device):
    """-> (one PolicyModel MLM step, XLA-compiled, its parameter count, no sync: the step returns
    its loss as a NumPy value, which waits for the device)."""
    import tf_impl  # noqa: F401  (TensorFlow, quietly)
    import tensorflow as tf

    if device == "cpu":
        tf.config.set_visible_devices([], "GPU")  # --device cpu means the CPU, even where TF sees a GPU
    from benchmarks.steps import keras_train_step, mlm_batch, model_config
    from tf_impl import losses as tf_losses
    from tf_impl.model import PolicyModel

    tf.random.set_seed(0)
    model = PolicyModel(model_config(point))
    ids, mask, labels = (tf.constant(a, tf.int32) for a in mlm_batch(point, np.random.default_rng(0)))
    step = keras_train_step(model, tf_losses.cross_entropy, jit_compile=True)
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)  # tied weights counted once
    return lambda: step(ids, mask, labels).numpy(), params, None


def measure(framework, point) -> dict:
    """Time `point["repeat"]` steps after the first call and `point["warmup"]` more; the peak memory
    during the timed steps."""
    from benchmarks.memory import peak_rss_mib
    from benchmarks.timing import interleaved

    device = point["device"]
    if framework == "pytorch":  # the model's modules too: the imports' share of the RSS is measured apart
        import torch_impl.model  # noqa: F401
    else:
        import tf_impl.model  # noqa: F401
        import tf_impl.losses  # noqa: F401
    imports = peak_rss_mib()
    step, params, sync = (pytorch_step if framework == "pytorch" else keras_step)(point, device)
    for _ in range(1 + point["warmup"]):  # the first call allocates Adam's moments; Keras traces, XLA compiles
        step()
        if sync:
            sync()
    reset = reset_peak_memory(framework, device)
    timing = interleaved({"step": step}, repeat=point["repeat"], warmup=0, sync=sync)["step"]
    peak = peak_memory_mib(framework, device)
    if device == "cuda":
        unit = "MiB peak GPU memory allocated"
    else:
        peak -= imports
        unit = "MiB peak RSS above the imports" + ("" if reset else " (whole run: the peak could not be reset)")
    return {"params": params, "median_s": timing["median_s"], "iqr_s": timing["iqr_s"],
            "peak_mib": round(peak, 1), "imports_mib": round(imports, 1), "memory_unit": unit}


def main(argv) -> int:
    print(json.dumps(measure(argv[0], json.loads(argv[1]))))
    return 0


# ----------------------------------------------------------------------------- the suite, in the runner's process

def sweeps(sc) -> dict:
    """{sweep name: its points}; the mid-size point at the base batch and length is in all three."""
    def point(hidden, layers, seq, batch):
        return dict(vocab=sc["vocab"], hidden=hidden, layers=layers, heads=max(1, hidden // 64), seq=seq, batch=batch)

    mid_hidden, mid_layers = sc["mid"]
    return {"model size": [point(hidden, layers, sc["seq"], sc["batch"]) for hidden, layers in sc["models"]],
            "sequence length": [point(mid_hidden, mid_layers, seq, sc["batch"]) for seq in sc["seqs"]],
            "batch": [point(mid_hidden, mid_layers, sc["seq"], batch) for batch in sc["batches"]]}


def run_point(framework, point) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.scaling", framework, json.dumps(point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmarks.scaling {framework} {json.dumps(point)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def exponent(xs, times) -> float:
    """k of time ∝ x^k: the least-squares slope of log(time) on log(x)."""
    return float(np.polyfit(np.log(xs), np.log(times), 1)[0])


def local_slope(xs, times, i) -> float:
    """The slope of log(time) on log(x) between points i and i + 1."""
    return float(np.log(times[i + 1] / times[i]) / np.log(xs[i + 1] / xs[i]))


def exponent_row(name, k, note) -> dict:
    """A comparison-shaped row whose ratio is an exponent k (no target)."""
    return {"suite": "scaling", "comparison": name, "ratio": k, "target": None, "met": None, "note": note}


def attention_share(point, params) -> float:
    """Attention's share of a training step's FLOPs, 12 L T C / (6 N + 12 L T C) per token (the
    train suite's `train_flops`, Kaplan et al.): it grows with T, the rest does not."""
    attention = 12 * point["layers"] * point["seq"] * point["hidden"]
    return attention / (6 * params + attention)


def point_key(point) -> str:
    """A point's key in the measured results (its JSON: a dict is not hashable)."""
    return json.dumps(point, sort_keys=True)


def fitted_exponents(plan, results, framework) -> list[dict]:
    """time ∝ params^k, T^k and batch^k for one framework, with the local slopes at both ends."""
    side = FRAMEWORKS[framework]
    base, mid = plan["model size"][0], plan["sequence length"][0]

    by_size = [results[point_key(p)][framework] for p in plan["model size"]]
    params, times = [m["params"] for m in by_size], [m["median_s"] for m in by_size]
    rows = [exponent_row(f"{side}: time ∝ params^k (T {base['seq']}, B {base['batch']})", exponent(params, times),
                         f"local slope {local_slope(params, times, 0):.2f} between the two smallest models, "
                         f"{local_slope(params, times, len(params) - 2):.2f} between the two largest; "
                         "1: time proportional to the parameters")]

    by_seq = [results[point_key(p)][framework] for p in plan["sequence length"]]
    seqs, times = [p["seq"] for p in plan["sequence length"]], [m["median_s"] for m in by_seq]
    short, long = local_slope(seqs, times, 0), local_slope(seqs, times, len(seqs) - 2)
    shares = [attention_share(p, m["params"]) for p, m in zip(plan["sequence length"], by_seq)]
    verdict = ("the slope rises at the long end: attention's T² shows" if long > short + 0.1 else
               f"no rise at the long end: attention's T² does not show up to T {seqs[-1]}")
    rows.append(exponent_row(
        f"{side}: time ∝ T^k (C {mid['hidden']}, L {mid['layers']}, B {mid['batch']} fixed)", exponent(seqs, times),
        f"local slope {short:.2f} at T {seqs[0]}→{seqs[1]}, {long:.2f} at T {seqs[-2]}→{seqs[-1]}; {verdict} "
        f"(attention {shares[0]:.0%} of the FLOPs at T {seqs[0]}, {shares[-1]:.0%} at T {seqs[-1]}); "
        "1: time proportional to the tokens"))

    batches = [p["batch"] for p in plan["batch"]]
    rows.append(exponent_row(
        f"{side}: time ∝ batch^k (C {mid['hidden']}, L {mid['layers']}, T {base['seq']})",
        exponent(batches, [results[point_key(p)][framework]["median_s"] for p in plan["batch"]]),
        "1: no gain from batching; below 1: larger batches use the cores better"))
    return rows


def suite_scaling(s, device):
    """Every point of the three sweeps, each framework's step in a process of its own (the frameworks
    alternate, point by point, so slow drift in the machine's speed bends both curves alike); rows
    of tokens/s and of peak memory per point, and the fitted exponents."""
    from benchmarks.timing import row

    if device == "cuda":
        import tensorflow as tf

        from shared.errors import SftrlError
        if not tf.config.list_physical_devices("GPU"):
            raise SftrlError("--device cuda: TensorFlow sees no GPU here, and the scaling suite times Keras on it too")
    sc = s["scaling"]
    plan = sweeps(sc)
    results = {}
    for points in plan.values():
        for p in points:
            key = point_key(p)
            if key not in results:  # the mid-size point is in every sweep: measured once
                results[key] = {framework: run_point(framework, {**p, "device": device, "repeat": sc["repeat"],
                                                                 "warmup": sc["warmup"]})
                                for framework in FRAMEWORKS}
    rows = []
    for sweep, points in plan.items():
        for p in points:
            for framework, side in FRAMEWORKS.items():
                m = results[point_key(p)][framework]
                case = (f"{sweep}: C {p['hidden']}, L {p['layers']}, {m['params']:,} params, "
                        f"T {p['seq']}, B {p['batch']}")
                extra = {"sweep": sweep, "framework": framework, "params": m["params"], "hidden": p["hidden"],
                         "layers": p["layers"], "seq": p["seq"], "batch": p["batch"]}
                tokens_per_s = p["batch"] * p["seq"] / m["median_s"]
                rows.append({**row("scaling", case, side, m, round(tokens_per_s), "tokens/s"),
                             **extra, "quantity": "tokens/s"})
                rows.append({**row("scaling", case, f"{side}: peak memory", m, m["peak_mib"], m["memory_unit"]),
                             **extra, "quantity": "memory", "imports_mib": m["imports_mib"]})
    comparisons = [c for framework in FRAMEWORKS for c in fitted_exponents(plan, results, framework)]
    return rows, comparisons


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
