"""Mirrored files read alike. `torch_impl/X.py` and `tf_impl/X.py` (and, for the losses, the NumPy
reference `shared/reference.py`) define the same public functions, classes, methods and attributes
in the same order, with the same argument names in the same order and the same intermediate
variable names. Read from the source with `ast` (no framework is imported), so drift fails here.

Every intended difference is listed below, per pair, with its reason; anything else is drift. A
listed difference the files no longer have is reported too, so the lists stay true.
"""

import ast
import difflib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Same concept, the framework's own name (torch -> Keras), in any part of a dotted name.
SAME_CONCEPT = {
    "SFTModel": "PolicyModel",     # the seed's names for the two models
    "forward": "call",
    "output": "output_",           # Keras reserves `output`
}
# Names that are the framework's, not the algorithm's: never compared as local variables.
VOCABULARY = {"self", "torch", "nn", "F", "tf", "keras", "tfp", "np",
              "device",    # torch places tensors on a device; TensorFlow places ops itself
              "dtype"}     # a framework's dtype object, or Keras' dtype policy
# What the Keras side has throughout, and why (not compared).
KERAS_ARGUMENTS = {
    "training": "STYLE rule 6: a Keras call takes training=False and passes it to every Dropout",
    "**kwargs": "a Keras layer's __init__ passes name= and dtype= on to keras.layers.Layer",
    "dtype": "a Keras layer or model is built under a dtype policy (mixed precision), given to every sub-layer",
}
KERAS_ATTRIBUTES = {"built": "Keras' own flag, set at the end of build"}


# ----------------------------------------------------------------------------- reading a file

@dataclass(frozen=True)
class Definition:
    kind: str                        # "function", "class", "method" or "attribute"
    arguments: tuple = ()            # in order, with "/", "*", "*args", "**kwargs" as written
    variables: frozenset = frozenset()  # the intermediate variables its body binds


def renamed(name: str) -> str:
    """A dotted name in Keras' words (SAME_CONCEPT)."""
    return ".".join(SAME_CONCEPT.get(part, part) for part in name.split("."))


def is_public(name: str) -> bool:
    """Not `_private` (a dunder such as __init__ is public)."""
    last = name.rpartition(".")[2]
    return not last.startswith("_") or (last.startswith("__") and last.endswith("__"))


def arguments(function: ast.FunctionDef) -> tuple:
    """Argument names in order; "/" and "*" mark positional-only and keyword-only ones."""
    spec = function.args
    names = [a.arg for a in spec.posonlyargs] + (["/"] if spec.posonlyargs else []) + [a.arg for a in spec.args]
    if spec.vararg:
        names.append("*" + spec.vararg.arg)
    elif spec.kwonlyargs:
        names.append("*")
    names += [a.arg for a in spec.kwonlyargs]
    if spec.kwarg:
        names.append("**" + spec.kwarg.arg)
    return tuple(names)


def variables(function: ast.FunctionDef) -> frozenset:
    """The names the body binds (assignment, loop, with, except, a nested def), less the arguments,
    `_`-names and framework vocabulary. A nested function, lambda or comprehension is its own
    scope: its name counts, what it binds inside does not."""
    found = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found.add(child.name)
            elif isinstance(child, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                continue
            else:
                if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                    found.add(child.id)
                elif isinstance(child, ast.ExceptHandler) and child.name:
                    found.add(child.name)
                visit(child)

    visit(function)
    own_arguments = {a.lstrip("*") for a in arguments(function)}
    return frozenset(n for n in found if n not in own_arguments and n not in VOCABULARY and not n.startswith("_"))


def self_attributes(method: ast.FunctionDef) -> list:
    """The X of every `self.X = ...` in a method, in order (tuple targets unpacked)."""
    names = []
    for node in ast.walk(method):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        else:
            continue
        for target in targets:
            for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    names.append(t.attr)
    return names


def definitions(path: Path) -> dict:
    """{name: Definition} in source order: module-level functions and classes; for a class its
    methods and class-level fields, then the `self.X` its __init__ and build assign:
    {"gelu": ..., "Embeddings": ..., "Embeddings.__init__": ..., "Embeddings.word_embeddings": ...}.
    Names are in Keras' words (SAME_CONCEPT); private ones are kept (`drift` chooses)."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            found[renamed(node.name)] = Definition("function", arguments(node), variables(node))
        elif isinstance(node, ast.ClassDef):
            found[renamed(node.name)] = Definition("class")
            attributes = []
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    found[renamed(f"{node.name}.{item.name}")] = Definition("method", arguments(item),
                                                                           variables(item))
                    if item.name in ("__init__", "build"):
                        attributes += self_attributes(item)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    found[renamed(f"{node.name}.{item.target.id}")] = Definition("attribute")
                elif isinstance(item, ast.Assign):
                    for target in item.targets:
                        if isinstance(target, ast.Name):
                            found[renamed(f"{node.name}.{target.id}")] = Definition("attribute")
            for attribute in attributes:
                found.setdefault(renamed(f"{node.name}.{attribute}"), Definition("attribute"))
    return found


# ----------------------------------------------------------------------------- comparing two files

def label(path: Path) -> str:
    """A file as the messages name it: its folder and name (`tf_impl/model.py`)."""
    return "/".join(path.parts[-2:])


def drift(first: Path, second: Path, differences: dict, scope: str = "all") -> list:
    """Where two mirrored files differ beyond `differences` ([] when they mirror), one line each:
    "<first> vs <second>: <key>: <what differs>". The key names the place, as `differences` does:

        "Embeddings.build"          a function, class, method or attribute only one file defines
        "next_token(generator)"     an argument only one side's next_token has
        "next_token(...)"           the same arguments in another order (keyword-only marker too)
        "generate: device"          a local variable only one side's generate binds
        "response_slice (order)"    a name both define, in another place

    A key of `differences` that matches nothing is reported too (the files no longer differ there).
    scope: "all" compares every public name of both files (and the private ones both define);
    "first" every name the first file defines (the second may define more); "common" the names
    both define (the NumPy reference holds more than the losses).
    """
    a, b = ({n: d for n, d in definitions(path).items()
             if not (d.kind == "attribute" and n.rpartition(".")[2] in KERAS_ATTRIBUTES)}
            for path in (first, second))
    name_a, name_b = label(first), label(second)
    if scope == "all":
        wanted = [n for n in a if is_public(n) or n in b] + [n for n in b if n not in a and is_public(n)]
    elif scope == "first":
        wanted = list(a)
    elif scope == "common":
        wanted = [n for n in a if n in b]
    else:
        raise ValueError(f"scope must be 'all', 'first' or 'common', got {scope!r}")
    found = []   # (key, what differs)

    # (a) the names (a member of a class only one file defines is not named again), then their order
    for path_name, mine, other in ((name_a, a, b), (name_b, b, a)):
        only = [n for n in wanted if n in mine and n not in other]
        found += [(n, f"only {path_name} defines it") for n in only if n.rpartition(".")[0] not in only]
    order_a = [n for n in wanted if n in a and n in b]
    order_b = [n for n in b if n in set(order_a)]
    matcher = difflib.SequenceMatcher(None, order_a, order_b, autojunk=False)
    moved = {n for tag, i1, i2, _, _ in matcher.get_opcodes() if tag != "equal" for n in order_a[i1:i2]}

    def after(name, order):  # the nearest name before it that is in its place in both files
        placed = [n for n in order[:order.index(name)] if n not in moved]
        return placed[-1] if placed else "(the start)"
    found += [(f"{n} (order)", f"in another place: after {after(n, order_a)} in {name_a}, "
                               f"after {after(n, order_b)} in {name_b}") for n in order_a if n in moved]

    for name in order_a:
        x, y = a[name], b[name]
        if x.kind != y.kind:
            found.append((name, f"a {x.kind} in {name_a}, a {y.kind} in {name_b}"))
            continue
        # (b) the signature: argument names, their order, the keyword-only marker
        # Keras' own arguments are not compared, unless torch's side has the same one (a `dtype`
        # both functions take is an argument like any other).
        args_a = x.arguments
        args_b = tuple(n for n in y.arguments if n not in KERAS_ARGUMENTS or n in args_a)
        found += [(f"{name}({n})", f"an argument only {name_a} has") for n in args_a if n not in args_b]
        found += [(f"{name}({n})", f"an argument only {name_b} has") for n in args_b if n not in args_a]
        both_a, both_b = [n for n in args_a if n in args_b], [n for n in args_b if n in args_a]
        if both_a != both_b:
            found.append((f"{name}(...)", f"the same arguments in another order: ({', '.join(both_a)}) in "
                                          f"{name_a}, ({', '.join(both_b)}) in {name_b}"))
        # (c) the body: the intermediate variables it names
        found += [(f"{name}: {v}", f"a local variable only {name_a} has") for v in sorted(x.variables - y.variables)]
        found += [(f"{name}: {v}", f"a local variable only {name_b} has") for v in sorted(y.variables - x.variables)]

    problems = [f"{name_a} vs {name_b}: {key}: {what}" for key, what in found if key not in differences]
    keys = {key for key, _ in found}
    problems += [f"{name_a} vs {name_b}: {key}: listed as an intended difference, but the files do not differ there"
                 for key in differences if key not in keys]
    return problems


# ----------------------------------------------------------------------------- the mirrored pairs
# One dict per pair: {key (as `drift` names it): why the two files differ there}.

SFT_IN_TORCH = ("SFT trains in PyTorch: its forward takes labels and returns the LM loss (Hugging Face's "
                "BertForMaskedLM API); the Keras model, trained by RL, returns the logits")
KERAS_INFERS_WIDTH = "Keras' layers take their input width at the first call"
KERAS_NAMES = "name= is the Hugging Face parameter name: Keras names a weight by its layers' names"
INIT_IN_PLACE = ("torch initialises the built layer in place; Keras passes initializers to the layer, "
                 "so the Keras function returns it as built")
KERAS_BUILDS_LAZILY = "every variable created at construction, as in PyTorch (Keras would wait for the first call)"

MODEL = {
    "LMPredictionHead.decoder": "PyTorch's tied Linear (its weight is the embedding matrix)",
    "Embeddings.build": "Keras creates weights lazily: the sub-layers are built here",
    "Embeddings.pad_token_id": "Keras' Embedding has no padding_idx: the [PAD] row's gradient is stopped in call",
    "Embeddings.call: inputs_embeds": "the lookup whose [PAD] rows get a stopped gradient (no padding_idx in Keras)",
    "Embeddings.call: is_pad": "the [PAD] positions, for the same stopped gradient",
    "LMPredictionHead.build": "Keras creates the bias weight lazily",
    "LMPredictionHead.vocab_size": "the bias' shape, for build",
    "LMPredictionHead.word_embeddings": "Keras ties by holding the embedding layer",
    "LanguageModel.build_weights": KERAS_BUILDS_LAZILY,
    "decoder_lm_head: lm_head": "torch ties the built Linear in place; Keras returns the layer it builds (a TiedLMHead when tied)",
    "dense(in_features)": KERAS_INFERS_WIDTH,
    "dense(name)": KERAS_NAMES,
    "dense: layer": INIT_IN_PLACE,
    "embedding(name)": KERAS_NAMES,
    "embedding: layer": INIT_IN_PLACE,
    "embedding: initializer": INIT_IN_PLACE,
    "Output.__init__(input_size)": KERAS_INFERS_WIDTH,
    "fused_attention(dropout_p)": "keras.ops.dot_product_attention has no dropout (SelfAttention.call: dropout_on)",
    **{f"write_cache: {name}": "torch writes the new rows in place; TensorFlow places them by a gather XLA turns into an in-place update"
       for name in ("T", "Tmax", "position", "spread", "written")},
    "fused_attention(enable_gqa)": "keras.ops.dot_product_attention repeats the key/value heads itself; torch's kernel can share them",
    "fused_attention: scale": "Keras' op takes the scale as a tensor of the logits' dtype (float64 parity)",
    "fused_attention: context": "Keras' op works in the (B, T, H, hs) layout: its output is transposed back",
    "SelfAttention.call: dropout_p": "torch's fused kernel takes the dropout probability",
    "SelfAttention.call: dropout_on": "Keras' fused op has none: with attention dropout on, the written-out path runs",
    "LanguageModel.call(labels)": SFT_IN_TORCH,
    "LanguageModel.call(reduction)": SFT_IN_TORCH,
    "LanguageModel.call(sparse)": SFT_IN_TORCH,
    "LanguageModel.call: logits": SFT_IN_TORCH,
    "LanguageModel.call: targets": SFT_IN_TORCH,
    "LanguageModel.call: nll": SFT_IN_TORCH,
    "TiedLMHead": ("the decoders' tied lm_head: torch shares the embedding's Parameter with a bias-free Linear; "
                   "Keras holds the embedding layer in a layer of its own (as LMPredictionHead does)"),
}
DROPOUT_P = "torch's fused kernel takes the dropout probability"
DROPOUT_ON = "Keras' fused op has no dropout: with attention dropout on, the written-out path runs"
CACHE_DTYPE = ("torch takes the cache's dtype (and device) from the token table; Keras from the layer's compute "
               "dtype (bfloat16 under mixed precision, where the variables stay float32)")
GPT2 = {        # torch_impl/gpt2.py vs tf_impl/gpt2.py
    "dense(in_features)": KERAS_INFERS_WIDTH,
    "dense(name)": KERAS_NAMES,
    "dense: layer": INIT_IN_PLACE,
    "embedding(name)": KERAS_NAMES,
    "embedding: layer": INIT_IN_PLACE,
    "layer_norm(name)": KERAS_NAMES + " (ln_1, ln_2, ln_f)",
    "GPT2Attention.call: dropout_p": DROPOUT_P,
    "GPT2Attention.call: dropout_on": DROPOUT_ON,
    "GPT2Model.init_cache: weight": CACHE_DTYPE,
}
LLAMA = {       # torch_impl/llama.py vs tf_impl/llama.py
    "dense(in_features)": KERAS_INFERS_WIDTH,
    "dense(name)": KERAS_NAMES,
    "dense: layer": INIT_IN_PLACE,
    "embedding(name)": KERAS_NAMES,
    "embedding: layer": INIT_IN_PLACE,
    "LlamaRMSNorm.build": ("Keras creates the scale in build, while the parent layers are being called, so its "
                           "path carries their names (the Hugging Face name)"),
    "LlamaRMSNorm.variance_epsilon (order)": "the scale is assigned in build, after __init__ (LlamaRMSNorm.build)",
    "LlamaAttention.call: dropout_p": DROPOUT_P,
    "LlamaAttention.call: dropout_on": DROPOUT_ON,
    "LlamaModel.call: inputs_embeds": "the lookup whose pad rows get a stopped gradient (no padding_idx in Keras)",
    "LlamaModel.call: is_pad": "the pad positions, for the same stopped gradient",
    "LlamaModel.init_cache: weight": CACHE_DTYPE,
}
ARCHITECTURES = {  # torch_impl/architectures.py vs tf_impl/architectures.py
    "RewardModel.build_weights": KERAS_BUILDS_LAZILY,
}
GENERATE = {
    "next_token(generator)": "torch samples from a torch.Generator; TensorFlow's stateless sampler takes a seed",
    "next_token(seed)": "the stateless-RNG seed pair of tf.random.stateless_categorical",
    "next_token: probs": "torch.multinomial takes probabilities; tf.random.stateless_categorical takes logits",
    "generate: forward_with_cache": "jit_compile in torch compiles the cached forward (torch.compile); in TensorFlow it "
                                    "runs the whole loop as one XLA program (_generate_compiled)",
    "generate: generator": "torch's RNG for the samples (TensorFlow: seed_base)",
    "generate: seed_base": "TensorFlow's stateless seed; step t samples with [seed_base, t]",
    "generate: was_training": "torch's module mode, restored at the end; Keras passes training=False instead",
    "generate: ids": "torch writes each token into the preallocated (B, Tmax) ids in place",
    "generate: new_tokens": "TensorFlow tensors are immutable: the tokens are collected, then stacked",
    "generate: so_far": "the same: the ids so far, for the uncached path",
    "generate: out": "the same: the stacked tokens, padded to max_new_tokens",
    "generate: written": "the same: the mask's new position is set by a one-hot, not by item assignment",
    "generate: step": "TensorFlow's decoding step, traced once (a tf.function)",
}
LOSSES = {      # torch_impl/losses.py vs tf_impl/losses.py
    "token_nll: keep": "F.cross_entropy skips ignore_index itself; TF's sparse CE has no ignore index, so the "
                       "Keras side masks the labels (keep) before and the losses after",
}
REFERENCE = {   # torch_impl/losses.py vs the NumPy reference, for the functions it has too
    "token_nll: nll": "torch's fused F.cross_entropy gives the per-token NLL in one call",
    "token_nll: keep": "NumPy has no ignore index: the reference masks by hand (as TF does)",
    "token_nll: picked": "NumPy picks the label's log-probability from log_softmax by hand",
    "entropy_from_logits: logp": "torch and TF ask Categorical(logits).entropy(); NumPy writes -sum p log p out",
}
PPO = {         # the update twin: what torch_impl/ppo.py defines, vs tf_impl/ppo.py
    "keras_epsilon": "torch only: torch.optim.Adam's eps that gives Keras' epsilon placement",
    "clip_by_global_norm": "torch only: tf.clip_by_global_norm's rule written in torch (TF has it built in)",
    "PPOTrainer.train_step (order)": "TF traces its step in __init__ (tf.function); torch aliases it at the end",
    "response_outputs(sparse)": "TF keeps the dense-heads path the benchmark compares against",
    "response_outputs: logits": "the dense path (TF only) slices logits after the head",
    "PPOTrainer.__init__(reference)": "the TF trainer does rollouts too: the reference scores them",
    "PPOTrainer.__init__(tokenizer)": "rollouts encode prompts and decode completions (TF only)",
    "PPOTrainer.__init__(reward_fn)": "the reward phase runs in TF only",
    "PPOTrainer.__init__(log)": "the TF trainer reports resume and LoRA lines",
    "PPOTrainer.__init__(strategy)": "tf.distribute: the update split between replicas (TF only)",
    "PPOTrainer.__init__(prompt_length)": "rollouts pad prompts to one traced shape (TF only)",
    "PPOTrainer.__init__(sparse_head)": "the benchmark's dense-heads switch (TF only)",
    "PPOTrainer.__init__: step": "the TF step to trace: plain or distributed",
    "PPOTrainer._apply: grad": "torch sets each parameter's .grad and calls optimizer.step()",
    "PPOTrainer._apply: group": "torch sets Keras' epsilon on each param group",
    "PPOTrainer._apply: step": "torch's Adam step count, for Keras' epsilon placement",
    "PPOTrainer._apply: variable": "torch sets each parameter's .grad by hand",
    "PPOTrainer._train_step: tape": "TF's GradientTape; torch.autograd.grad needs none",
    "PPOTrainer._train_step: variables": "TF names the trainable variables for the tape",
}

PAIRS = {
    "model": ("torch_impl/model.py", "tf_impl/model.py", MODEL, "all"),
    "losses": ("torch_impl/losses.py", "tf_impl/losses.py", LOSSES, "all"),
    "losses and reference": ("torch_impl/losses.py", "shared/reference.py", REFERENCE, "common"),
    "generate": ("torch_impl/generate.py", "tf_impl/generate.py", GENERATE, "all"),
    "ppo update": ("torch_impl/ppo.py", "tf_impl/ppo.py", PPO, "first"),
    "gpt2": ("torch_impl/gpt2.py", "tf_impl/gpt2.py", GPT2, "all"),
    "llama": ("torch_impl/llama.py", "tf_impl/llama.py", LLAMA, "all"),
    "architectures": ("torch_impl/architectures.py", "tf_impl/architectures.py", ARCHITECTURES, "all"),
}


@pytest.mark.parametrize("pair", PAIRS)
def test_the_mirrored_files_read_alike(pair):
    first, second, differences, scope = PAIRS[pair]
    problems = drift(REPO / first, REPO / second, differences, scope)
    assert problems == [], "\n".join(problems)


# ----------------------------------------------------------------------------- the check can fail

def mutated_copy(tmp_path, pair, torch_edits=(), keras_edits=()):
    """The pair's two files copied under tmp_path (same folder names), each (old, new) edit made
    in its copy; an edit whose old text is not there exactly once fails. Returns the two paths."""
    copies = []
    for source, edits in zip(PAIRS[pair][:2], (torch_edits, keras_edits)):
        text = (REPO / source).read_text()
        for old, new in edits:
            assert text.count(old) == 1, f"{source}: the edit's text {old!r} is not there once"
            text = text.replace(old, new)
        copy = tmp_path / source
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(text)
        copies.append(copy)
    return copies


def test_a_renamed_or_moved_argument_a_renamed_variable_or_a_stale_listing_is_drift(tmp_path):
    first, second = mutated_copy(tmp_path, "generate", keras_edits=[
        # an argument renamed
        ("def next_token(logits, do_sample, temperature, top_k, seed=None, noise=None):",
         "def next_token(logits, do_sample, temperature, k, seed=None, noise=None):"),
        # an intermediate variable renamed
        ("kth = tf.math.top_k(logits, top_k)", "threshold = tf.math.top_k(logits, top_k)"),
        # two arguments swapped; a keyword-only marker added
        ("def greedy_completions(model, tokenizer, prompts,", "def greedy_completions(model, prompts, tokenizer,"),
        ("max_new_tokens, do_sample=False, temperature=1.0,", "max_new_tokens, *, do_sample=False, temperature=1.0,"),
        # a listed difference gone: the Keras generate now binds torch's forward_with_cache too
        ("    config = model.config\n    input_ids = tf.cast(",
         "    config = model.config\n    forward_with_cache = model.forward_with_cache\n    input_ids = tf.cast("),
    ])
    pair = "torch_impl/generate.py vs tf_impl/generate.py"
    assert drift(first, second, GENERATE) == [
        f"{pair}: next_token(top_k): an argument only torch_impl/generate.py has",
        f"{pair}: next_token(k): an argument only tf_impl/generate.py has",
        f"{pair}: next_token: kth: a local variable only torch_impl/generate.py has",
        f"{pair}: next_token: threshold: a local variable only tf_impl/generate.py has",
        f"{pair}: generate(*): an argument only tf_impl/generate.py has",
        f"{pair}: greedy_completions(...): the same arguments in another order: (model, tokenizer, prompts, "
        f"max_new_tokens, batch_size, max_prompt_length) in torch_impl/generate.py, (model, prompts, tokenizer, "
        f"max_new_tokens, batch_size, max_prompt_length) in tf_impl/generate.py",
        f"{pair}: generate: forward_with_cache: listed as an intended difference, but the files do not differ there",
    ]
    # the unedited copies mirror: each line above is the edit's, nothing else
    assert drift(*mutated_copy(tmp_path / "unedited", "generate"), GENERATE) == []


def test_a_renamed_attribute_a_missing_method_or_a_moved_class_is_drift(tmp_path):
    torch_source = (REPO / "torch_impl/model.py").read_text()
    block = torch_source[torch_source.index("class Intermediate("):torch_source.index("class TransformerBlock(")]
    first, second = mutated_copy(tmp_path, "model", torch_edits=[
        ("self.query = ", "self.q = "),
        (block, ""), ("def lm_loss(", block + "\n\ndef lm_loss("),        # Intermediate moved down
    ], keras_edits=[("def logits_and_values(", "def logits_and_values_(")])
    problems = drift(first, second, MODEL)
    pair = "torch_impl/model.py vs tf_impl/model.py"
    for line in ["SelfAttention.q: only torch_impl/model.py defines it",
                 "SelfAttention.query: only tf_impl/model.py defines it",
                 "LanguageModel.logits_and_values: only torch_impl/model.py defines it",
                 "LanguageModel.logits_and_values_: only tf_impl/model.py defines it",
                 "Intermediate (order): in another place: after at_least_float32 in torch_impl/model.py, "
                 "after Attention.output_ in tf_impl/model.py"]:
        assert f"{pair}: {line}" in problems, "\n".join(problems)


# One signature drift in the Keras (or NumPy) copy of each mirrored pair: two arguments swapped.
SIGNATURE_DRIFTS = {
    "model": ("def build_attention_mask(attention_mask, causal: bool,",
              "def build_attention_mask(causal: bool, attention_mask,", "build_attention_mask"),
    "losses": ("def ppo_objective(logprobs, entropy,", "def ppo_objective(entropy, logprobs,", "ppo_objective"),
    "losses and reference": ("def grpo_objective(logprobs, entropy,", "def grpo_objective(entropy, logprobs,",
                             "grpo_objective"),
    "generate": ("def generate(model, input_ids, attention_mask,", "def generate(model, attention_mask, input_ids,",
                 "generate"),
    "ppo update": ("def _loss(self, batch: Minibatch, kl_coef=None):", "def _loss(self, kl_coef, batch: Minibatch):",
                   "PPOTrainer._loss"),
    "gpt2": ("def init_cache(self, batch_size: int, max_length: int):",
             "def init_cache(self, max_length: int, batch_size: int):", "GPT2Model.init_cache"),
    "llama": ("def apply_rotary(x, cos, sin):", "def apply_rotary(x, sin, cos):", "apply_rotary"),
    "architectures": ("def build_model(config, with_value_head: bool = False,",
                      "def build_model(with_value_head: bool, config,", "build_model"),
}


@pytest.mark.parametrize("pair", sorted(SIGNATURE_DRIFTS))
def test_a_signature_drift_in_any_mirrored_pair_is_reported(pair, tmp_path):
    old, new, function = SIGNATURE_DRIFTS[pair]
    first, second = mutated_copy(tmp_path, pair, keras_edits=[(old, new)])
    differences, scope = PAIRS[pair][2:]
    problems = drift(first, second, differences, scope)
    assert any(f": {function}" in line for line in problems), "\n".join(problems) or "no drift reported"
    assert drift(*mutated_copy(tmp_path / "unedited", pair), differences, scope) == []
