"""`sftrl bench`: the benchmark suites of benchmarks/ (PyTorch against TensorFlow, against the
libraries people use instead, against the machine's matmul peak), run and written as results.md,
charts and JSON."""

from __future__ import annotations

from shared.errors import SftrlError

SUITES = ("ops", "train", "generate", "ppo", "memory", "peers", "scaling", "decoders", "profile")


def add_arguments(p) -> None:
    p.add_argument("--suite", nargs="+", choices=(*SUITES, "all"), default=["all"], metavar="SUITE",
                   help=f"one or more of {', '.join(SUITES)}, or all (the default). "
                   "peers: TRL's GRPOTrainer on the same RL job (a BERT and a GPT-2), if `pip install \".[peers]\"` "
                   "added TRL (skipped with a line otherwise); scaling: step time, tokens/s and peak memory against "
                   "model size, sequence length and batch, with fitted exponents; decoders: our GPT-2 and Llama "
                   "train step and greedy generate against transformers' and keras-hub's (keras-hub rows skipped "
                   "without it); profile: the Keras and PyTorch train steps split into forward, backward, "
                   "optimizer and the matmuls alone")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--size", choices=("default", "tiny"), default="default",
                   help="tiny: a smoke run that checks the machinery, not the speed")
    p.add_argument("--out", default="benchmarks/results", help="folder for results.md, PNG charts and JSON")
    p.add_argument("--json", metavar="PATH", help="JSON path (default: OUT/results.json)")
    p.add_argument("--quiet", action="store_true")


def run(args) -> int:
    import tf_impl  # noqa: F401  (imports TensorFlow quietly)

    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise SftrlError("--device cuda: no CUDA device is available here")
    from benchmarks.runner import run as run_suites

    suites = list(SUITES) if "all" in args.suite else list(dict.fromkeys(args.suite))  # in the order given
    _, markdown = run_suites(suites, size=args.size, device=args.device, out_dir=args.out, json_path=args.json,
                             log=(lambda *a: None) if args.quiet else print)
    print(markdown)
    print(f"\nwritten: {args.out}/results.md, {args.out}/<suite>.png, {args.json or args.out + '/results.json'}")
    return 0
