"""Training flags from the config dataclasses of `shared/config.py`: one mechanism for every command.

A field becomes the flag `--field-name`: its type and default come from the dataclass, its help
text from the field's trailing `# comment` in the source. The command's argparse namespace then
builds the config, whose own validation speaks for the flag:

    add_config_flags(p, PPOConfig, ["iterations", "lr", "xla"])
    config = config_from_args(PPOConfig, args)   # ConfigError("lr", ...) -> SftrlError("--lr: ...")

A boolean field is a switch that sets the other value than its default: `--whiten-rewards` for a
field that is False by default, `--no-xla` for one that is True. Also here: the argparse types of
flags that are no config field (`positive_int`, `non_negative_int`).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import typing

from shared.errors import ConfigError, SftrlError


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def flag_name(field: str) -> str:
    """The flag of a config field: `batch_size` -> `--batch-size`."""
    return "--" + field.replace("_", "-")


@functools.cache
def field_comments(config_class) -> dict[str, str]:
    """field -> the trailing `# comment` of its line, from the source of the class and of its
    dataclass bases (a subclass that redeclares a field without a comment keeps its base's).
    A comment may go on over the next lines: comment-only lines whose `#` is in the same column."""
    comments = {}
    for cls in reversed(config_class.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        source = textwrap.dedent(inspect.getsource(cls))
        lines = source.splitlines()
        found = {token.start: token.string.lstrip("#").strip()  # (line, column) -> its text
                 for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT}
        trailing = {line: (column, text) for (line, column), text in found.items()
                    if lines[line - 1][:column].strip()}
        for node in ast.parse(source).body[0].body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.end_lineno in trailing:
                column, text = trailing[node.end_lineno]
                line = node.end_lineno + 1
                while (line, column) in found and not lines[line - 1][:column].strip():
                    text, line = f"{text} {found[line, column]}", line + 1
                comments[node.target.id] = text
    return comments


def _value_type(config_class, field: str):
    """int, float, str or bool: the field's annotation, `X | None` read as X."""
    hint = typing.get_type_hints(config_class)[field]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_config_flags(parser, config_class, fields, help_overrides=None, *, choices=None, defaults=None) -> None:
    """Add `--field-name` for each field of `config_class` to `parser` (or to an argparse group).

    help_overrides: field -> help text instead of the field's comment (CLI-only detail);
    choices: field -> the values argparse accepts; defaults: field -> this command's default
    instead of the dataclass's. The help ends with the default, unless that is None (unset)."""
    help_overrides, choices, defaults = help_overrides or {}, choices or {}, defaults or {}
    comments = field_comments(config_class)
    known = {f.name: f for f in dataclasses.fields(config_class)}
    for field in fields:
        if field not in known:
            raise ValueError(f"{config_class.__name__} has no field {field!r}")
        default = defaults.get(field, known[field].default)
        text = help_overrides.get(field, comments.get(field, ""))
        kind = _value_type(config_class, field)
        if kind is bool:
            if default and field not in help_overrides:
                text = f"do not {text}"
            parser.add_argument(flag_name(f"no_{field}" if default else field), dest=field, action="store_const",
                                const=not default, default=default, help=text.replace("%", "%%"))
            continue
        if default is not None:
            text = f"{text} (default {default})" if text else f"default {default}"
        parser.add_argument(flag_name(field), type=kind, default=default, choices=choices.get(field),
                            help=text.replace("%", "%%"))


def config_from_args(config_class, args):
    """The config from the parsed flags (every field the namespace holds); a value the config
    refuses is one line naming the flag: `--lr: must be in (0.0, inf], got 0.0`."""
    names = {f.name for f in dataclasses.fields(config_class)}
    try:
        return config_class(**{name: value for name, value in vars(args).items() if name in names})
    except ConfigError as e:
        raise SftrlError(f"{flag_name(e.field)}: {e.problem}") from None
