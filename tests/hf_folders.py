"""Small `transformers` model folders built offline, as a user's downloaded folder would look.

`make_folder(kind, directory)` trains a byte-level BPE tokenizer on the built-in task text
(decoder special tokens, no [CLS]/[SEP]), builds a random `GPT2LMHeadModel`, `LlamaForCausalLM`
(grouped-query attention, untied) or `Qwen2ForCausalLM` (q/k/v bias, tied, embedding table
padded beyond the tokenizer, as Qwen2's is) with `transformers` itself, and saves both with
`save_pretrained`. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer as Backend
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers

from shared.tasks import make_builtin_data

KINDS = ("gpt2", "llama", "qwen2")
# Each kind's special tokens as its real tokenizer names them.
SPECIALS = {"gpt2": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
            "llama": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
            "qwen2": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}}


def task_texts(n: int = 400, seed: int = 0) -> list[str]:
    data = make_builtin_data(seed=seed)
    return [r["prompt"] + " " + r["completion"] for r in data["sft.train"][:n]]


# Qwen2's pre-tokenizer splits numbers into single digits before the byte-level step; its
# tokenizer.json says so, and transformers' Qwen2Tokenizer applies the same split.
QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def make_tokenizer(kind: str, texts) -> transformers.PreTrainedTokenizerFast:
    specials = list(dict.fromkeys(SPECIALS[kind].values()))
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if kind == "qwen2":
        backend.normalizer = normalizers.NFC()
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIALS[kind])


def hf_config(kind: str, tokenizer, n_positions: int = 128):
    ids = {name.replace("_token", "_token_id"): tokenizer.convert_tokens_to_ids(token)
           for name, token in SPECIALS[kind].items() if name in ("bos_token", "eos_token", "pad_token")}
    V = len(tokenizer)
    if kind == "gpt2":
        return transformers.GPT2Config(vocab_size=V, n_positions=n_positions, n_embd=32, n_layer=2, n_head=4, **ids)
    if kind == "llama":
        return transformers.LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=n_positions,
                                        rope_theta=500.0, tie_word_embeddings=False, **ids)
    return transformers.Qwen2Config(vocab_size=V + 24, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=n_positions,
                                    tie_word_embeddings=True, **ids)


def make_folder(kind: str, directory, seed: int = 0, texts=None) -> Path:
    """A `transformers` folder of a small random model of this kind, with its tokenizer."""
    directory = Path(directory)
    tokenizer = make_tokenizer(kind, texts or task_texts())
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(hf_config(kind, tokenizer))
    if kind == "qwen2":  # make the q/k/v biases visible in the logits (transformers zeroes them)
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0.0, 0.5)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
