"""Supervised fine-tuning (and pretraining) in PyTorch.

The seed documents' loop -- forward, loss, backward, optimizer step, zero_grad -- with what a
practitioner needs around it: dynamic padding and length bucketing, AdamW with linear warm-up
and decay, gradient clipping, task-balanced sampling, held-out evaluation per task with early
stopping, LoRA through `peft`, and checkpoints that resume bit for bit.

    for step in 1..N:
        batch  <- next batch of the epoch plan            (shared.data.plan_epoch)
        loss   <- model(input_ids, attention_mask, labels)
        loss.backward(); clip; optimizer.step(); optimizer.zero_grad()
        every eval_every steps: evaluate, keep the best weights
        every save_every steps: checkpoint
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from shared.config import ModelConfig, SFTConfig
from shared.constants import IGNORE_INDEX, TIED_NAMES
from shared.data import collate, encode_prompt, encode_sft, encode_text, mask_tokens, plan_epoch
from shared.errors import CheckpointError, SftrlError
from shared.io import (append_jsonl, atomic_write_text, latest_checkpoint, truncate_jsonl,
                       write_checkpoint)
from shared.tensorboard import SummaryWriter
from shared import tasks as builtin_tasks
from torch_impl.checkpoint import save_pretrained
from torch_impl.generate import generate
from torch_impl.model import SFTModel, lm_loss

EVAL_MASK_SEED = 10 ** 6  # MLM evaluation masks the same tokens every time


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int] | None   # None: filled by MLM masking at batch time
    task: str | None
    prompt: str | None = None


# ----------------------------------------------------------------------------- data

def encode_records(records, kind: str, tokenizer, objective: str, max_length: int):
    """Records -> Examples. Returns (examples, number truncated)."""
    examples, truncated = [], 0
    for r in records:
        if kind == "text":
            ids, cut = encode_text(tokenizer, r["text"], max_length)
            labels = list(ids) if objective == "clm" else None
            examples.append(Example(ids, labels, None))
        else:
            ids, labels, cut = encode_sft(tokenizer, r["prompt"], r["completion"], max_length)
            examples.append(Example(ids, labels if objective == "clm" else None, r.get("task"), r["prompt"]))
        truncated += cut
    return examples, truncated


def make_batch(examples, indices, tokenizer, objective, rng, device, mlm_probability=SFTConfig.mlm_probability):
    """Pad the chosen examples (dynamic padding); for MLM draw the masked tokens with `rng`, each
    eligible token chosen with `mlm_probability`."""
    chosen = [examples[i] for i in indices]
    ids = [e.input_ids for e in chosen]
    if objective == "clm":
        batch = collate(ids, tokenizer.pad_id, labels=[e.labels for e in chosen])
    else:
        batch = collate(ids, tokenizer.pad_id)
        batch["input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"], batch["attention_mask"], tokenizer.special_ids, tokenizer.mask_id,
            tokenizer.vocab_size, rng, probability=mlm_probability)
    return {k: torch.as_tensor(v, device=device) for k, v in batch.items()}


def default_model_config(tokenizer, examples, objective: str) -> ModelConfig:
    """A small model suited to the data: vocabulary from the tokenizer, positions for the longest
    example plus room to generate, 2 layers of width 128."""
    longest = max(len(e.input_ids) for e in examples)
    positions = max(64, int(math.ceil((longest + 32) / 32.0)) * 32)
    return ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=128, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=512, max_position_embeddings=positions,
                       pad_token_id=tokenizer.pad_id,
                       attention_type="causal" if objective == "clm" else "bidirectional")


def lr_at(step: int, config: SFTConfig, total_steps: int) -> float:
    """Linear warm-up from 0 to lr over warmup_steps, then linear decay to 0 at total_steps."""
    if step <= config.warmup_steps:
        return config.lr * step / max(1, config.warmup_steps)
    return config.lr * max(0.0, total_steps - step) / max(1, total_steps - config.warmup_steps)


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(model, examples, tokenizer, objective, seed, batch_size, device,
             mlm_probability=SFTConfig.mlm_probability):
    """Loss, token accuracy and (causal only) perplexity = exp(loss), overall and per task.

    For MLM the loss is over masked tokens only (the same tokens every call); exp of it is a
    masked-token perplexity, not a perplexity of the text, and is not reported as one.
    """
    model.eval()
    rng = np.random.default_rng([seed, EVAL_MASK_SEED])
    sums: dict[str, list[float]] = {}  # task -> [nll sum, correct, count]
    for start in range(0, len(examples), batch_size):
        indices = list(range(start, min(start + batch_size, len(examples))))
        batch = make_batch(examples, indices, tokenizer, objective, rng, device, mlm_probability)
        scores = model(batch["input_ids"], batch["attention_mask"]).float()
        labels = batch["labels"]
        if objective == "clm":
            scores, labels = scores[:, :-1], labels[:, 1:]
        keep = labels != IGNORE_INDEX
        nll = torch.nn.functional.cross_entropy(scores.transpose(1, 2), labels.clamp(min=0),
                                                reduction="none")
        correct = (scores.argmax(-1) == labels) & keep
        for row, i in enumerate(indices):
            for task in ("all", examples[i].task):
                if task is None:
                    continue
                s = sums.setdefault(task, [0.0, 0.0, 0.0])
                s[0] += float(nll[row][keep[row]].sum())
                s[1] += float(correct[row].sum())
                s[2] += float(keep[row].sum())
    metrics = {}
    for task, (nll_sum, correct, count) in sums.items():
        prefix = "eval/" if task == "all" else f"eval/{task}/"
        loss = nll_sum / max(count, 1)
        metrics[prefix + "loss"] = loss
        metrics[prefix + "token_accuracy"] = correct / max(count, 1)
        if objective == "clm":
            metrics[prefix + "perplexity"] = math.exp(min(loss, 50.0))
    model.train()
    return metrics


@torch.no_grad()
def task_rewards(model, examples, tokenizer, max_length, device, batch_size=64, max_new_tokens=16):
    """Greedy completions of built-in task prompts, scored by exact match and partial credit."""
    scored = [e for e in examples if e.prompt is not None and _is_builtin(e.prompt)]
    if not scored:
        return {}
    model.eval()
    totals: dict[str, list[float]] = {}
    room = model.config.max_position_embeddings - max_new_tokens
    for start in range(0, len(scored), batch_size):
        chunk = scored[start:start + batch_size]
        prompts = [encode_prompt(tokenizer, e.prompt, min(max_length, room))[0] for e in chunk]
        batch = collate(prompts, tokenizer.pad_id, side="left")
        new = generate(model, torch.as_tensor(batch["input_ids"], device=device),
                       torch.as_tensor(batch["attention_mask"], device=device), max_new_tokens,
                       eos_id=tokenizer.sep_id)
        for e, ids in zip(chunk, new.tolist()):
            completion = tokenizer.decode(ids)
            for task in ("all", e.task):
                if task is None:
                    continue
                t = totals.setdefault(task, [0.0, 0.0, 0.0])
                t[0] += builtin_tasks.exact_match(e.prompt, completion)
                t[1] += builtin_tasks.partial_credit(e.prompt, completion)
                t[2] += 1
    model.train()
    metrics = {}
    for task, (exact, partial, n) in totals.items():
        prefix = "eval/" if task == "all" else f"eval/{task}/"
        metrics[prefix + "exact_match"] = exact / n
        metrics[prefix + "partial_credit"] = partial / n
    return metrics


def _is_builtin(prompt: str) -> bool:
    try:
        builtin_tasks.parse_prompt(prompt)
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------- LoRA

def add_lora(model: SFTModel, rank: int, alpha: float):
    """Wrap the attention projections (query, key, value) with LoRA adapters via `peft`;
    everything else is frozen. Returns the peft `LoraModel` (its `.model` is our SFTModel)."""
    import peft

    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0,
                             target_modules=["query", "key", "value"])
    lora = peft.tuners.lora.LoraModel(model, config, "default")
    for name, p in lora.named_parameters():
        p.requires_grad = "lora_" in name
    return lora


def merged_copy(module) -> SFTModel:
    """A plain SFTModel: LoRA adapters merged into the base weights (W + B A alpha / r)."""
    module = copy.deepcopy(module)
    return module.merge_and_unload() if hasattr(module, "merge_and_unload") else module


# ----------------------------------------------------------------------------- checkpoints

def unique_state(module) -> dict[str, torch.Tensor]:
    """State dict without tied duplicates (safetensors refuses shared tensors)."""
    seen, out = set(), {}
    for name, tensor in module.state_dict().items():
        if tensor.data_ptr() in seen or name.endswith(TIED_NAMES):
            continue
        seen.add(tensor.data_ptr())
        out[name] = tensor.detach().cpu().contiguous()
    return out


def load_unique_state(module, state, source):
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith(TIED_NAMES)]
    if missing or unexpected:
        raise CheckpointError(f"{source}: does not match the model (missing {missing[:1]}, "
                              f"unexpected {unexpected[:1]})")


def optimizer_tensors(optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            out[f"{i}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    return out


def load_optimizer_tensors(optimizer, tensors):
    state_dict = optimizer.state_dict()
    state = {}
    for name, value in tensors.items():
        i, key = name.split(".", 1)
        state.setdefault(int(i), {})[key] = value
    state_dict["state"] = state
    optimizer.load_state_dict(state_dict)


# ----------------------------------------------------------------------------- the training loop

def parameter_groups(module, weight_decay):
    """AdamW groups: decay on matrices (weights, embeddings), none on biases and LayerNorm."""
    decay, no_decay = [], []
    for _, p in module.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def total_steps_for(config: SFTConfig, n_examples: int) -> int:
    if config.epochs is None:
        return config.steps
    return max(1, int(math.ceil(config.epochs * math.ceil(n_examples / config.batch_size))))


# ----------------------------------------------------------------------------- several processes (DDP)

def distributed():
    """(rank, world_size): (0, 1) unless `torch.distributed` was initialised (under torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier():
    import torch.distributed as dist

    if distributed()[1] > 1:
        dist.barrier()


def label_count(labels: torch.Tensor, causal: bool) -> int:
    """Number of labelled positions the loss averages over (causal: labels shift by one)."""
    labels = labels[:, 1:] if causal else labels
    return int((labels != IGNORE_INDEX).sum())


def shard_loss(scores, labels, causal: bool, global_count: int) -> torch.Tensor:
    """Sum of this process's token losses / the whole batch's token count.

    Summed over processes it is the single-process mean loss, and DDP averages gradients
    over processes, so each process backpropagates world_size times this value."""
    if causal:
        scores, labels = scores[:, :-1], labels[:, 1:]
    total = torch.nn.functional.cross_entropy(scores.reshape(-1, scores.size(-1)), labels.reshape(-1),
                                              ignore_index=IGNORE_INDEX, reduction="sum")
    return total / max(global_count, 1)


def rng_tensors(device) -> dict[str, torch.Tensor]:
    """The random state dropout draws from: the CPU generator, and the CUDA one on a GPU."""
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def set_rng_tensors(state, device) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["torch_cuda"], torch.device(device))


def gathered_rng_tensors(device) -> dict[str, torch.Tensor]:
    """Every process's random state, keyed `torch_cpu` (rank 0) and `torch_cpu.rank1`, ..."""
    import torch.distributed as dist

    world = distributed()[1]
    mine = rng_tensors(device)
    if world == 1:
        return mine
    out = {}
    for key, tensor in mine.items():
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather_object(parts, tensor.cpu())
        for r, part in enumerate(parts):
            out[key if r == 0 else f"{key}.rank{r}"] = part
    return out


def my_rng_tensors(saved: dict, rank: int) -> dict[str, torch.Tensor]:
    suffix = "" if rank == 0 else f".rank{rank}"
    return {key: saved[key + suffix] for key in ("torch_cpu", "torch_cuda") if key + suffix in saved}


# ----------------------------------------------------------------------------- the training loop

def train(model: SFTModel, tokenizer, train_examples, eval_examples, config: SFTConfig, out_dir,
          device="cpu", quiet=False, resume=False, task_weights=None, log=print, stop_after=None,
          precision="fp32"):
    """Train, checkpoint, export the best (or final) weights to `out_dir`. Returns the summary.

    Under torchrun (torch.distributed initialised) every process builds the same global batch
    and trains on its share of the rows (DDP averages the gradients); only rank 0 writes.
    precision: "fp32", or "bf16" (autocast: bfloat16 matmuls, float32 weights and optimizer).
    Ctrl-C (SIGINT) or SIGTERM: the current step finishes, a checkpoint is written, and the
    summary is {"interrupted_at": step, "checkpoint": path}.
    stop_after: end the run after that step as if killed (tests of --resume use it).
    """
    from tqdm import tqdm

    from shared.interrupt import StopRequest

    out_dir = Path(out_dir)
    objective = config.objective
    causal = objective == "clm"
    rank, world = distributed()
    is_main = rank == 0
    if not is_main:
        log, quiet = (lambda *a, **k: None), True
    total_steps = total_steps_for(config, len(train_examples))
    if not resume and latest_checkpoint(out_dir) is not None:
        raise SftrlError(f"--out: {out_dir} already holds checkpoints; pass --resume to continue "
                         "that run, or choose another directory")
    if world > config.batch_size:
        raise SftrlError(f"--batch-size: {config.batch_size} is smaller than the {world} processes; "
                         "the batch is the global batch, split between them")
    torch.manual_seed(config.seed + rank)  # dropout: a different stream per process
    model.to(device).train()
    module = add_lora(model, config.lora_rank, config.lora_alpha) if config.lora_rank else model
    trainable = [p for p in module.parameters() if p.requires_grad]
    n_trainable, n_total = sum(p.numel() for p in trainable), sum(p.numel() for p in module.parameters())
    log(f"trainable parameters: {n_trainable:,} of {n_total:,} ({100 * n_trainable / n_total:.2f}%)")
    optimizer = torch.optim.AdamW(parameter_groups(module, config.weight_decay), lr=config.lr,
                                  betas=(0.9, 0.999), eps=1e-8)
    state = dict(step=0, epoch=0, batch_in_epoch=0, best_eval_loss=None, evals_since_best=0,
                 tokens=0, stopped_early=False)
    best_state = None
    checkpoints = out_dir / "checkpoints"
    metrics_path = out_dir / "metrics.jsonl"
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")

    # ---- resume or start fresh
    if resume:
        ckpt = latest_checkpoint(out_dir)
        if ckpt is None:
            raise SftrlError(f"--resume: no checkpoint in {checkpoints} to resume from")
        load_unique_state(module, load_file(str(ckpt / "model.safetensors")), ckpt)
        load_optimizer_tensors(optimizer, load_file(str(ckpt / "optimizer.safetensors")))
        saved = json.loads((ckpt / "trainer_state.json").read_text())
        rng = my_rng_tensors(load_file(str(ckpt / "rng.safetensors")), rank)
        if saved.get("world_size", 1) != world or "torch_cpu" not in rng:
            log(f"warning: {ckpt} was written by {saved.get('world_size', 1)} process(es), this run has "
                f"{world}: the weights continue exactly, dropout draws do not")
            rng = my_rng_tensors(load_file(str(ckpt / "rng.safetensors")), 0)
        set_rng_tensors(rng, device)
        state.update(saved["state"])
        if (ckpt / "best.safetensors").exists():
            best_state = load_file(str(ckpt / "best.safetensors"))
        if is_main:
            truncate_jsonl(metrics_path, "step", state["step"])  # drop what was logged after the checkpoint
        log(f"resumed from {ckpt} at step {state['step']}")
    elif is_main:
        truncate_jsonl(metrics_path, "step", 0)  # a run killed before its first checkpoint starts over
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    ddp = module
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(module, device_ids=[torch.device(device).index]
                                      if torch.device(device).type == "cuda" else None)

    def log_metrics(values: dict):
        if not is_main:
            return
        append_jsonl(metrics_path, {"step": state["step"], **values})
        for key, value in values.items():
            writer.add_scalar(key, value, state["step"])

    def checkpoint():
        """Every process takes part (the random states are gathered); rank 0 writes the folder."""
        rng = gathered_rng_tensors(device)
        path = checkpoints / f"step-{state['step']}"
        if is_main:
            files = {
                "model.safetensors": save(unique_state(module)),
                "optimizer.safetensors": save(optimizer_tensors(optimizer)),
                "rng.safetensors": save({k: v.cpu().contiguous() for k, v in rng.items()}),
                "trainer_state.json": json.dumps({"state": state, "config": config.to_dict(),
                                                  "world_size": world}, indent=2).encode(),
            }
            if best_state is not None:
                files["best.safetensors"] = save(best_state)
            write_checkpoint(path, files, config.keep_checkpoints)
        barrier()
        return path

    def stop_with(problem: str):
        last = latest_checkpoint(out_dir)
        raise SftrlError(f"step {state['step']}: {problem}; stopped, nothing exported. Last good checkpoint: "
                         f"{last if last else 'none (no checkpoint was written yet)'}")

    writer = SummaryWriter(out_dir, purge_step=state["step"] + 1 if resume else None) if is_main else None
    plan = plan_epoch([len(e.input_ids) for e in train_examples], [e.task for e in train_examples],
                      config.batch_size, config.seed, state["epoch"], task_weights)
    bar = tqdm(total=total_steps, initial=state["step"], disable=quiet, desc="sft", unit="step",
               dynamic_ncols=True)
    started, tokens_at_start = time.perf_counter(), state["tokens"]
    interrupted = None
    saved_at = None  # the step of the last checkpoint written by this process

    with StopRequest() as stop:
        while state["step"] < total_steps:
            # ---- next batch of the epoch plan (a new plan when the epoch is used up)
            if state["batch_in_epoch"] >= len(plan):
                state["epoch"] += 1
                state["batch_in_epoch"] = 0
                plan = plan_epoch([len(e.input_ids) for e in train_examples], [e.task for e in train_examples],
                                  config.batch_size, config.seed, state["epoch"], task_weights)
            indices = plan[state["batch_in_epoch"]]
            state["batch_in_epoch"] += 1
            state["step"] += 1
            step = state["step"]
            batch = make_batch(train_examples, indices, tokenizer, objective,
                               np.random.default_rng([config.seed, step]), device, config.mlm_probability)

            # ---- forward, backward, clip, step
            lr = lr_at(step, config, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if world == 1:
                with autocast:
                    scores = module(batch["input_ids"], batch["attention_mask"])
                loss = lm_loss(scores.float(), batch["labels"], causal)
                loss_to_backward = loss
            else:  # this process's rows of the global batch; the loss over the global token count
                count = label_count(batch["labels"], causal)
                mine = {k: v[rank::world] for k, v in batch.items()}
                with autocast:
                    scores = ddp(mine["input_ids"], mine["attention_mask"])
                shard = shard_loss(scores.float(), mine["labels"], causal, count)
                loss = all_reduce_sum(shard)          # = the mean loss of the global batch
                loss_to_backward = shard * world      # DDP divides the summed gradients by world
            if not torch.isfinite(loss):
                stop_with(f"the loss is {loss.item()}")
            loss_to_backward.backward()
            max_norm = config.max_grad_norm if config.max_grad_norm > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, max_norm))
            if not math.isfinite(grad_norm):
                stop_with(f"the gradient norm is {grad_norm}")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            # ---- log
            state["tokens"] += int(batch["attention_mask"].sum())
            elapsed = time.perf_counter() - started
            tokens_per_s = (state["tokens"] - tokens_at_start) / max(elapsed, 1e-9)
            log_metrics({"train/loss": loss.item(), "train/learning_rate": lr, "train/grad_norm": grad_norm,
                         "train/tokens_per_s": tokens_per_s})
            bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens_per_s:,.0f}")
            bar.update(1)

            # ---- evaluate (every process, on the plain module: the same numbers everywhere), keep the best
            if eval_examples and (step % config.eval_every == 0 or step == total_steps):
                with autocast:
                    metrics = evaluate(module, eval_examples, tokenizer, objective, config.seed,
                                       config.batch_size, device, config.mlm_probability)
                log_metrics(metrics)
                if state["best_eval_loss"] is None or metrics["eval/loss"] < state["best_eval_loss"]:
                    state["best_eval_loss"] = metrics["eval/loss"]
                    state["evals_since_best"] = 0
                    best_state = unique_state(module)
                else:
                    state["evals_since_best"] += 1
                if config.early_stopping_patience and state["evals_since_best"] >= config.early_stopping_patience:
                    state["stopped_early"] = True
                    log(f"early stopping at step {step}: no better eval/loss in "
                        f"{config.early_stopping_patience} evaluations")
                    break

            if config.save_every and step % config.save_every == 0:
                checkpoint()
                saved_at = step
            if stop_after is not None and step >= stop_after:
                interrupted = {"interrupted_at": step}
                break
            requested = stop.requested
            if world > 1:  # stop together, or the others would wait for this process forever
                requested = bool(all_reduce_sum(torch.tensor(int(requested), device=device)))
            if requested and step < total_steps:
                path = checkpoint() if saved_at != step else checkpoints / f"step-{step}"
                interrupted = {"interrupted_at": step, "checkpoint": str(path)}
                break
    bar.close()
    if writer is not None:
        writer.flush()
    if interrupted is not None:
        if writer is not None:
            writer.close()
        return interrupted
    if saved_at != state["step"]:
        checkpoint()  # the final one

    # ---- export (rank 0): the best weights (held-out loss) if there was an evaluation, else the last
    if best_state is not None:
        load_unique_state(module, best_state, "best weights")
    final = {}
    summary = {"step": state["step"], "total_steps": total_steps, "stopped_early": state["stopped_early"],
               "best_eval_loss": state["best_eval_loss"], "metrics": final}
    if is_main:
        export = merged_copy(module).eval()
        save_pretrained(export, out_dir)
        tokenizer.save_pretrained(out_dir, export.config.max_position_embeddings,
                                  generates=export.config.is_causal)
        if eval_examples:
            final.update(evaluate(export, eval_examples, tokenizer, objective, config.seed, config.batch_size,
                                  device, config.mlm_probability))
            if causal:
                final.update(task_rewards(export, eval_examples, tokenizer, 64, device))
            log_metrics({f"final/{k[len('eval/'):]}": v for k, v in final.items()})
        writer.close()
        summary.update({
            "trainable_parameters": n_trainable, "total_parameters": n_total,
            "train_seconds": round(time.perf_counter() - started, 2), "processes": world,
            "precision": precision, "config": config.to_dict(), "model_config": export.config.to_dict(),
        })
        atomic_write_text(out_dir / "trainer_state.json", json.dumps(summary, indent=2) + "\n")
    barrier()
    return summary
