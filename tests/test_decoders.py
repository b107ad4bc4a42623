"""GPT-2, Llama and Qwen2 folders, as `transformers` writes them, in our PyTorch models.

The folders are built offline by `tests/hf_folders.py`. Bounds: float32 logits within 1e-5 of
`transformers`' (a few ulps of values of order 1, accumulated over 2 layers); float64 within
1e-10 for GPT-2, where `transformers` computes in float64 throughout. Its Llama/Qwen2 computes
RMSNorm and the rotary angles in float32 whatever the dtype (ours: in float64 for a float64 model),
so for those the float64 comparison would measure transformers' float32 steps, not ours.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers

from hf_folders import KINDS, make_folder
from shared.errors import CheckpointError
from shared.tokenizer import Tokenizer
from torch_impl.checkpoint import load_pretrained, save_pretrained
from torch_impl.generate import generate, greedy_completions


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {kind: make_folder(kind, root / kind) for kind in KINDS}


def left_padded(tokenizer, texts):
    rows = [[tokenizer.cls_id] + tokenizer.encode(t, add_special_tokens=False) + [tokenizer.sep_id] for t in texts]
    P = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_id] * (P - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (P - len(r)) + [1] * len(r) for r in rows])
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


TEXTS = ["copy: a b c", "reverse: 3 1 4 1 5 9 2 6", "sort: z y"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_transformers_folder_loads_and_gives_transformers_logits(folders, kind):
    ours = load_pretrained(folders[kind])
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folders[kind]).eval()
    assert type(ours).__name__ == type(theirs).__name__.replace("Qwen2", "Llama")
    tokenizer = Tokenizer.load(folders[kind])
    ids, mask, positions = left_padded(tokenizer, TEXTS)
    real = mask.bool()
    with torch.no_grad():
        ref = theirs(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        got = ours(ids, mask, position_ids=positions)
    assert got.shape == ref.shape
    assert (got - ref)[real].abs().max().item() <= 1e-5
    if kind == "gpt2":
        with torch.no_grad():
            ref64 = theirs.double()(input_ids=ids, attention_mask=mask, position_ids=positions).logits
            got64 = ours.double()(ids, mask, position_ids=positions)
        assert (got64 - ref64)[real].abs().max().item() <= 1e-10


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_tokens_equal_transformers_generate(folders, kind):
    ours = load_pretrained(folders[kind])
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folders[kind]).eval()
    tokenizer = Tokenizer.load(folders[kind])
    ids, mask, _ = left_padded(tokenizer, TEXTS)
    new = generate(ours, ids, mask, max_new_tokens=12)
    with torch.no_grad():
        ref = theirs.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, min_new_tokens=12,
                              do_sample=False, pad_token_id=tokenizer.pad_id, eos_token_id=None)
    assert new.tolist() == ref[:, ids.shape[1]:].tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_an_exported_folder_loads_in_auto_classes_with_our_logits(folders, kind, tmp_path):
    ours = load_pretrained(folders[kind])
    tokenizer = Tokenizer.load(folders[kind])
    with torch.no_grad():  # move off the folder's weights, so a stale file would show
        for p in ours.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_pretrained(ours, tmp_path)
    tokenizer.save_pretrained(tmp_path, ours.config.max_position_embeddings, generates=True)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    their_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "reverse: 3 1 4"
    assert their_tokenizer(text, add_special_tokens=False).input_ids == tokenizer.encode(text, add_special_tokens=False)
    assert their_tokenizer.pad_token_id == tokenizer.pad_id and their_tokenizer.eos_token_id == tokenizer.sep_id
    ids, mask, positions = left_padded(tokenizer, TEXTS)
    with torch.no_grad():
        diff = theirs(input_ids=ids, attention_mask=mask, position_ids=positions).logits - ours(ids, mask, position_ids=positions)
    assert diff[mask.bool()].abs().max().item() <= 1e-5
    assert load_pretrained(tmp_path).state_dict().keys() == ours.state_dict().keys()
    # transformers' text-generation pipeline, the prompt laid out as the project lays it out
    # (`<bos> prompt <eos>`, the special tokens written as text), greedy, stopping at the end token
    # (the exported generation_config): our greedy completions
    expected, _ = greedy_completions(ours, tokenizer, TEXTS, 8)
    generator = transformers.pipeline("text-generation", model=str(tmp_path), device="cpu")
    got = [generator(tokenizer.roles["cls"] + p + tokenizer.roles["sep"], add_special_tokens=False, max_new_tokens=8,
                     do_sample=False, return_full_text=False)[0]["generated_text"] for p in TEXTS]
    assert got == expected and any(expected), expected  # an end token at once matches too; some text must show


def test_a_sharded_folder_loads(folders, tmp_path):
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folders["llama"])
    theirs.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and not (tmp_path / "model.safetensors").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    ours, reference = load_pretrained(tmp_path), load_pretrained(folders["llama"])
    for name, tensor in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[name], tensor), name


def test_an_unsupported_model_type_or_a_wrong_shape_is_one_error_naming_folder_and_field(folders, tmp_path):
    config = json.loads((folders["gpt2"] / "config.json").read_text())
    for name in ("model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_bytes((folders["gpt2"] / name).read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    with pytest.raises(CheckpointError) as e:
        load_pretrained(tmp_path)
    assert str(tmp_path) in str(e.value) and "model_type" in str(e.value) and "t5" in str(e.value)
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_inner": 48}))
    with pytest.raises(CheckpointError) as e:
        load_pretrained(tmp_path)
    assert str(e.value) == (f"{tmp_path}: transformer.h.0.mlp.c_fc.bias has shape (128,), the model expects (48,) "
                            "from config.json")


def test_a_decoder_tokenizer_fills_the_roles_from_its_folder(folders):
    gpt2, qwen2 = Tokenizer.load(folders["gpt2"]), Tokenizer.load(folders["qwen2"])
    assert gpt2.cls_id == gpt2.sep_id == gpt2.pad_id == gpt2.token_to_id("<|endoftext|>")
    assert qwen2.sep_id == qwen2.token_to_id("<|im_end|>") and qwen2.pad_id == qwen2.token_to_id("<|endoftext|>")
    assert gpt2.mask_id is None and qwen2.cls_id == qwen2.sep_id
    assert np.isin([gpt2.cls_id], list(gpt2.special_ids)).all()


def test_a_base_model_folder_without_the_backbone_prefix_loads_in_both_frameworks(folders, tmp_path):
    """The original GPT-2 files were saved from `GPT2Model`: `h.0.attn.c_attn.weight`, no
    `transformer.` prefix, no LM head. They load, the head tied to the embeddings, as
    `transformers` loads them into `GPT2LMHeadModel`."""
    from tf_impl.convert import load_pretrained as keras_load_pretrained

    full = transformers.AutoModelForCausalLM.from_pretrained(folders["gpt2"]).eval()
    full.transformer.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_bytes((folders["gpt2"] / "tokenizer.json").read_bytes())
    from safetensors import safe_open
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert not any(k.startswith("transformer.") for k in f.keys())
    ids = torch.tensor([[5, 17, 42, 9, 11]])
    with torch.no_grad():
        expected = full(input_ids=ids).logits
        got = load_pretrained(tmp_path)(ids)
    assert (got - expected).abs().max().item() <= 1e-5
    keras_got = keras_load_pretrained(tmp_path)(ids.numpy()).numpy()
    assert np.abs(keras_got - expected.numpy()).max() <= 1e-5


def test_the_fused_gqa_kernel_equals_the_written_out_attention_in_values_and_gradients(folders):
    """Llama's "sdpa" path hands the Hkv key/value heads to the kernel (enable_gqa) instead of
    repeating them; its logits and every gradient equal the "eager" path's, which repeats them.
    float64: the two orders of summation differ by a few ulps (1e-16 relative) per layer."""
    fused = load_pretrained(folders["llama"]).double()
    eager = load_pretrained(folders["llama"]).double()
    eager.config.attn_implementation = "eager"
    for module in eager.modules():
        if hasattr(module, "attn_implementation"):
            module.attn_implementation = "eager"
    assert fused.config.num_key_value_heads < fused.config.num_attention_heads  # grouped
    tokenizer = Tokenizer.load(folders["llama"])
    ids, mask, positions = left_padded(tokenizer, TEXTS)
    losses = []
    for model in (fused, eager):
        logits = model(ids, mask, position_ids=positions)
        loss = (logits.log_softmax(-1)[mask.bool()] ** 2).mean()
        loss.backward()
        losses.append((logits.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (fused_logits, fused_grads), (eager_logits, eager_grads) = losses
    real = mask.bool()  # a left pad's own row differs by design (`fused_attention`); no real token reads it
    assert torch.allclose(fused_logits[real], eager_logits[real], rtol=0, atol=1e-12)
    for name, grad in fused_grads.items():
        assert torch.allclose(grad, eager_grads[name], rtol=0, atol=1e-12), name
