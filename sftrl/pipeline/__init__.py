"""The jobs made of `sftrl` commands: `sftrl pipeline --preset quick|default` (stages.py: data ->
pretraining -> SFT -> reward model -> RL -> eval -> report) and `--preset study` (study.py: every
run of the study, then its report). progress.py estimates the time they have left. Their flags are
in sftrl/commands/pipeline.py, their reports in sftrl/reports/.
"""
