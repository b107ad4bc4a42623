"""sftrl: the CLI and the pipeline -- the only package that imports both PyTorch and TensorFlow.

    cli.py      the entry point (`sftrl = "sftrl.cli:main"`): the parser, one cmd_* per command
    commands/   one module per command: its flags and what it runs (flags.py: training flags from
                shared/config.py's dataclasses; common.py: what several commands run)
    pipeline/   the jobs made of commands: the quick and default presets (stages.py) and the study
                (study.py), each stage an ordinary `sftrl` command
    reports/    what the jobs write from the runs' files: the pipeline and study reports, their
                plots, the HTML page, `sftrl eval`'s table, human evaluation's sheet and score
    parity/     the parity registry (registry.py), its cases (cases/, one module per level) and
                its teaching page (page.py)

Dependencies point one way: cli -> commands -> {pipeline, reports, parity} -> shared/torch_impl/tf_impl;
no command module imports another (tests/test_layering.py checks it).
"""

__version__ = "0.1.0"
