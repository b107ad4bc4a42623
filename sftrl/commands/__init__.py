"""One module per `sftrl` command; each has `add_arguments(p)` (argparse only: no framework
imported, so `sftrl --help` answers at once) and `run(args)`, which checks every input before it
imports PyTorch or TensorFlow.

    data          sftrl data, sftrl tokenizer
    sft           sftrl sft, sftrl pretrain (PyTorch)
    rl            sftrl rl (= sftrl ppo; PPO, GRPO, RLOO, REINFORCE in TensorFlow)
    reward_model  sftrl reward-model (TensorFlow)
    dpo           sftrl dpo (PyTorch)
    eval          sftrl eval
    human_eval    sftrl human-eval export | rate | score
    pipeline      sftrl pipeline: its flags; the jobs themselves are in sftrl/pipeline/
    parity        sftrl parity: its flags; the registry is in sftrl/parity/
    bench         sftrl bench: its flags; the suites are in benchmarks/

Two helper modules, not commands: `flags` (a config dataclass's fields as flags, and back) and
`common` (the --reward functions, the held-out comparison with the SFT model). A command module
never imports another command module; what two of them need goes into a helper.
"""
