"""Our Keras decoders against keras-hub's, built by keras-hub from the same `transformers` folder
(the optional `peers` extra: `pip install -e .[peers]`; skipped without it). keras-hub has no
RLHF, but its GPT2Backbone / Llama3Backbone / QwenBackbone are the Keras models people know:
the same weights give the same logits. Bound: float32, 1e-5 (a few ulps of logits of order 1;
measured <= 7.5e-8). keras-hub counts positions from the first column whatever the padding, so
the batch is unpadded."""

from __future__ import annotations

import numpy as np
import pytest

from hf_folders import make_folder
from tf_impl.convert import load_pretrained

keras_hub = pytest.importorskip("keras_hub")

PEER_CLASSES = {"gpt2": "GPT2Backbone", "llama": "Llama3Backbone", "qwen2": "QwenBackbone"}


@pytest.mark.parametrize("kind", list(PEER_CLASSES))
def test_keras_hub_built_from_the_same_folder_gives_our_logits(kind, tmp_path):
    folder = make_folder(kind, tmp_path / kind)
    peer = keras_hub.models.Backbone.from_preset(str(folder))
    assert type(peer).__name__ == PEER_CLASSES[kind]
    ids = np.random.default_rng(0).integers(1, 300, size=(3, 12)).astype("int32")
    hidden = peer({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    theirs = np.asarray(peer.token_embedding(hidden, reverse=True))           # (B, T, V)
    ours = np.asarray(load_pretrained(folder)(ids))
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-5
