"""The bookkeeping of an RL run around `tf_impl.ppo.PPOTrainer`'s math: the models in (policy and
frozen reference from the SFT folder) and out (the exported policy), the prompts of each
iteration, metrics.jsonl and TensorBoard, checkpoints and resume, Ctrl-C.

Reliability: Ctrl-C (SIGINT) or SIGTERM finishes the current iteration, writes a checkpoint and
returns; a run killed at any moment resumes from its newest complete checkpoint to the same final
weights, bit for bit (every random draw is a named stream of `shared.random_streams`, a pure
function of the seed and the iteration); a loss or gradient norm that is not finite stops the run
before anything else is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from shared.config import PPOConfig, architecture_of, load_model_config
from shared.constants import LORA_TARGETS_BY_ARCHITECTURE
from shared.data import encode_prompt
from shared.errors import CheckpointError, SftrlError
from shared.interrupt import StopRequest
from shared.io import append_jsonl, atomic_write_bytes, atomic_write_text, latest_checkpoint, truncate_jsonl, \
    write_checkpoint
from shared.progress import progress_bar
from shared.random_streams import generator
from shared.tensorboard import SummaryWriter
from tf_impl.architectures import build_model
from tf_impl.convert import assign_numpy_state_dict, read_model_weights, to_numpy_state_dict
from tf_impl.lora import enable_lora, merged_state_dict
from tf_impl.model import LanguageModel
from tf_impl.ppo import NonFiniteLossError, PPOTrainer


# ----------------------------------------------------------------------------- models in and out

def load_policy_and_reference(sft_dir, dtype=None, lora=(0, 0.0), log=print,
                              with_value_head=True, lora_embeddings=False) -> tuple[LanguageModel, LanguageModel]:
    """The policy (with a zero-initialised value head: PPO's critic; with_value_head=False for the
    critic-free algorithms) and the frozen reference, both from the SFT checkpoint (`config.json`
    + `model.safetensors`, written by PyTorch, or any folder `tf_impl.convert.load_pretrained` reads:
    BERT, GPT-2, Llama, Qwen2, Mistral).

    dtype: a Keras dtype policy, e.g. "mixed_bfloat16" (float32 variables, bfloat16 compute).
    lora: (rank, alpha) of LoRA adapters on the policy (rank 0: none); lora_embeddings: its
    embedding layer(s) train in full beside them (`tf_impl.lora.enable_lora`).
    Called inside `strategy.scope()`, the variables are mirrored on every replica."""
    sft_dir = Path(sft_dir)
    try:
        config = load_model_config(sft_dir / "config.json")
    except SftrlError as e:
        raise CheckpointError(f"--policy: {e}") from None
    if not config.is_causal:
        raise CheckpointError(f"--policy {sft_dir}: a bidirectional (masked-LM) model cannot generate; "
                              "train the SFT model with --objective clm")
    weights = read_model_weights(sft_dir, config)  # read once, assigned to both models
    policy = build_model(config, with_value_head=with_value_head, dtype=dtype)
    value_head = {k: v for k, v in to_numpy_state_dict(policy).items() if k.startswith("value_head.")}
    assign_numpy_state_dict(policy, {**weights, **value_head}, str(sft_dir))
    reference = build_model(config, dtype=dtype)
    assign_numpy_state_dict(reference, weights, str(sft_dir))
    reference.trainable = False
    rank, alpha = lora
    if rank:
        trainable = enable_lora(policy, rank, alpha, lora_embeddings)
        total = sum(int(np.prod(v.shape)) for v in policy.weights)
        log(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%): LoRA adapters "
            f"of rank {rank} on {'/'.join(LORA_TARGETS_BY_ARCHITECTURE[architecture_of(config)])}"
            + (", the embeddings in full" if lora_embeddings else "")
            + (", and the value head" if with_value_head else ""))
    return policy, reference


def export_policy(policy: LanguageModel, tokenizer, out_dir) -> None:
    """The policy without its value head, as a folder `torch_impl.checkpoint.load_pretrained` and
    `transformers` read: config.json, model.safetensors and the tokenizer files
    (`Tokenizer.save_pretrained`). The weights are the float32 variables, whatever the compute
    dtype was; LoRA adapters are merged into their layers (a plain model)."""
    out_dir = Path(out_dir)
    state = {k: v for k, v in merged_state_dict(policy).items() if not k.startswith("value_head.")}
    atomic_write_bytes(out_dir / "model.safetensors", save(state, metadata={"format": "pt"}))
    policy.config.to_json_file(out_dir / "config.json")
    tokenizer.save_pretrained(out_dir, policy.config.max_position_embeddings, generates=True)


# ----------------------------------------------------------------------------- prompts

def prompts_for(iteration, records, config: PPOConfig):
    """The batch of prompts of an iteration: a pure function of (seed, iteration), the stream
    `prompt_order`. With groups (grpo, rloo): batch_size / group_size prompts, each group_size
    times in a row (a group)."""
    rng = generator("prompt_order", config.seed, iteration)
    n = config.batch_size // config.samples_per_prompt
    idx = rng.choice(len(records), size=n, replace=len(records) < n)
    return [records[i] for i in idx for _ in range(config.samples_per_prompt)]


def prompt_length_of(records, tokenizer, model_config, config: PPOConfig) -> int:
    """The longest encoded prompt of the records: every rollout is left-padded to it, so the
    traced steps see one shape."""
    room = model_config.max_position_embeddings - config.max_new_tokens
    return max(len(encode_prompt(tokenizer, r["prompt"], room)[0]) for r in records)


# ----------------------------------------------------------------------------- the run's files

class RLRun:
    """The writing side of a run: metrics.jsonl, TensorBoard, checkpoints and the export. The
    chief writes; the other workers of a multi-worker run train and write nothing."""

    def __init__(self, trainer: PPOTrainer, out_dir, is_chief: bool):
        self.trainer, self.out_dir, self.is_chief = trainer, Path(out_dir), is_chief
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.writer = None

    def start(self, resume: bool) -> int:
        """Restore the newest complete checkpoint (resume) or check there is none; open the logs.
        What a killed run logged after its last checkpoint (or, with no checkpoint, at all) is
        dropped: those iterations run again and are logged again. Returns the last iteration done."""
        ckpt = latest_checkpoint(self.out_dir)
        if not resume and ckpt is not None:
            raise SftrlError(f"--out: {self.out_dir} already holds checkpoints; pass --resume to continue "
                             "that run, or choose another directory")
        if resume and ckpt is None:
            raise SftrlError(f"--resume: no checkpoint in {self.out_dir / 'checkpoints'} to resume from")
        start = self.trainer.restore(ckpt) if resume else 0
        if resume:
            self.trainer.log(f"resumed from {ckpt} at iteration {start}")
        if self.is_chief:
            truncate_jsonl(self.metrics_path, "iteration", start)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(self.out_dir, purge_step=start + 1 if resume else None)
        return start

    def log_metrics(self, iteration, values):
        if self.is_chief:
            append_jsonl(self.metrics_path, {"iteration": iteration, **values})
            for key, value in values.items():
                self.writer.add_scalar(key, value, iteration)

    def checkpoint(self, iteration):
        path = self.out_dir / "checkpoints" / f"iter-{iteration}"
        if self.is_chief:
            write_checkpoint(path, self.trainer.checkpoint_files(iteration), keep=2)
        return path

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def export(self) -> dict:
        """The final policy (without its value head) and the run's summary."""
        trainer = self.trainer
        summary = {"iterations": trainer.config.iterations, "config": trainer.config.to_dict(),
                   "kl_coef": float(trainer.kl_controller.value)}
        if self.is_chief:
            export_policy(trainer.policy, trainer.tokenizer, self.out_dir)
            self.close()
            atomic_write_text(self.out_dir / "trainer_state.json", json.dumps(summary, indent=2) + "\n")
        return summary


# ----------------------------------------------------------------------------- the loop

def train(trainer: PPOTrainer, records, out_dir, *, resume=False, quiet=False, sample_every=10, stop_after=None,
          is_chief=True):
    """Run the trainer's iterations on prompts drawn from `records`, checkpoint every save_every
    iterations, export the final policy to out_dir; returns the run's summary.

    On SIGINT/SIGTERM: finish the iteration, write its checkpoint and return
    {"interrupted_at": N, "checkpoint": path} (nothing exported). `stop_after` stops the same way
    but without the extra checkpoint, as a crash would (for tests). A non-finite loss raises
    SftrlError naming the last good checkpoint; nothing is written after it. is_chief=False
    (another worker of a multi-worker run) trains but writes nothing.
    """
    config = trainer.config
    if trainer.prompt_length is None:
        trainer.prompt_length = prompt_length_of(records, trainer.tokenizer, trainer.policy.config, config)
    run = RLRun(trainer, out_dir, is_chief)
    start = run.start(resume)
    bar = progress_bar(config.iterations, config.algorithm, "iter", initial=start, quiet=quiet)
    try:
        with StopRequest() as stop:
            for iteration in range(start + 1, config.iterations + 1):
                batch = prompts_for(iteration, records, config)
                metrics, rollout = trainer.iteration(batch, iteration)
                run.log_metrics(iteration, metrics)
                bar.set_postfix(score=f"{metrics['objective/scores']:.3f}", kl=f"{metrics['objective/kl']:.3f}")
                bar.update(1)
                if not quiet and sample_every and iteration % sample_every == 0:
                    for r, text, score in list(zip(batch, rollout.completions, rollout.scores))[:2]:
                        bar.write(f"  [{iteration}] {r['prompt']!r} -> {text!r}  (reward {score:.2f})")
                saved = config.save_every and iteration % config.save_every == 0
                path = run.checkpoint(iteration) if saved else None
                if stop_after is not None and iteration >= stop_after:  # as a crash would: no extra checkpoint
                    return {"interrupted_at": iteration}
                if stop.requested:
                    return {"interrupted_at": iteration, "checkpoint": str(path or run.checkpoint(iteration))}
            # Training is over: a stop request from here on lets these few writes finish.
            bar.close()
            if not (config.save_every and config.iterations % config.save_every == 0):
                run.checkpoint(config.iterations)
            return run.export()
    except NonFiniteLossError as e:
        raise SftrlError(f"{e}; stopped. Last good checkpoint: {latest_checkpoint(out_dir) or 'none'}") from None
    finally:
        bar.close()
        run.close()
