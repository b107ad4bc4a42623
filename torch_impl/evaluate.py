"""Evaluation of causal models in PyTorch: the same prompts for every model, so rows compare.

Any folder `torch_impl.checkpoint.load_pretrained` reads can be evaluated: the SFT output and
the PPO output (exported from TensorFlow) alike.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from shared.constants import IGNORE_INDEX
from shared.data import collate, encode_prompt, encode_sft
from shared.generation import completion_ids, gumbel_noise, prompt_batches
from shared.random_streams import generator
from torch_impl.generate import generate
from torch_impl.losses import shift_for_next_token, token_nll


def next_token_batches(model, tokenizer, prompts, references, batch_size):
    """Batches of `[CLS] prompt [SEP] reference [SEP]` through the model, shifted once for all
    callers: (logits (B, T-1, V), labels (B, T-1)), the logits at t scoring the token at t + 1,
    labels IGNORE_INDEX on the prompt and the padding."""
    max_length = model.config.max_position_embeddings
    for start in range(0, len(prompts), batch_size):
        encoded = [encode_sft(tokenizer, p, r, max_length) for p, r in
                   zip(prompts[start:start + batch_size], references[start:start + batch_size])]
        batch = collate([e[0] for e in encoded], tokenizer.pad_id, labels=[e[1] for e in encoded])
        logits = model(torch.as_tensor(batch["input_ids"]), torch.as_tensor(batch["attention_mask"])).float()
        yield shift_for_next_token(logits, torch.as_tensor(batch["labels"]))


@torch.no_grad()
def reference_nll(model, tokenizer, prompts, references, batch_size=64):
    """Per-prompt (sum of -log P(reference tokens and final [SEP] | prompt), token count)."""
    model.eval()
    nll, counts = [], []
    for logits, labels in next_token_batches(model, tokenizer, prompts, references, batch_size):
        nll += token_nll(logits, labels).sum(1).tolist()
        counts += (labels != IGNORE_INDEX).sum(1).tolist()
    return np.array(nll), np.array(counts)


@torch.no_grad()
def completion_kls(model, reference_model, tokenizer, prompts, completions_ids, batch_size=64,
                   max_prompt_length=None):
    """Per completion y of its prompt x, two sums over the positions that chose y's tokens:
    sum_t KL(p_model(.|x, y_<t) || p_reference(.|x, y_<t)), exact over the whole vocabulary, and
    sum_t log p_model(y_t|x, y_<t) - log p_reference(y_t|x, y_<t). Returns (kl (N,), log_ratio (N,)).
    Each prompt is `[CLS] prompt [SEP]`, cut as `generate`'s caller cut it (max_prompt_length)."""
    model.eval()
    reference_model.eval()
    room = model.config.max_position_embeddings
    kl_out, log_ratio_out = [], []
    for start in range(0, len(prompts), batch_size):
        chunk = list(zip(prompts[start:start + batch_size], completions_ids[start:start + batch_size]))
        sequences, spans = [], []
        for prompt, ids in chunk:
            cut = room - len(ids) if max_prompt_length is None else min(room - len(ids), max_prompt_length)
            context = encode_prompt(tokenizer, prompt, cut)[0]
            sequences.append(context + list(ids))
            spans.append((len(context) - 1, len(context) - 1 + len(ids)))  # positions that chose the tokens
        batch = collate(sequences, tokenizer.pad_id)
        ids, mask = torch.as_tensor(batch["input_ids"]), torch.as_tensor(batch["attention_mask"])
        logp = F.log_softmax(model(ids, mask).float(), -1)                   # (B, T, V)
        logq = F.log_softmax(reference_model(ids, mask).float(), -1)
        kl = (logp.exp() * (logp - logq)).sum(-1)                           # (B, T)
        chosen = ids[:, 1:, None]                                           # (B, T-1, 1): the token chosen at t
        log_ratio = (logp[:, :-1].gather(-1, chosen) - logq[:, :-1].gather(-1, chosen))[..., 0]  # (B, T-1)
        kl_out += [float(kl[i, a:b].sum()) for i, (a, b) in enumerate(spans)]
        log_ratio_out += [float(log_ratio[i, a:b].sum()) for i, (a, b) in enumerate(spans)]
    return np.array(kl_out), np.array(log_ratio_out)


@torch.no_grad()
def sample_completions(model, tokenizer, prompts, max_new_tokens, samples, seed, batch_size=64):
    """`samples` completions of every prompt drawn from the model at temperature 1, no top-k (as
    the RL rollouts sample), each up to and including [SEP] or max_new_tokens tokens. Sample k of
    prompt i uses the Gumbel noise of (seed, i, k) from the stream `eval_sampling`: the draw does
    not depend on the batching, and every model evaluated with one seed gets the same noise.
    Returns token-id lists, prompt-major (sample k of prompt i is row i * samples + k)."""
    room = model.config.max_position_embeddings - max_new_tokens
    rows = [(i, k) for i in range(len(prompts)) for k in range(samples)]
    token_lists = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        batch = next(prompt_batches(tokenizer, [prompts[i] for i, _ in chunk], room, len(chunk)))
        shape = (max_new_tokens, model.config.vocab_size)
        noise = np.stack([gumbel_noise(generator("eval_sampling", seed, i, k), shape) for i, k in chunk])  # (B, T, V)
        new = generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens, do_sample=True,
                       temperature=1.0, eos_id=tokenizer.sep_id, noise=noise)
        token_lists += [completion_ids(row, tokenizer.sep_id) for row in new.tolist()]
    return token_lists


def mc_sequence_kl(model, reference_model, tokenizer, prompts, max_new_tokens, samples, seed, batch_size=64):
    """Monte-Carlo sequence KL between the models' distributions over completions, per prompt:

        KL(pi || pi_ref)(x) = E_{y ~ pi(.|x)} [log pi(y|x) - log pi_ref(y|x)]                  (log-ratio)
                            = E_{y ~ pi(.|x)} [sum_t KL(pi(.|x, y_<t) || pi_ref(.|x, y_<t))]    (path KL)

    both estimated from the same `samples` completions of each prompt (`sample_completions`).
    The second form replaces each log-ratio term by its expectation given y_<t (the chain rule of
    KL): the same mean, lower variance, never negative. A completion ends at [SEP] or after
    max_new_tokens tokens, so this is the KL of the truncated completion distribution (a lower
    bound on the untruncated one: truncation is a function of y). Returns the per-prompt means
    over its samples, (path KL (N,), log-ratio (N,)), in nats per completion.
    """
    completions = sample_completions(model, tokenizer, prompts, max_new_tokens, samples, seed, batch_size)
    repeated = [p for p in prompts for _ in range(samples)]
    kl, log_ratio = completion_kls(model, reference_model, tokenizer, repeated, completions, batch_size,
                                   model.config.max_position_embeddings - max_new_tokens)
    return kl.reshape(len(prompts), samples).mean(1), log_ratio.reshape(len(prompts), samples).mean(1)


@torch.no_grad()
def next_token_confidences(model, tokenizer, prompts, references, batch_size=64):
    """For every reference completion token: the model's top probability and whether its top
    token is the right one (the data of a reliability diagram)."""
    model.eval()
    confidence, correct = [], []
    for logits, labels in next_token_batches(model, tokenizer, prompts, references, batch_size):
        keep = labels != IGNORE_INDEX
        top, predicted = F.softmax(logits, -1).max(-1)
        confidence += top[keep].tolist()
        correct += (predicted == labels)[keep].tolist()
    return np.array(confidence), np.array(correct, dtype=float)


@torch.no_grad()
def next_token_logits(model, tokenizer, prompts, references, batch_size=64):
    """The logits at every reference completion token (N, V), float64, the right tokens (N,) and the
    index of the prompt each token belongs to (N,): the data of temperature scaling."""
    model.eval()
    logits_out, labels_out, rows = [], [], []
    for b, (logits, labels) in enumerate(next_token_batches(model, tokenizer, prompts, references, batch_size)):
        keep = labels != IGNORE_INDEX
        logits_out.append(logits[keep].double().numpy())
        labels_out.append(labels[keep].numpy())
        rows.append((torch.nonzero(keep)[:, 0] + b * batch_size).numpy())
    return np.concatenate(logits_out), np.concatenate(labels_out), np.concatenate(rows)


@torch.no_grad()
def attention_maps(model, tokenizer, prompt, completion):
    """Attention weights of the last layer, (H, T, T), and the tokens, for one example."""
    model.eval()
    ids = encode_sft(tokenizer, prompt, completion, model.config.max_position_embeddings)[0]
    _, _, attentions = model.backbone(torch.tensor([ids]), output_attentions=True)
    tokens = [tokenizer.id_to_token(i).replace("\u0120", "\u2423") for i in ids]  # byte-level "Ġ" (space) -> "␣"
    return attentions[-1][0].numpy(), tokens


@torch.no_grad()
def pseudo_perplexity(model, tokenizer, texts, batch_size=64):
    """Masked-LM scores of texts (Salazar et al. 2020), for bidirectional models.

    Each real token is masked in turn and scored by the model seeing every other token:
    PPPL = exp(-(1/N) sum_i log P_MLM(w_i | w_{-i})). It is *pseudo*-perplexity: the product
    of these conditionals is not a probability of the text, so it is never called perplexity.
    Returns (pseudo-perplexity, mean masked-token loss in nats).
    """
    model.eval()
    max_length = model.config.max_position_embeddings
    rows, targets = [], []
    for text in texts:
        ids = [tokenizer.cls_id] + tokenizer.encode(text, add_special_tokens=False)[:max_length - 2] + [tokenizer.sep_id]
        for position in range(1, len(ids) - 1):  # every real token, one copy each
            masked = list(ids)
            masked[position] = tokenizer.mask_id
            rows.append((masked, position))
            targets.append(ids[position])
    nll = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        batch = collate([r[0] for r in chunk], tokenizer.pad_id)
        logp = F.log_softmax(model(torch.as_tensor(batch["input_ids"]),
                                   torch.as_tensor(batch["attention_mask"])).float(), -1)
        for k, (_, position) in enumerate(chunk):
            nll.append(-float(logp[k, position, targets[start + k]]))
    mean = float(np.mean(nll))
    return float(np.exp(mean)), mean


@torch.no_grad()
def text_perplexity(model, tokenizer, texts, stride=None):
    """Perplexity exp(mean NLL) of whole texts under a causal model, per token.

    A text longer than the context is read in windows of max_position_embeddings tokens, `stride`
    apart (`shared.metrics.sliding_windows`): each token is scored once, with up to
    max_length - stride tokens of earlier context. Returns (perplexity, NLL sum, tokens scored).
    """
    from shared.metrics import perplexity, sliding_windows

    model.eval()
    max_length = model.config.max_position_embeddings
    stride = stride or max_length // 2
    nll_sum, count = 0.0, 0
    for text in texts:
        ids = [tokenizer.cls_id] + tokenizer.encode(text, add_special_tokens=False) + [tokenizer.sep_id]
        for window, labels in sliding_windows(ids, max_length, stride):
            logits, targets = shift_for_next_token(model(torch.tensor([window])).float(), torch.tensor([labels]))
            nll_sum += float(token_nll(logits, targets).sum())
            count += int((targets != IGNORE_INDEX).sum())
    return perplexity(nll_sum, count), nll_sum, count
