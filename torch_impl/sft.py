"""Supervised fine-tuning (and pretraining) in PyTorch.

The seed documents' loop -- forward, loss, backward, optimizer step, zero_grad -- with what a
practitioner needs around it: dynamic padding and length bucketing, AdamW with linear warm-up
and decay, gradient clipping, task-balanced sampling, held-out evaluation per task with early
stopping, LoRA through `peft`, and checkpoints that resume bit for bit.

    for step in 1..N:
        batch  <- next batch of the DataLoader            (its sampler: shared.data.plan_epoch)
        loss   <- model(input_ids, attention_mask, labels)
        loss.backward(); clip; optimizer.step(); optimizer.zero_grad()
        every eval_every steps: evaluate, keep the best weights
        every save_every steps: checkpoint

`train` is that loop, one screen long; `SFTRun` holds its phases as methods (resume, open_data, next_batch,
step, evaluate_and_keep_best, checkpoint, export). The checkpoint tensors are
`torch_impl.checkpoint`'s, the DDP and random-state helpers `torch_impl.distributed`'s.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from shared import tasks as builtin_tasks
from shared.config import GPT2Config, LlamaConfig, ModelConfig, SFTConfig, architecture_of
from shared.constants import (ADAM_BETAS, ADAM_EPS, BLOCKS, IGNORE_INDEX, LORA_EMBEDDINGS_BY_ARCHITECTURE,
                              LORA_TARGETS_BY_ARCHITECTURE, PEFT_PREFIX)
from shared.errors import SftrlError
from shared.io import (append_jsonl, atomic_write_text, latest_checkpoint, truncate_jsonl,
                       write_checkpoint)
from shared.random_streams import generator, integer_seed
from shared.tensorboard import SummaryWriter
from torch_impl.checkpoint import (load_optimizer_tensors, load_unique_state, optimizer_tensors, save_pretrained,
                                   unique_state)
from torch_impl.data import EpochPlanSampler, data_loader, to_model_batch
from torch_impl.distributed import (all_reduce_sum, barrier, distributed, gathered_rng_tensors, label_count,
                                    my_rng_tensors, set_rng_tensors, shard_loss)
from torch_impl.generate import greedy_completions
from torch_impl.losses import shift_for_next_token, token_nll
from torch_impl.model import LanguageModel



GENERATION_ROOM = 32  # positions beyond the longest example, to generate into (also the rounding step)
MIN_POSITIONS = 64


def default_model_config(tokenizer, examples, objective: str, architecture: str = "bert"):
    """A small model suited to the data: vocabulary from the tokenizer, positions for the longest
    example plus room to generate (a multiple of GENERATION_ROOM, at least MIN_POSITIONS), 2 layers
    of width 128 with 4 heads, in any of the three architectures. The feed-forward layers hold the
    same number of weights in each: 2 x 128 x 512 for BERT's and GPT-2's, 3 x 128 x 344 for
    Llama's SwiGLU (three matrices; 344 ~ 2/3 of 512, as Llama sizes it). GPT-2 and Llama start and end
    sequences with the tokenizer's [CLS] and [SEP] and tie the LM head to the embeddings, as BERT."""
    longest = max(len(e.input_ids) for e in examples)
    positions = max(MIN_POSITIONS, int(math.ceil((longest + GENERATION_ROOM) / GENERATION_ROOM)) * GENERATION_ROOM)
    tokens = dict(bos_token_id=tokenizer.cls_id, eos_token_id=tokenizer.sep_id, pad_token_id=tokenizer.pad_id)
    if architecture == "gpt2":
        return GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=positions, n_embd=128, n_layer=2, n_head=4,
                          n_inner=512, **tokens)
    if architecture == "llama":
        return LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=128, intermediate_size=344,
                           num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=positions,
                           tie_word_embeddings=True, **tokens)
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
    rng = generator("eval_masks", seed)  # the same tokens masked at every evaluation
    sums: dict[str, list[float]] = {}  # task -> [nll sum, correct, count]
    for k, padded in enumerate(data_loader(examples, tokenizer, batch_size=batch_size)):
        indices = range(k * batch_size, k * batch_size + len(padded["input_ids"]))
        batch = to_model_batch(padded, tokenizer, objective, rng, device, mlm_probability)
        logits = model(batch["input_ids"], batch["attention_mask"]).float()
        labels = batch["labels"]
        if objective == "clm":
            logits, labels = shift_for_next_token(logits, labels)
        keep = labels != IGNORE_INDEX
        nll = token_nll(logits, labels)                                     # (B, T), 0 where not kept
        correct = (logits.argmax(-1) == labels) & keep
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


def task_rewards(model, examples, tokenizer, max_length, batch_size=64, max_new_tokens=16):
    """Greedy completions of the built-in task prompts among `examples`, scored: mean exact match
    and partial credit, over all and per task."""
    scored = [e for e in examples if e.prompt is not None and builtin_tasks.is_task_prompt(e.prompt)]
    if not scored:
        return {}
    completions, _ = greedy_completions(model, tokenizer, [e.prompt for e in scored], max_new_tokens, batch_size,
                                        max_prompt_length=max_length)
    exact, partial = builtin_tasks.task_scores([e.prompt for e in scored], completions)
    metrics = {}
    for task in ["all"] + sorted({e.task for e in scored if e.task is not None}):
        chosen = [i for i, e in enumerate(scored) if task in ("all", e.task)]
        prefix = "eval/" if task == "all" else f"eval/{task}/"
        metrics[prefix + "exact_match"] = float(np.mean([exact[i] for i in chosen]))
        metrics[prefix + "partial_credit"] = float(np.mean([partial[i] for i in chosen]))
    return metrics


# ----------------------------------------------------------------------------- LoRA

def lora_module_names(model: LanguageModel) -> list[str]:
    """The full names of the layers that take adapters, in order: the architecture's targets
    (`shared.constants.LORA_TARGETS_BY_ARCHITECTURE`) in every block, as `tf_impl.lora.lora_layers`
    walks them. peft gets these exact names: a short target such as "output.dense" would match every
    name that ends in it (BERT's attention.output.dense too), whatever the table says."""
    architecture = architecture_of(model.config)
    blocks = functools.reduce(getattr, BLOCKS[architecture].split("."), model.backbone)
    names = {module: name for name, module in model.named_modules()}
    return [names[functools.reduce(getattr, target.split("."), block)]
            for block in blocks for target in LORA_TARGETS_BY_ARCHITECTURE[architecture]]


def embedding_modules(model: LanguageModel) -> list[torch.nn.Module]:
    """The modules --lora-embeddings trains in full: the architecture's embedding layer(s) and an
    untied LM head (`shared.constants.LORA_EMBEDDINGS_BY_ARCHITECTURE`), those the model has."""
    paths = LORA_EMBEDDINGS_BY_ARCHITECTURE[architecture_of(model.config)]
    modules = dict(model.named_modules())
    return [modules[path] for path in paths if path in modules]


def add_lora(model: LanguageModel, rank: int, alpha: float, embeddings: bool = False):
    """Wrap every linear layer of every block (`lora_module_names`) with LoRA adapters via `peft`;
    everything else is frozen -- but the embedding layer(s) (`embedding_modules`) with `embeddings`,
    trained in full as peft's `modules_to_save`: they stay plain parameters of our model, so
    checkpoints, the best weights and the merged export (`merge_and_unload`) carry them as they are.
    Returns the peft `LoraModel` (its `.model` is our model)."""
    import peft

    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=lora_module_names(model))
    lora = peft.tuners.lora.LoraModel(model, config, "default")
    for name, p in lora.named_parameters():
        p.requires_grad = "lora_" in name
    for module in embedding_modules(model) if embeddings else []:
        module.requires_grad_(True)
    return lora


def lora_state_dict(lora) -> dict[str, torch.Tensor]:
    """The adapters as `peft` saves them (adapter_model.safetensors): {base_model.model.<layer>.lora_A.weight:
    (r, in), ...lora_B.weight: (out, r)}; `tf_impl.lora.load_lora_state_dict` reads the same names."""
    return {PEFT_PREFIX + name.removeprefix("model.").replace(".default", ""): p.detach()
            for name, p in lora.named_parameters() if "lora_" in name}


def load_lora_state_dict(lora, state: dict) -> None:
    """Set the adapters from `peft`-named tensors (the inverse of `lora_state_dict`)."""
    params = dict(lora.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            module_path, _, leaf = name.removeprefix(PEFT_PREFIX).rpartition(".lora_")
            params[f"model.{module_path}.lora_{leaf.replace('.weight', '.default.weight')}"].copy_(torch.as_tensor(value))


def merged_copy(module) -> LanguageModel:
    """A plain model: LoRA adapters merged into the base weights (W + B A alpha / r)."""
    module = copy.deepcopy(module)
    return module.merge_and_unload() if hasattr(module, "merge_and_unload") else module


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


# ----------------------------------------------------------------------------- the run, phase by phase

class SFTRun:
    """One training run: the model (LoRA-wrapped, DDP-wrapped where asked), its optimizer, the
    loop's state and its logs. Each phase of `train` is a method."""

    def __init__(self, model: LanguageModel, tokenizer, train_examples, eval_examples, config: SFTConfig, out_dir,
                 device, quiet, task_weights, log, precision, compile_model=False):
        self.rank, self.world = distributed()
        self.is_main = self.rank == 0
        self.log, self.quiet = (log, quiet) if self.is_main else ((lambda *a, **k: None), True)
        self.tokenizer, self.train_examples, self.eval_examples = tokenizer, train_examples, eval_examples
        self.config, self.out_dir, self.device, self.precision = config, Path(out_dir), device, precision
        self.task_weights, self.causal = task_weights, config.objective == "clm"
        self.total_steps = total_steps_for(config, len(train_examples))
        torch.manual_seed(integer_seed("dropout", config.seed, self.rank))  # a stream per process
        model.to(device).train()
        self.module = (add_lora(model, config.lora_rank, config.lora_alpha, config.lora_embeddings)
                       if config.lora_rank else model)
        self.trainable = [p for p in self.module.parameters() if p.requires_grad]
        # the training forward: compiled (dynamic shapes: batch lengths vary) or the module itself
        self.forward = torch.compile(self.module, dynamic=True) if compile_model else self.module
        self.n_trainable = sum(p.numel() for p in self.trainable)
        self.n_total = sum(p.numel() for p in self.module.parameters())
        self.log(f"trainable parameters: {self.n_trainable:,} of {self.n_total:,} "
                 f"({100 * self.n_trainable / self.n_total:.2f}%)")
        self.optimizer = torch.optim.AdamW(parameter_groups(self.module, config.weight_decay), lr=config.lr,
                                           betas=ADAM_BETAS, eps=ADAM_EPS)
        self.state = dict(step=0, epoch=0, batch_in_epoch=0, best_eval_loss=None, evals_since_best=0,
                          tokens=0, stopped_early=False)
        self.best_state = None
        self.autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.saved_at = None  # the step of the last checkpoint written by this process
        self.step_metrics = {}  # what a subclass's step logs besides the loss (DPO's rewards/*)

    # ---- resume or start fresh
    def resume(self):
        ckpt = latest_checkpoint(self.out_dir)
        if ckpt is None:
            raise SftrlError(f"--resume: no checkpoint in {self.out_dir / 'checkpoints'} to resume from")
        load_unique_state(self.module, load_file(str(ckpt / "model.safetensors")), ckpt)
        load_optimizer_tensors(self.optimizer, load_file(str(ckpt / "optimizer.safetensors")))
        saved = json.loads((ckpt / "trainer_state.json").read_text())
        rng = my_rng_tensors(load_file(str(ckpt / "rng.safetensors")), self.rank)
        if saved.get("world_size", 1) != self.world or "torch_cpu" not in rng:
            self.log(f"warning: {ckpt} was written by {saved.get('world_size', 1)} process(es), this run has "
                     f"{self.world}: the weights continue exactly, dropout draws do not")
            rng = my_rng_tensors(load_file(str(ckpt / "rng.safetensors")), 0)
        set_rng_tensors(rng, self.device)
        self.state.update(saved["state"])
        if (ckpt / "best.safetensors").exists():
            self.best_state = load_file(str(ckpt / "best.safetensors"))
        if self.is_main:
            truncate_jsonl(self.metrics_path, "step", self.state["step"])  # drop what was logged after it
        self.log(f"resumed from {ckpt} at step {self.state['step']}")

    def open_logs(self, resumed: bool):
        """metrics.jsonl and TensorBoard (rank 0); a resumed run's TensorBoard purges past its step."""
        if not self.is_main:
            self.writer = None
            return
        if not resumed:
            truncate_jsonl(self.metrics_path, "step", 0)  # a run killed before its first checkpoint starts over
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(self.out_dir, purge_step=self.state["step"] + 1 if resumed else None)

    def log_metrics(self, values: dict):
        if not self.is_main:
            return
        append_jsonl(self.metrics_path, {"step": self.state["step"], **values})
        for key, value in values.items():
            self.writer.add_scalar(key, value, self.state["step"])

    # ---- one step: the next batch of the epoch plan, forward, backward, clip, optimizer step
    def open_data(self):
        """The training DataLoader, positioned at the state's (epoch, batch in epoch)."""
        self.sampler = EpochPlanSampler(self.train_examples, self.config.batch_size, self.config.seed,
                                        self.task_weights)
        self.sampler.set_epoch(self.state["epoch"], start=self.state["batch_in_epoch"])
        self.batches = iter(self.loader(self.train_examples, batch_sampler=self.sampler))

    def loader(self, examples, **batching):
        """The DataLoader of these examples (DPO's run: of preference pairs)."""
        return data_loader(examples, self.tokenizer, **batching)

    def next_batch(self):
        state, config = self.state, self.config
        padded = next(self.batches, None)
        if padded is None:  # the epoch is used up: the next one's plan
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
            self.open_data()
            padded = next(self.batches)
        state["batch_in_epoch"] += 1
        state["step"] += 1
        return to_model_batch(padded, self.tokenizer, config.objective,
                              generator("train_masks", config.seed, state["step"]), self.device,
                              config.mlm_probability)

    def step(self, batch) -> tuple[float, float, float]:
        """One optimizer step on the global batch. Returns (loss, gradient norm, learning rate)."""
        lr = self.set_learning_rate()
        if self.world == 1:
            with self.autocast:  # the LM head on the labelled positions only; the loss in float32
                loss = self.forward(batch["input_ids"], batch["attention_mask"], batch["labels"])
            loss_to_backward = loss
        else:  # this process's rows of the global batch; the loss over the global token count
            count = label_count(batch["labels"], self.causal)
            mine = {k: v[self.rank::self.world] for k, v in batch.items()}
            with self.autocast:
                nll_sum = self.ddp(mine["input_ids"], mine["attention_mask"], mine["labels"], reduction="sum")
            shard = shard_loss(nll_sum, count)
            loss = all_reduce_sum(shard)          # = the mean loss of the global batch
            loss_to_backward = shard * self.world  # DDP divides the summed gradients by world
        return loss.item(), self.backward_and_step(loss, loss_to_backward, batch), lr

    def set_learning_rate(self) -> float:
        """The schedule's learning rate at this step, set on every parameter group."""
        lr = lr_at(self.state["step"], self.config, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def backward_and_step(self, loss, loss_to_backward, batch) -> float:
        """The NaN guard, backward, gradient clipping, the optimizer step; returns the gradient
        norm before clipping. Every step's tail, SFT's and DPO's."""
        if not torch.isfinite(loss):
            self.stop_with(f"the loss is {loss.item()}")
        loss_to_backward.backward()
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, max_norm))
        if not math.isfinite(grad_norm):
            self.stop_with(f"the gradient norm is {grad_norm}")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state["tokens"] += int(batch["attention_mask"].sum())
        return grad_norm

    def stop_with(self, problem: str):
        last = latest_checkpoint(self.out_dir)
        raise SftrlError(f"step {self.state['step']}: {problem}; stopped, nothing exported. Last good checkpoint: "
                         f"{last if last else 'none (no checkpoint was written yet)'}")

    # ---- evaluate (every process, on the plain module: the same numbers everywhere), keep the best
    def evaluate_and_keep_best(self) -> bool:
        """Returns True when early stopping ends the run."""
        state, config = self.state, self.config
        with self.autocast:
            metrics = self.held_out_metrics(self.module)
        self.log_metrics(metrics)
        if state["best_eval_loss"] is None or metrics["eval/loss"] < state["best_eval_loss"]:
            state["best_eval_loss"] = metrics["eval/loss"]
            state["evals_since_best"] = 0
            self.best_state = unique_state(self.module)
        else:
            state["evals_since_best"] += 1
        if config.early_stopping_patience and state["evals_since_best"] >= config.early_stopping_patience:
            state["stopped_early"] = True
            self.log(f"early stopping at step {state['step']}: no better eval/loss in "
                     f"{config.early_stopping_patience} evaluations")
            return True
        return False

    def held_out_metrics(self, model) -> dict:
        """The held-out evaluation; "eval/loss" picks the best weights."""
        config = self.config
        return evaluate(model, self.eval_examples, self.tokenizer, config.objective, config.seed, config.batch_size,
                        self.device, config.mlm_probability)

    def final_metrics(self, export) -> dict:
        """What the exported model is evaluated on at the end: held-out loss, and (causal) task rewards."""
        final = self.held_out_metrics(export)
        if self.causal:
            final.update(task_rewards(export, self.eval_examples, self.tokenizer, self.config.max_length))
        return final

    # ---- checkpoint: every process takes part (the random states are gathered); rank 0 writes
    def checkpoint(self):
        rng = gathered_rng_tensors(self.device)
        path = self.out_dir / "checkpoints" / f"step-{self.state['step']}"
        if self.is_main:
            files = {
                "model.safetensors": save(unique_state(self.module)),
                "optimizer.safetensors": save(optimizer_tensors(self.optimizer)),
                "rng.safetensors": save({k: v.cpu().contiguous() for k, v in rng.items()}),
                "trainer_state.json": json.dumps({"state": self.state, "config": self.config.to_dict(),
                                                  "world_size": self.world}, indent=2).encode(),
            }
            if self.best_state is not None:
                files["best.safetensors"] = save(self.best_state)
            write_checkpoint(path, files, self.config.keep_checkpoints)
        barrier()
        self.saved_at = self.state["step"]
        return path

    def wrap_ddp(self):
        """Under torchrun: DDP around the module (it averages the gradients over the processes)."""
        self.ddp = self.module
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            device = torch.device(self.device)
            self.ddp = DistributedDataParallel(self.module, device_ids=[device.index] if device.type == "cuda"
                                               else None)

    def finish(self, interrupted, started) -> dict:
        """Interrupted: the logs closed, the summary {"interrupted_at": ...}. Else the final
        checkpoint (if the last step has none yet) and the export."""
        if self.writer is not None:
            self.writer.flush()
        if interrupted is not None:
            if self.writer is not None:
                self.writer.close()
            return interrupted
        if self.saved_at != self.state["step"]:
            self.checkpoint()  # the final one
        return self.export(started)

    # ---- export (rank 0): the best weights (held-out loss) if there was an evaluation, else the last
    def export(self, started) -> dict:
        if self.best_state is not None:
            load_unique_state(self.module, self.best_state, "best weights")
        config, state, final = self.config, self.state, {}
        summary = {"step": state["step"], "total_steps": self.total_steps, "stopped_early": state["stopped_early"],
                   "best_eval_loss": state["best_eval_loss"], "metrics": final}
        if self.is_main:
            export = merged_copy(self.module).eval()
            save_pretrained(export, self.out_dir)
            self.tokenizer.save_pretrained(self.out_dir, export.config.max_position_embeddings,
                                           generates=export.config.is_causal)
            if self.eval_examples:
                final.update(self.final_metrics(export))
                self.log_metrics({f"final/{k[len('eval/'):]}": v for k, v in final.items()})
            self.writer.close()
            summary.update({
                "trainable_parameters": self.n_trainable, "total_parameters": self.n_total,
                "train_seconds": round(time.perf_counter() - started, 2), "processes": self.world,
                "tokens": state["tokens"],  # real (non-pad) tokens through the model in training
                "precision": self.precision, "config": config.to_dict(), "model_config": export.config.to_dict(),
            })
            atomic_write_text(self.out_dir / "trainer_state.json", json.dumps(summary, indent=2) + "\n")
        barrier()
        return summary


def train(model: LanguageModel, tokenizer, train_examples, eval_examples, config: SFTConfig, out_dir,
          device="cpu", quiet=False, resume=False, task_weights=None, log=print, stop_after=None,
          precision="fp32", compile_model=False):
    """Train, checkpoint, export the best (or final) weights to `out_dir`. Returns the summary.

    Under torchrun (torch.distributed initialised) every process builds the same global batch
    and trains on its share of the rows (DDP averages the gradients); only rank 0 writes.
    precision: "fp32" or "bf16" (autocast); compile_model: the forward through `torch.compile`.
    Ctrl-C (SIGINT) or SIGTERM: the current step finishes, a checkpoint is written, and the
    summary is {"interrupted_at": step, "checkpoint": path}.
    stop_after: end the run after that step as if killed (tests of --resume use it).
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir, resume)
    if distributed()[1] > config.batch_size:
        raise SftrlError(f"--batch-size: {config.batch_size} is smaller than the {distributed()[1]} processes; "
                         "the batch is the global batch, split between them")
    run = SFTRun(model, tokenizer, train_examples, eval_examples, config, out_dir, device, quiet, task_weights,
                 log, precision, compile_model)
    return run_loop(run, resume, stop_after, "sft")


def check_out_dir(out_dir: Path, resume: bool) -> None:
    if not resume and latest_checkpoint(out_dir) is not None:
        raise SftrlError(f"--out: {out_dir} already holds checkpoints; pass --resume to continue "
                         "that run, or choose another directory")


def run_loop(run: SFTRun, resume: bool, stop_after, desc: str) -> dict:
    """The loop of `train`, for any run with SFTRun's phases (DPO's too): resume, then step, log,
    evaluate, checkpoint until the last step, a stop request or early stopping; then finish."""
    from shared.interrupt import StopRequest
    from shared.progress import progress_bar

    if resume:
        run.resume()
    run.open_logs(resumed=resume)
    run.open_data()
    run.wrap_ddp()
    state, config, interrupted = run.state, run.config, None
    bar = progress_bar(run.total_steps, desc, "step", initial=state["step"], quiet=run.quiet)
    started, tokens_at_start = time.perf_counter(), state["tokens"]
    with StopRequest() as stop:
        while state["step"] < run.total_steps:
            loss, grad_norm, lr = run.step(run.next_batch())
            tokens_per_s = (state["tokens"] - tokens_at_start) / max(time.perf_counter() - started, 1e-9)
            run.log_metrics({"train/loss": loss, "train/learning_rate": lr, "train/grad_norm": grad_norm,
                             "train/tokens_per_s": tokens_per_s, **run.step_metrics})
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
            bar.update(1)
            step = state["step"]
            if run.eval_examples and (step % config.eval_every == 0 or step == run.total_steps):
                if run.evaluate_and_keep_best():
                    break
            if config.save_every and step % config.save_every == 0:
                run.checkpoint()
            if stop_after is not None and step >= stop_after:
                interrupted = {"interrupted_at": step}
                break
            requested = stop.requested
            if run.world > 1:  # stop together, or the others would wait for this process forever
                requested = bool(all_reduce_sum(torch.tensor(int(requested), device=run.device)))
            if requested and step < run.total_steps:
                path = run.checkpoint() if run.saved_at != step else run.out_dir / "checkpoints" / f"step-{step}"
                interrupted = {"interrupted_at": step, "checkpoint": str(path)}
                break
    bar.close()
    return run.finish(interrupted, started)
