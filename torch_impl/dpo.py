"""Direct preference optimisation in PyTorch (Rafailov et al. 2023).

DPO trains the policy on preference pairs (x, y_c chosen, y_r rejected) directly, with no reward
model and no sampling: the KL-regularised RL objective's optimal policy is pi* ~ ref exp(r / beta),
so a reward is implied by any policy, r(x, y) = beta log(pi(y|x) / ref(y|x)) (+ a term of x
alone), and the Bradley-Terry likelihood of the preferences under that reward is the loss:

    L = -mean log sigmoid(beta [(log pi(y_c|x) - log ref(y_c|x)) - (log pi(y_r|x) - log ref(y_r|x))])

log pi(y|x) is the summed log-probability of the completion's tokens (completion-only, as SFT's
loss); ref is the SFT model, frozen: its log-probs are computed once, before training (TRL's
`precompute_ref_log_probs`). Dropout is off in the policy (TRL's `disable_dropout`), so at step 0
the policy is the reference and every implicit reward is 0.

The run is the SFT trainer's (`torch_impl.sft.SFTRun` and its loop): the AdamW schedule, gradient
clipping, the NaN guard, checkpoints that resume bit for bit, Ctrl-C, the best held-out weights and
the export. `DPORun` changes the data (pairs), the step (the DPO loss) and the evaluation
(held-out pairs: loss, implicit-reward accuracy and margin).

Pairs come from a file (the built-in `preference` data) or from the policy itself
(`pairs_from_samples`): n sampled completions of each prompt, ranked by a verifier; the best and
the worst make a pair -- preference data without humans.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from shared.config import DPOConfig
from shared.constants import IGNORE_INDEX
from shared.data import collate, encode_sft
from shared.errors import SftrlError
from shared.generation import completion_ids, gumbel_noise, prompt_batches
from shared.random_streams import generator
from shared.rewards import score_all
from torch_impl import losses
from torch_impl.data import SFTDataset
from torch_impl.generate import generate
from torch_impl.model import SFTModel, at_least_float32
from torch_impl.sft import SFTRun, check_out_dir, run_loop



# ----------------------------------------------------------------------------- data: pairs

@dataclass
class Pair:
    """One encoded preference pair: `[CLS] prompt [SEP] completion [SEP]` for each side, labels on
    the completion (as `encode_sft`); ref_logps: log ref(y|x) of (chosen, rejected)."""
    chosen_ids: list[int]
    chosen_labels: list[int]
    rejected_ids: list[int]
    rejected_labels: list[int]
    task: str | None = None
    ref_logps: tuple[float, float] = (0.0, 0.0)

    @property
    def input_ids(self) -> list[int]:
        """The longer side: what the length-bucketing sampler sorts by."""
        return max(self.chosen_ids, self.rejected_ids, key=len)


def encode_pairs(records, tokenizer, max_length: int) -> tuple[list[Pair], int]:
    """Preference records (prompt, chosen, rejected) -> Pairs. Returns (pairs, number truncated)."""
    pairs, truncated = [], 0
    for r in records:
        chosen_ids, chosen_labels, cut_chosen = encode_sft(tokenizer, r["prompt"], r["chosen"], max_length)
        rejected_ids, rejected_labels, cut_rejected = encode_sft(tokenizer, r["prompt"], r["rejected"], max_length)
        pairs.append(Pair(chosen_ids, chosen_labels, rejected_ids, rejected_labels, r.get("task")))
        truncated += cut_chosen or cut_rejected
    return pairs, truncated


def collate_pairs(pairs: list[Pair], pad_id: int) -> dict:
    """The B chosen rows, then the B rejected rows, padded together: one forward scores both
    (TRL's concatenated forward). input_ids, attention_mask, labels (2B, T); ref_logps (2B,)."""
    batch = collate([p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs], pad_id,
                    labels=[p.chosen_labels for p in pairs] + [p.rejected_labels for p in pairs])
    batch["ref_logps"] = np.array([p.ref_logps[0] for p in pairs] + [p.ref_logps[1] for p in pairs], np.float32)
    return batch


def pair_loader(pairs, tokenizer, **batching) -> DataLoader:
    """A DataLoader of pairs, batched as `batching` says (see torch_impl.data.data_loader)."""
    return DataLoader(SFTDataset(pairs), collate_fn=functools.partial(collate_pairs, pad_id=tokenizer.pad_id),
                      generator=torch.Generator(), **batching)


def completion_logps(model: SFTModel, input_ids, attention_mask, labels):
    """log pi(y|x) = sum_t log pi(y_t | x, y_<t) over the labelled (completion) tokens, per row: (B,).
    The LM head runs on the labelled positions only (`labelled_logits`)."""
    hidden_states, _, _ = model.backbone(input_ids, attention_mask=attention_mask)
    logits, targets = model.labelled_logits(hidden_states, labels)          # (N, V), (N,)
    token_logps = -losses.token_nll(at_least_float32(logits), targets)      # (N,), row-major order
    shifted = labels[:, 1:]                                                 # (B, T-1): t scores label t + 1
    rows = (shifted != IGNORE_INDEX).nonzero()[:, 0]                        # (N,) the row of each
    return torch.zeros(len(input_ids), dtype=token_logps.dtype, device=token_logps.device).index_add(
        0, rows, token_logps)


@torch.no_grad()
def add_reference_logps(reference: SFTModel, pairs: list[Pair], tokenizer, batch_size: int, device) -> None:
    """log ref(y_c|x) and log ref(y_r|x) of every pair, once, into pair.ref_logps."""
    reference.eval()
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        batch = {k: torch.as_tensor(v, device=device) for k, v in collate_pairs(chunk, tokenizer.pad_id).items()}
        logps = completion_logps(reference, batch["input_ids"], batch["attention_mask"], batch["labels"]).tolist()
        for i, pair in enumerate(chunk):
            pair.ref_logps = (logps[i], logps[len(chunk) + i])


def reward_statistics(chosen_rewards, rejected_rewards, prefix: str) -> dict:
    """TRL's names: rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins (means)."""
    return {f"{prefix}chosen": float(chosen_rewards.mean()), f"{prefix}rejected": float(rejected_rewards.mean()),
            f"{prefix}accuracies": float((chosen_rewards > rejected_rewards).float().mean()),
            f"{prefix}margins": float((chosen_rewards - rejected_rewards).mean())}


# ----------------------------------------------------------------------------- pairs from the policy's own samples

@torch.no_grad()
def pairs_from_samples(model: SFTModel, tokenizer, records, n: int, reward_fn, max_new_tokens: int, seed: int,
                       batch_size: int = 64) -> tuple[list[dict], dict]:
    """n completions of each prompt sampled from the model (temperature 1; Gumbel noise per
    (seed, row) of the stream `dpo_sampling`, so the pairs are a pure function of the seed), scored by reward_fn(prompt,
    completion, reference). The best and the worst of each prompt become (chosen, rejected); a
    prompt whose samples all score alike gives no pair. Returns (preference records, statistics)."""
    prompts = [r["prompt"] for r in records for _ in range(n)]
    room = model.config.max_position_embeddings - max_new_tokens
    texts = []
    for k, batch in enumerate(prompt_batches(tokenizer, prompts, room, batch_size)):
        rows = range(k * batch_size, k * batch_size + len(batch["input_ids"]))
        noise = np.stack([gumbel_noise(generator("dpo_sampling", seed, i), (max_new_tokens, model.config.vocab_size))
                          for i in rows])
        new = generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens, do_sample=True,
                       eos_id=tokenizer.sep_id, noise=noise)
        texts += [tokenizer.decode(completion_ids(row, tokenizer.sep_id)) for row in new.tolist()]
    scores = np.array(score_all(reward_fn, prompts, texts, [r.get("reference") for r in records for _ in range(n)]))
    pairs = []
    for i, r in enumerate(records):
        group = scores[i * n:(i + 1) * n]
        best, worst = int(np.argmax(group)), int(np.argmin(group))
        if group[best] > group[worst]:
            pairs.append({"prompt": r["prompt"], "chosen": texts[i * n + best], "rejected": texts[i * n + worst],
                          **({"task": r["task"]} if r.get("task") else {}),
                          "chosen_score": float(group[best]), "rejected_score": float(group[worst])})
    stats = {"prompts": len(records), "samples": len(prompts), "pairs": len(pairs),
             "mean_sample_score": float(scores.mean())}
    return pairs, stats


# ----------------------------------------------------------------------------- the run

class DPORun(SFTRun):
    """SFTRun with DPO's data, step and evaluation. train_examples / eval_examples are Pairs whose
    ref_logps are filled in (`add_reference_logps`)."""

    def __init__(self, model: SFTModel, tokenizer, train_pairs, eval_pairs, config: DPOConfig, out_dir, device,
                 quiet, log):
        super().__init__(model, tokenizer, train_pairs, eval_pairs, config, out_dir, device, quiet, None, log,
                         "fp32")
        for module in self.module.modules():  # no dropout: at step 0 the policy is the reference
            if isinstance(module, nn.Dropout):
                module.p = 0.0

    def loader(self, pairs, **batching):
        return pair_loader(pairs, self.tokenizer, **batching)

    def dpo_loss(self, model, batch):
        """(loss, chosen_rewards, rejected_rewards) of a batch of pairs (chosen rows, then rejected)."""
        B = len(batch["input_ids"]) // 2
        logps = completion_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])  # (2B,)
        ref_logps = batch["ref_logps"].to(logps.dtype)
        return losses.dpo_loss(logps[:B], logps[B:], ref_logps[:B], ref_logps[B:], self.config.beta)

    def step(self, batch) -> tuple[float, float, float]:
        """One optimizer step of the DPO loss. Returns (loss, gradient norm, learning rate)."""
        lr = self.set_learning_rate()
        loss, chosen_rewards, rejected_rewards = self.dpo_loss(self.module, batch)
        grad_norm = self.backward_and_step(loss, loss, batch)
        self.step_metrics = reward_statistics(chosen_rewards, rejected_rewards, "rewards/")
        return loss.item(), grad_norm, lr

    @torch.no_grad()
    def held_out_metrics(self, model) -> dict:
        """eval/loss (the DPO loss), eval/rewards/{chosen, rejected, accuracies, margins} over the held-out pairs."""
        total, chosen, rejected = 0.0, [], []
        for padded in self.loader(self.eval_examples, batch_size=self.config.batch_size):
            batch = {k: torch.as_tensor(v, device=self.device) for k, v in padded.items()}
            loss, c, r = self.dpo_loss(model, batch)
            total += float(loss) * len(c)
            chosen.append(c)
            rejected.append(r)
        chosen, rejected = torch.cat(chosen), torch.cat(rejected)
        return {"eval/loss": total / len(chosen), **reward_statistics(chosen, rejected, "eval/rewards/")}

    def final_metrics(self, export) -> dict:
        return self.held_out_metrics(export)


def train(model: SFTModel, reference: SFTModel, tokenizer, train_pairs, eval_pairs, config: DPOConfig, out_dir,
          device="cpu", quiet=False, resume=False, log=print, stop_after=None) -> dict:
    """DPO from `model` (the policy, trained) against `reference` (frozen; the same SFT weights).
    Checkpoints, resume, Ctrl-C and the export are the SFT trainer's (`torch_impl.sft.train`)."""
    from pathlib import Path

    from torch_impl.distributed import distributed

    if distributed()[1] > 1:
        raise SftrlError("sftrl dpo: one process (under torchrun, use sftrl sft for DDP)")
    check_out_dir(Path(out_dir), resume)
    for pairs in (train_pairs, eval_pairs):
        add_reference_logps(reference, pairs, tokenizer, config.batch_size, device)
    run = DPORun(model, tokenizer, train_pairs, eval_pairs, config, out_dir, device, quiet, log)
    return run_loop(run, resume, stop_after, "dpo")
