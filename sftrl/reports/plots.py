"""The pipeline report's figures, each a PNG in the run directory: the training curves, the SFT
model's attention on one example, the reliability diagram of next-token predictions."""

from __future__ import annotations

import numpy as np

from sftrl.reports.common import pyplot, read_jsonl


def curves(out):
    """report_curves.png: SFT loss (train, held-out), RL reward and KL per iteration."""
    plt = pyplot()
    sft = read_jsonl(out / "sft" / "metrics.jsonl")
    ppo = read_jsonl(out / "ppo" / "metrics.jsonl")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    train = [(r["step"], r["train/loss"]) for r in sft if "train/loss" in r]
    held = [(r["step"], r["eval/loss"]) for r in sft if "eval/loss" in r]
    axes[0].plot(*zip(*train), lw=0.8, label="train")
    if held:
        axes[0].plot(*zip(*held), "o-", label="held-out")
    axes[0].set(title="SFT loss (PyTorch)", xlabel="step", ylabel="cross-entropy")
    axes[0].legend()
    axes[1].plot([r["iteration"] for r in ppo], [r["objective/scores"] for r in ppo])
    axes[1].set(title="PPO reward (TensorFlow)", xlabel="iteration", ylabel="mean score of samples")
    axes[2].plot([r["iteration"] for r in ppo], [r["objective/kl"] for r in ppo], color="tab:red")
    axes[2].set(title="KL(policy || SFT) per completion", xlabel="iteration", ylabel="nats")
    fig.tight_layout()
    fig.savefig(out / "report_curves.png", dpi=100)
    plt.close(fig)


def attention_heatmap(out, model, tokenizer, prompt, completion):
    """report_attention.png: each head of the last layer on one prompt and completion."""
    from torch_impl.evaluate import attention_maps

    plt = pyplot()
    weights, tokens = attention_maps(model, tokenizer, prompt, completion)
    heads = weights.shape[0]
    fig, axes = plt.subplots(1, heads, figsize=(3.2 * heads, 3.4))
    for h, ax in enumerate(np.atleast_1d(axes)):
        ax.imshow(weights[h], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"head {h}", fontsize=9)
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=6)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=6)
    fig.suptitle(f"SFT model, last layer: {prompt!r} -> {completion!r}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "report_attention.png", dpi=100)
    plt.close(fig)


def calibration(out, models, tokenizers, prompts, references):
    """report_calibration.png: the reliability diagram of SFT and RL; returns their ECE."""
    from shared.metrics import expected_calibration_error
    from torch_impl.evaluate import next_token_confidences

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    eces = {}
    for name, model, tokenizer in zip(("SFT", "RL"), models, tokenizers):
        confidence, correct = next_token_confidences(model, tokenizer, prompts, references)
        ece, table = expected_calibration_error(confidence, correct, bins=10)
        eces[name] = ece
        filled = [row for row in table if row[2] > 0]
        ax.plot([r[3] for r in filled], [r[4] for r in filled], "o-", label=f"{name} (ECE {ece:.3f})")
    ax.set(xlabel="confidence (top next-token probability)", ylabel="accuracy",
           title="Reliability of next-token predictions")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "report_calibration.png", dpi=100)
    plt.close(fig)
    return eces
