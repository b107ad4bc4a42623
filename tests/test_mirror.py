"""The two model files are mirrors: the same functions, classes, methods and attribute (layer)
names, in the same order, read from their source (parsed, not hand-listed), so drift fails here."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCH_FILE, KERAS_FILE = REPO / "torch_impl" / "model.py", REPO / "tf_impl" / "model.py"

# Same concept, framework's own name: torch -> Keras.
CLASS_NAMES = {"SFTModel": "PolicyModel"}      # the seed's names for the two models
METHOD_NAMES = {"forward": "call"}
ATTRIBUTE_NAMES = {"output": "output_"}        # Keras reserves `output`

# What only one framework has, and why. Anything else that differs is drift.
TORCH_ONLY = {
    "LMPredictionHead.decoder": "PyTorch's tied Linear (its weight is the embedding matrix)",
}
KERAS_ONLY = {
    "Embeddings.build": "Keras creates weights lazily: the sub-layers are built here",
    "Embeddings.pad_token_id": "Keras' Embedding has no padding_idx: the [PAD] row's gradient is "
                               "stopped in call",
    "LMPredictionHead.build": "Keras creates the bias weight lazily",
    "LMPredictionHead.vocab_size": "the bias' shape, for build",
    "LMPredictionHead.word_embeddings": "Keras ties by holding the embedding layer",
    "PolicyModel.build_weights": "every variable created at construction, as in PyTorch",
    "RewardModel.build_weights": "every variable created at construction, as in PyTorch",
}
KERAS_BOOKKEEPING = {"built"}


def structure(source: str) -> list[str]:
    """Public module-level functions and classes in order; for a class, its methods and then the
    `self.X` it assigns in __init__ and build, in order: ['def gelu', 'class Embeddings',
    'Embeddings.__init__', ..., 'Embeddings.word_embeddings', ...]."""
    entries = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            entries.append(node.name)
        elif isinstance(node, ast.ClassDef):
            entries.append(f"class {node.name}")
            methods = [item for item in node.body if isinstance(item, ast.FunctionDef)]
            entries += [f"{node.name}.{m.name}()" for m in methods]
            for method in methods:
                if method.name not in ("__init__", "build"):
                    continue
                for sub in ast.walk(method):
                    targets = sub.targets if isinstance(sub, ast.Assign) else []
                    entries += [f"{node.name}.{t.attr}" for t in targets if isinstance(t, ast.Attribute)
                                and isinstance(t.value, ast.Name) and t.value.id == "self"]
    return entries


def as_keras(entry: str) -> str:
    """A torch entry in Keras' names."""
    cls, _, member = entry.partition(".")
    if entry.startswith("class "):
        return "class " + CLASS_NAMES.get(entry[6:], entry[6:])
    if not member:
        return entry
    method = member.endswith("()")
    name = member[:-2] if method else member
    name = (METHOD_NAMES if method else ATTRIBUTE_NAMES).get(name, name)
    return f"{CLASS_NAMES.get(cls, cls)}.{name}" + ("()" if method else "")


def drift(torch_source: str, keras_source: str) -> list[str]:
    """Where the two files differ beyond the named exceptions ([] when they mirror)."""
    def plain(entry):
        return entry.rstrip("()")
    torch_side = [as_keras(e) for e in structure(torch_source) if plain(e) not in TORCH_ONLY]
    keras_side = [e for e in structure(keras_source) if plain(e) not in KERAS_ONLY
                  and plain(e).rpartition(".")[2] not in KERAS_BOOKKEEPING]
    if torch_side == keras_side:
        return []
    problems = [f"only in torch_impl/model.py: {e}" for e in torch_side if e not in keras_side]
    problems += [f"only in tf_impl/model.py: {e}" for e in keras_side if e not in torch_side]
    return problems or ["the same names in a different order: "
                        + next(f"{a} vs {b}" for a, b in zip(torch_side, keras_side) if a != b)]


def test_the_two_model_files_mirror_each_other():
    assert drift(TORCH_FILE.read_text(), KERAS_FILE.read_text()) == []
    # the exceptions are real: each names something that exists in its file
    torch_entries = {e.rstrip("()") for e in structure(TORCH_FILE.read_text())}
    keras_entries = {e.rstrip("()") for e in structure(KERAS_FILE.read_text())}
    assert set(TORCH_ONLY) <= torch_entries and set(KERAS_ONLY) <= keras_entries


def test_a_renamed_attribute_a_missing_method_or_a_moved_class_is_drift():
    torch_source, keras_source = TORCH_FILE.read_text(), KERAS_FILE.read_text()
    renamed = torch_source.replace("self.query = ", "self.q = ")
    assert "only in torch_impl/model.py: SelfAttention.q" in drift(renamed, keras_source)
    assert "only in tf_impl/model.py: SelfAttention.query" in drift(renamed, keras_source)
    missing = keras_source.replace("def logits_and_values(", "def logits_and_values_(")
    assert "only in torch_impl/model.py: PolicyModel.logits_and_values()" in drift(torch_source, missing)
    block = torch_source.index("class Intermediate(")
    end = torch_source.index("class TransformerBlock(")
    moved = torch_source[:block] + torch_source[end:] + "\n\n" + torch_source[block:end]
    assert drift(moved, keras_source)[0].startswith("the same names in a different order")
