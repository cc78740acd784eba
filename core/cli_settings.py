"""Turn a pydantic-settings class into argparse flags, so ``--help`` documents every setting."""

from __future__ import annotations

import argparse
from typing import Any, get_args, get_origin

from core.settings import S, load_settings


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_settings_arguments(
    parser: argparse.ArgumentParser, cls: type[Any], skip: set[str] | None = None
) -> None:
    """One ``--field-name`` flag per settings field, help from the field's description."""
    group = parser.add_argument_group(
        f"settings ({cls.__name__}; env GENRETAG_<NAME>, flags override env)"
    )
    for name, field in cls.model_fields.items():
        if skip and name in skip:
            continue
        env = f"GENRETAG_{name.upper()}"
        default = "computed" if field.default_factory else field.default
        help_text = f"{field.description or ''} [env {env}; default {default!r}]".strip()
        annotation = field.annotation
        if annotation is bool:
            group.add_argument(
                _flag(name), dest=f"setting_{name}", default=None,
                action=argparse.BooleanOptionalAction, help=help_text,
            )
            continue
        metavar = name.upper()
        if get_origin(annotation) is not None and type(None) in get_args(annotation):
            metavar = name.upper()
        group.add_argument(
            _flag(name), dest=f"setting_{name}", default=None, metavar=metavar, help=help_text
        )


def settings_from_args(cls: type[S], args: argparse.Namespace, **extra: Any) -> S:
    """Settings with flags given on the command line taking precedence."""
    overrides = {
        key.removeprefix("setting_"): value
        for key, value in vars(args).items()
        if key.startswith("setting_") and value is not None
    }
    overrides.update({k: v for k, v in extra.items() if v is not None})
    return load_settings(cls, **overrides)
