"""Exported folders load in `transformers` as a user loads them: `AutoTokenizer` gives the project's
token ids, and the text-generation `pipeline` completes a prompt as the project does."""

import numpy as np
import pytest
import transformers

from conftest import train_causal_sft
from shared.config import PPOConfig, RewardModelConfig
from shared.rewards import task_partial
from tf_impl import ppo, rl_run
from tf_impl.reward_model import init_from_sft, train_reward_model
from torch_impl.checkpoint import load_pretrained
from torch_impl.generate import greedy_completions

NEW = 12  # tokens to generate: the trained model's completions run 3 to 7 tokens

ALPHABET = list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 .,:;!?+-=*/()[]{}'\"\n\t") + ["é", "ß", "中", "文", "😀"]


def random_texts(seed, n=200):
    rng = np.random.default_rng(seed)
    texts = ["".join(rng.choice(ALPHABET, size=rng.integers(0, 40))) for _ in range(n)]
    return texts + ["copy: a b c", "add: 12 + 7", "  two  spaces ", "[CLS] written out [SEP]", ""]


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory, builtin_data, tokenizer):
    """A small causal SFT model trained until its greedy completions are a few tokens long (a
    comparison of empty completions would show nothing)."""
    return train_causal_sft(tmp_path_factory.mktemp("sft"), tokenizer, builtin_data["sft.train"], 64, steps=300)


@pytest.fixture(scope="module")
def ppo_dir(tmp_path_factory, sft_dir, tokenizer, builtin_data):
    out = tmp_path_factory.mktemp("ppo")
    config = PPOConfig(iterations=2, batch_size=8, minibatch_size=4, ppo_epochs=1, max_new_tokens=NEW, seed=0,
                       xla=False)
    policy, reference = rl_run.load_policy_and_reference(sft_dir)
    rl_run.train(ppo.PPOTrainer(policy, reference, tokenizer, config, task_partial), builtin_data["prompt.train"],
                 out, quiet=True)
    return out


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory, sft_dir, tokenizer, builtin_data):
    out = tmp_path_factory.mktemp("reward_model")
    train_reward_model(init_from_sft(sft_dir), tokenizer, builtin_data["preference.train"], [],
                       RewardModelConfig(epochs=1, batch_size=8), out, quiet=True)
    return out


@pytest.mark.parametrize("folder", ["sft_dir", "ppo_dir", "reward_model_dir"])
def test_auto_tokenizer_encodes_and_decodes_like_the_project(folder, request, tokenizer):
    path = request.getfixturevalue(folder)
    hf = transformers.AutoTokenizer.from_pretrained(path)
    assert (hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id) == \
        (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id)
    for text in random_texts(seed=len(folder)):
        ids = tokenizer.encode(text)
        assert hf(text)["input_ids"] == ids, text
        assert hf(text, add_special_tokens=False)["input_ids"] == tokenizer.encode(text, add_special_tokens=False)
        assert hf.decode(ids, skip_special_tokens=True) == tokenizer.decode(ids), text
    # generation batches are left-padded; the reward model reads its reward at the last real token
    assert hf.padding_side == ("right" if folder == "reward_model_dir" else "left")


@pytest.mark.parametrize("folder", ["sft_dir", "ppo_dir"])
def test_text_generation_pipeline_completes_as_the_project_does(folder, request, tokenizer, builtin_data):
    """The prompt laid out as the project lays it out ([CLS] prompt [SEP], the tokenizer's own
    template), greedy decoding that stops at [SEP]: the same completion as `sftrl eval`'s."""
    path = request.getfixturevalue(folder)
    prompts = [r["prompt"] for r in builtin_data["prompt.eval"][:16]]
    expected, _ = greedy_completions(load_pretrained(path), tokenizer, prompts, NEW)
    generator = transformers.pipeline("text-generation", model=str(path), device="cpu")
    got = [generator(p, add_special_tokens=True, max_new_tokens=NEW, do_sample=False,
                     return_full_text=False)[0]["generated_text"] for p in prompts]
    assert got == expected
    assert sum(len(text.split()) >= 2 for text in expected) >= 8, expected  # completions worth comparing
