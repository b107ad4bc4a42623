"""`sftrl sft` and `sftrl pretrain`: arguments -> data, tokenizer, model -> torch_impl.sft.train."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from shared.config import ARCHITECTURES, SFTConfig
from shared.errors import SftrlError
from shared.interrupt import EXIT_INTERRUPTED, interrupted_message
from shared.random_streams import integer_seed
from sftrl.commands.common import check_vocabulary
from sftrl.commands.flags import add_config_flags, config_from_args


def add_arguments(p, pretrain: bool) -> None:
    kind = "text" if pretrain else "sft"
    p.add_argument("--data", required=True, help=f"training data: JSONL of '{kind}' records"
                   + (" or a plain .txt file" if pretrain else ""))
    p.add_argument("--eval-data", help="held-out data of the same kind: evaluation, early stopping, "
                   "and the exported model is the one with the best held-out loss")
    p.add_argument("--out", required=True, help="run directory")
    add_config_flags(p, SFTConfig, ["objective", "mlm_probability"], choices={"objective": ("clm", "mlm")},
                     defaults={"objective": "mlm"} if pretrain else None)
    p.add_argument("--init", help="start from a model folder: ours, or a transformers folder of a BERT, GPT-2, "
                   "Llama, Qwen2 or Mistral model (config.json + model.safetensors + tokenizer files)")
    p.add_argument("--tokenizer", help="tokenizer.json to use (default: the --init folder's, else "
                   "one trained on the training data)")
    p.add_argument("--vocab-size", type=int, default=512, help="size of a tokenizer trained here")
    p.add_argument("--model-config", help="config.json of the model to train from scratch (any architecture)")
    p.add_argument("--architecture", choices=ARCHITECTURES, default="bert",
                   help="the architecture of a model trained from scratch without --model-config: bert "
                   "(post-LN, learned positions), gpt2 (pre-LN) or llama (RMSNorm, rotary positions, SwiGLU); "
                   "2 layers of width 128 each (default bert)")
    add_config_flags(p.add_mutually_exclusive_group(), SFTConfig, ["steps", "epochs"])
    add_config_flags(p, SFTConfig, ["batch_size", "lr", "weight_decay", "warmup_steps", "max_grad_norm", "max_length",
                                    "eval_every", "early_stopping_patience", "save_every", "keep_checkpoints",
                                    "lora_rank", "lora_alpha", "lora_embeddings"])
    p.add_argument("--tasks", help="only these tasks, optionally weighted: 'copy,add' or 'copy=1,add=3' "
                   "(default: every task, sampled equally often)")
    add_config_flags(p, SFTConfig, ["seed"])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: the GPU (under torchrun, the GPU of each process's LOCAL_RANK)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: mixed precision (bfloat16 autocast; weights and optimizer stay float32)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out "
                   "(after Ctrl-C, a kill or a crash; the result is bitwise that of an uninterrupted run)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward (one process "
                   "only); `sftrl bench --suite train` measures whether it pays on your machine")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.epilog = ("Several processes: torchrun --nproc_per_node=N -m sftrl %s ... (DDP; gloo on CPU, NCCL with "
                "--device cuda). --batch-size is the global batch, split between the processes; only rank 0 "
                "writes." % ("pretrain" if pretrain else "sft"))


def build_config(args) -> SFTConfig:
    """The run's SFTConfig, from its flags."""
    return config_from_args(SFTConfig, args)


def parse_tasks(spec: str | None, records) -> tuple[set | None, dict | None]:
    """'copy,add' -> ({copy, add}, None); 'copy=1,add=3' -> ({copy, add}, {copy: 1, add: 3})."""
    if not spec:
        return None, None
    present = {r.get("task") for r in records}
    names, weights = set(), {}
    for part in spec.split(","):
        name, _, weight = part.strip().partition("=")
        if name not in present:
            known = ", ".join(sorted(t for t in present if t)) or "(records carry no task)"
            raise SftrlError(f"--tasks: unknown task {name!r}; the data has: {known}")
        names.add(name)
        if weight:
            try:
                weights[name] = float(weight)
            except ValueError:
                raise SftrlError(f"--tasks: weight of {name!r} must be a number, got {weight!r}") from None
            if weights[name] < 0:
                raise SftrlError(f"--tasks: weight of {name!r} must be >= 0")
    return names, (weights or None)


def init_distributed(device: str) -> tuple[int, int, str]:
    """Under torchrun (WORLD_SIZE > 1): join the process group -- NCCL on GPUs, gloo on CPU --
    and return (rank, world_size, this process's device). Otherwise (0, 1, device)."""
    import os

    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def load_inputs(args, pretrain: bool):
    """Everything a user can get wrong, checked before PyTorch is imported (fast errors).
    Returns (config, records, eval_records, task weights, model config or None)."""
    from shared.config import load_model_config
    from shared.data import load_jsonl
    from shared.io import latest_checkpoint

    config = build_config(args)
    kind = "text" if pretrain else "sft"
    out = Path(args.out)
    if args.resume and latest_checkpoint(out) is None:
        raise SftrlError(f"--resume: no checkpoint in {out / 'checkpoints'} to resume from")
    records = load_jsonl(args.data, kind)
    eval_records = load_jsonl(args.eval_data, kind) if args.eval_data else []
    wanted, weights = parse_tasks(args.tasks, records) if not pretrain else (None, None)
    if wanted is not None:
        records = [r for r in records if r.get("task") in wanted]
        eval_records = [r for r in eval_records if r.get("task") in wanted]
    if args.architecture != "bert" and (args.init or args.model_config):
        raise SftrlError(f"--architecture: only for a model trained from scratch without --model-config "
                         f"(the config.json of {'--init' if args.init else '--model-config'} names its architecture)")
    model_config = load_model_config(args.model_config) if args.model_config and not args.init else None
    return config, records, eval_records, weights, model_config


def choose_tokenizer(args, records):
    """--tokenizer, else the --init folder's, else the interrupted run's, else one trained here."""
    from shared.data import record_texts
    from shared.tokenizer import Tokenizer

    out = Path(args.out)
    if args.tokenizer:
        return Tokenizer.load(args.tokenizer)
    if args.init and (Path(args.init) / "tokenizer.json").exists():
        return Tokenizer.load(Path(args.init) / "tokenizer.json")
    if args.resume and (out / "checkpoints" / "tokenizer.json").exists():
        return Tokenizer.load(out / "checkpoints" / "tokenizer.json")
    return Tokenizer.train([t for r in records for t in record_texts(r)], args.vocab_size)


def build_model(args, config, model_config, tokenizer, examples):
    """--init, --model-config, or a small default; its attention type set by the objective."""
    import torch

    from shared.config import ModelConfig
    from torch_impl.architectures import build_model as build_architecture
    from torch_impl.checkpoint import load_pretrained
    from torch_impl.sft import default_model_config

    wanted_type = "causal" if config.objective == "clm" else "bidirectional"
    if args.init:
        model, source = load_pretrained(args.init), f"--init {args.init}"
    else:
        model_config = model_config or default_model_config(tokenizer, examples, config.objective, args.architecture)
        torch.manual_seed(integer_seed("init", config.seed))  # the initial weights
        if isinstance(model_config, ModelConfig):
            model_config = dataclasses.replace(model_config, attention_type=wanted_type)
        model = build_architecture(model_config)
        source = f"--model-config {args.model_config}" if args.model_config else "the default config"
    check_vocabulary(model.config, tokenizer, source)
    bert = isinstance(model.config, ModelConfig)
    if model.config.attention_type != wanted_type:
        if not bert:
            raise SftrlError(f"{source}: a {model.config.model_type} model is a decoder: it trains with "
                             "--objective clm only")
        model.config = dataclasses.replace(model.config, attention_type=wanted_type)  # e.g. BERT (MLM) -> causal
        model.bert.config = model.config
    if config.objective == "mlm" and tokenizer.mask_id is None:
        raise SftrlError("--objective mlm: the tokenizer has no mask token")
    return model


def report(summary, out) -> None:
    m = summary["metrics"]
    print(f"done: {summary['step']} steps in {summary['train_seconds']} s"
          + (" (stopped early)" if summary["stopped_early"] else ""))
    if m:
        shown = {k: v for k, v in m.items() if k.count("/") == 1}
        print("held-out: " + ", ".join(f"{k[5:]}={v:.4f}" for k, v in sorted(shown.items())))
    print(f"model written to {out}/ (config.json, model.safetensors, tokenizer.json)")


def run(args, pretrain: bool) -> int:
    config, records, eval_records, weights, model_config = load_inputs(args, pretrain)
    tokenizer = choose_tokenizer(args, records)
    kind, out = ("text" if pretrain else "sft"), Path(args.out)

    import torch

    from torch_impl.data import encode_records
    from torch_impl.sft import train

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SftrlError("--device cuda: no CUDA device is available here")
    if args.precision == "bf16" and args.device == "cuda" and not torch.cuda.is_bf16_supported():
        raise SftrlError("--precision bf16: this GPU does not support bfloat16")
    rank, world, device = init_distributed(args.device)
    if args.compile and world > 1:
        raise SftrlError("--compile: one process only; under torchrun the DDP module runs uncompiled")
    examples, truncated = encode_records(records, kind, tokenizer, config.objective, config.max_length)
    model = build_model(args, config, model_config, tokenizer, examples)
    max_length = min(config.max_length, model.config.max_position_embeddings)
    if max_length < config.max_length:
        examples, truncated = encode_records(records, kind, tokenizer, config.objective, max_length)
    eval_examples = encode_records(eval_records, kind, tokenizer, config.objective, max_length)[0]
    if truncated and rank == 0:
        print(f"warning: {truncated} of {len(examples)} training examples were longer than "
              f"{max_length} tokens and were truncated (prompts lose their start)")
    if rank == 0:
        try:
            (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SftrlError(f"--out {out}: cannot create the run directory ({e.strerror})") from None
        tokenizer.save(out / "checkpoints" / "tokenizer.json")  # so --resume uses the same one

    summary = train(model, tokenizer, examples, eval_examples, config, out, device=device,
                    quiet=args.quiet, resume=args.resume, task_weights=weights, precision=args.precision,
                    compile_model=args.compile)
    if "interrupted_at" in summary:
        if rank == 0:
            sys.stderr.write(interrupted_message(f"step {summary['interrupted_at']}", summary["checkpoint"]) + "\n")
        return EXIT_INTERRUPTED
    if rank == 0:
        report(summary, out)
    return 0
