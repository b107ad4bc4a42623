"""Training flags come from the config dataclasses (sftrl/commands/flags.py): the field's comment is
the help, the dataclass gives type and default, the config's own validation names the flag."""

import argparse
import dataclasses
import subprocess
import sys

import pytest

from conftest import REPO
from shared.config import DPOConfig, EvalConfig, ModelConfig, PPOConfig, RewardModelConfig, SFTConfig
from shared.errors import SftrlError
from sftrl.cli import build_parser
from sftrl.commands.flags import add_config_flags, config_from_args, field_comments, flag_name


@pytest.mark.parametrize("config_class", [ModelConfig, SFTConfig, DPOConfig, PPOConfig, EvalConfig,
                                          RewardModelConfig])
def test_every_config_field_has_a_comment(config_class):
    comments = field_comments(config_class)
    missing = [f.name for f in dataclasses.fields(config_class) if not comments.get(f.name)]
    assert missing == []


def test_comments_are_read_from_the_source():
    comments = field_comments(PPOConfig)
    assert comments["gamma"] == "discount factor"
    # a comment that goes on over comment-only lines in its column is one text
    assert comments["loss_normalisation"].startswith("grpo: sequence = mean over each completion's tokens, then over "
                                                     "completions (the GRPO paper); token = ")
    assert comments["loss_normalisation"].endswith("(DAPO)")
    # DPOConfig redeclares steps (its own comment) and inherits beta's neighbours from SFTConfig
    assert field_comments(DPOConfig)["batch_size"] == "pairs per optimizer step"
    assert field_comments(DPOConfig)["weight_decay"] == field_comments(SFTConfig)["weight_decay"]


def parser_with(config_class, fields, **kw):
    p = argparse.ArgumentParser()
    add_config_flags(p, config_class, fields, **kw)
    return p


def test_flags_take_type_default_and_help_from_the_dataclass():
    p = parser_with(PPOConfig, ["kl_coef", "iterations", "target_kl"])
    actions = {a.dest: a for a in p._actions}
    assert (actions["kl_coef"].type, actions["kl_coef"].default) == (float, 0.05)
    assert (actions["iterations"].type, actions["iterations"].default) == (int, 120)
    assert actions["kl_coef"].help == "initial per-token KL penalty coefficient beta (default 0.05)"
    assert (actions["target_kl"].type, actions["target_kl"].default) == (float, None)
    assert "default" not in actions["target_kl"].help  # unset: nothing to show
    args = p.parse_args(["--kl-coef", "0.1", "--target-kl", "6"])
    assert (args.kl_coef, args.iterations, args.target_kl) == (0.1, 120, 6.0)


@pytest.mark.parametrize("config_class, full, lora", [(SFTConfig, 1e-3, 3e-3), (DPOConfig, 1e-4, 3e-4),
                                                     (PPOConfig, 1e-4, 3e-4)])
def test_an_unset_lr_is_full_fine_tunings_or_three_times_that_with_lora(config_class, full, lora):
    """No --lr: full fine-tuning's learning rate, LORA_LR_MULTIPLIER (3) times it with --lora-rank;
    a given --lr is kept either way. The help says what unset means (no "(default None)")."""
    p = parser_with(config_class, ["lr", "lora_rank"])
    assert "3x" in {a.dest: a for a in p._actions}["lr"].help and "default None" not in p.format_help()
    lr_of = lambda *argv: config_from_args(config_class, p.parse_args(list(argv))).lr  # noqa: E731
    assert lr_of() == full and lr_of("--lora-rank", "16") == lora
    assert lr_of("--lr", "3e-3") == lr_of("--lr", "3e-3", "--lora-rank", "16") == 3e-3


@pytest.mark.parametrize("config_class", [SFTConfig, DPOConfig, PPOConfig])
def test_lora_embeddings_needs_lora_rank(config_class):
    """--lora-embeddings trains the embeddings beside the adapters: alone it is an error naming it."""
    p = parser_with(config_class, ["lora_rank", "lora_embeddings"])
    assert config_from_args(config_class, p.parse_args(["--lora-rank", "4", "--lora-embeddings"])).lora_embeddings
    assert not config_from_args(config_class, p.parse_args(["--lora-rank", "4"])).lora_embeddings
    with pytest.raises(SftrlError, match=r"^--lora-embeddings: needs --lora-rank > 0"):
        config_from_args(config_class, p.parse_args(["--lora-embeddings"]))


def test_boolean_fields_are_switches_away_from_their_default():
    p = parser_with(PPOConfig, ["whiten_rewards", "xla"])
    assert "--whiten-rewards" in p._option_string_actions and "--no-xla" in p._option_string_actions
    assert vars(p.parse_args([])) == {"whiten_rewards": False, "xla": True}
    assert vars(p.parse_args(["--whiten-rewards", "--no-xla"])) == {"whiten_rewards": True, "xla": False}
    assert p._option_string_actions["--no-xla"].help.startswith("do not XLA-compile")
    assert vars(parser_with(RewardModelConfig, ["xla"]).parse_args(["--xla"])) == {"xla": True}


def test_choices_defaults_overrides_and_unknown_fields():
    p = parser_with(SFTConfig, ["objective"], choices={"objective": ("clm", "mlm")}, defaults={"objective": "mlm"},
                    help_overrides={"objective": "what to learn"})
    assert p.parse_args([]).objective == "mlm"
    assert p._option_string_actions["--objective"].help == "what to learn (default mlm)"
    with pytest.raises(SystemExit):
        p.parse_args(["--objective", "rlhf"])
    with pytest.raises(ValueError, match="SFTConfig has no field 'beta'"):
        parser_with(SFTConfig, ["beta"])


def test_config_from_args_names_the_flag():
    assert flag_name("clip_range_value") == "--clip-range-value"
    p = parser_with(PPOConfig, ["batch_size", "group_size", "algorithm"])
    assert config_from_args(PPOConfig, p.parse_args(["--batch-size", "32"])) == PPOConfig(batch_size=32)
    with pytest.raises(SftrlError, match=r"^--batch-size: must be a multiple of --group-size \(4\), got 6$"):
        config_from_args(PPOConfig, p.parse_args(["--algorithm", "rloo", "--batch-size", "6"]))


@pytest.mark.parametrize("argv,config", [
    (["sft", "--data", "d", "--out", "o"], SFTConfig()),
    (["pretrain", "--data", "d", "--out", "o"], SFTConfig(objective="mlm")),
    (["dpo", "--policy", "p", "--data", "d", "--out", "o"], DPOConfig()),
    (["rl", "--policy", "p", "--prompts", "q", "--out", "o"], PPOConfig()),
    (["reward-model", "--data", "d", "--init", "i", "--out", "o"], RewardModelConfig()),
])
def test_a_command_without_flags_trains_with_the_library_defaults(argv, config):
    """One set of defaults: the CLI's are the dataclass's (the reward model's too: 10 epochs, 3e-4)."""
    from sftrl.commands import dpo, reward_model, rl, sft

    build = {"sft": sft, "pretrain": sft, "dpo": dpo, "rl": rl, "reward-model": reward_model}[argv[0]].build_config
    assert build(build_parser().parse_args(argv)) == config
    assert (RewardModelConfig().epochs, RewardModelConfig().lr, RewardModelConfig().batch_size) == (10, 3e-4, 32)


def test_reward_model_flag_errors_come_before_tensorflow(tmp_path):
    code = ("import sys; from sftrl.cli import main\n"
            f"code = main(['reward-model', '--data', 'd', '--init', 'i', '--out', {str(tmp_path)!r}, '--lr', '0'])\n"
            "print(code, [m for m in ('torch', 'tensorflow') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stderr.strip() == "error: --lr: must be in (0.0, inf], got 0.0"
    assert result.stdout.strip().splitlines()[-1] == "2 []"
