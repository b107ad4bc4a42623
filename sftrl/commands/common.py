"""What more than one command runs: the reward a spec names (`--reward`), and the held-out
comparison of a trained model with the SFT model it started from (`sftrl rl`, `sftrl dpo`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.errors import SftrlError

REWARD_HELP = ("task (partial credit), task-exact (sparse), bleu (against each record's reference), model:DIR (a "
               "trained reward model), or FILE.py:FUNCTION (your own FUNCTION(prompt, completion, reference) -> float)")


def check_vocabulary(model_config, tokenizer, source: str) -> None:
    """The tokenizer must be the model's: a BERT model of ours has exactly its rows; a downloaded
    decoder's embedding table may have spare rows beyond the tokenizer (Qwen2's is padded to a
    multiple of 128), never fewer."""
    rows, tokens = model_config.vocab_size, tokenizer.vocab_size
    if rows < tokens or (model_config.model_type == "bert" and rows != tokens):
        raise SftrlError(f"{source}: the model's vocabulary has {rows} tokens but the tokenizer has {tokens}; "
                         "use the tokenizer the model was trained with")


def load_user_reward(spec: str):
    """`FILE.py:FUNCTION` -> the function, wrapped so that anything it raises or a non-number it
    returns becomes a one-line error naming the file (and the line it failed on)."""
    import importlib.util
    import numbers
    import traceback

    path, _, name = spec.rpartition(":")
    if not Path(path).is_file():
        raise SftrlError(f"--reward {spec}: no such file {path}")
    module_spec = importlib.util.spec_from_file_location(f"sftrl_user_reward_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # the user's code: report it as theirs, in one line
        line = f":{e.lineno}" if isinstance(e, SyntaxError) and e.lineno else ""
        raise SftrlError(f"--reward {spec}: cannot load {path}{line} ({type(e).__name__}: {e})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise SftrlError(f"--reward {spec}: {path} has no function {name!r}")

    def reward(prompt, completion, reference=None):
        try:
            value = fn(prompt, completion, reference)
        except Exception as e:
            frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename) == Path(path)]
            where = f"{path}:{frames[-1].lineno}" if frames else path
            raise ValueError(f"{where}: {type(e).__name__}: {e}") from None
        if not isinstance(value, numbers.Real):
            raise ValueError(f"{path}: {name} returned {value!r}, not a number")
        return value
    return reward


def reward_function(spec: str, tokenizer, length_penalty: float = 0.0, max_words: int = 16):
    """The reward `--reward SPEC` names (see REWARD_HELP), less `length_penalty` per word beyond
    `max_words` when that is > 0. A reward model (model:DIR) loads through tf_impl: TensorFlow."""
    from shared.rewards import get_reward, with_length_penalty

    if spec.startswith("model:"):
        from tf_impl.reward_model import load_reward_model, reward_fn_from_model
        fn = reward_fn_from_model(load_reward_model(spec[len("model:"):]), tokenizer)
    elif spec.rpartition(":")[0].endswith(".py"):
        fn = load_user_reward(spec)
    elif spec.endswith(".py"):
        raise SftrlError(f"--reward {spec}: name the function too, as FILE.py:FUNCTION")
    else:
        fn = get_reward(spec)
    if length_penalty < 0:
        raise SftrlError(f"--length-penalty: must be >= 0, got {length_penalty}")
    if length_penalty > 0:
        fn = with_length_penalty(fn, length_penalty, max_words)
    return fn


def compare_on_held_out(prompts, sft_completions, completions, seed, label="RL") -> dict:
    """Held-out exact match and partial credit, SFT -> the trained model, with paired-bootstrap
    intervals of the differences; printed, and returned as a dict."""
    from shared.metrics import paired_bootstrap
    from shared.tasks import task_scores

    scores = {side: [np.array(values, dtype=float) for values in task_scores(prompts, texts)]
              for side, texts in (("sft", sft_completions), ("rl", completions))}
    report = {"prompts": len(prompts)}
    for i, name in enumerate(("exact_match", "partial_credit")):
        a, b = scores["sft"][i], scores["rl"][i]
        diff, low, high = paired_bootstrap(a, b, seed=seed)
        report[name] = {"sft": float(a.mean()), "rl": float(b.mean()), "difference": diff, "ci95": [low, high]}
        print(f"held-out {name}: SFT {a.mean():.3f} -> {label} {b.mean():.3f}  "
              f"(difference {diff:+.3f}, 95% CI [{low:+.3f}, {high:+.3f}])")
    return report
