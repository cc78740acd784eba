"""Turn a pydantic-settings class into argparse flags, so ``--help`` documents every setting.

Secrets (``SecretStr`` fields) get no plain flag — a flag's value shows in ``ps`` — but a
``--NAME-file PATH`` flag whose file holds the secret (env and ``.env`` work as well).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, get_args

from pydantic import SecretStr

from genretag.core.errors import UsageError
from genretag.core.settings import S, load_settings

#: Prefix of the argparse dest of a flag that names a file holding a secret setting.
_SECRET_FILE = "secretfile_"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in get_args(annotation)


def _default_text(field: Any) -> str:
    """The default as a user sees it: the computed value for a factory, never 'computed'."""
    value = field.default_factory() if field.default_factory else field.default
    if hasattr(value, "public"):  # a whole section: not shown as one value
        return "(see its settings)"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "(none)"
    return "(none)" if value is None else str(value)


class _RefuseSecret(argparse.Action):
    """A secret given as a plain flag: refuse it, without echoing it, and say what works."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        env = f"GENRETAG_{self.dest.removeprefix('refused_').upper()}"
        parser.error(f"{option_string} is not accepted (a flag shows in `ps`): set {env}, put "
                     f"it in .env, or use {option_string}-file PATH")


def add_settings_arguments(
    parser: argparse.ArgumentParser, cls: type[Any], skip: set[str] | None = None
) -> None:
    """One ``--public-name`` flag per setting, grouped by section, help from its description."""
    groups: dict[str | None, Any] = {}
    for public, (section, _field) in cls.public_fields().items():
        if skip and public in skip:
            continue
        if section not in groups:
            title = f"{section} settings" if section else "settings"
            groups[section] = parser.add_argument_group(
                f"{title} (env GENRETAG_<NAME>; flags override env)")
        _add_setting(groups[section], public, cls.field_info(public))


def _add_setting(group: Any, name: str, field: Any) -> None:
    """The flag of one setting (a secret gets only a ``--NAME-file`` flag)."""
    env = f"GENRETAG_{name.upper()}"
    annotation = field.annotation
    if _is_secret(annotation):
        group.add_argument(  # refused with a hint (else argparse would take it as an
            _flag(name), action=_RefuseSecret, help=argparse.SUPPRESS,  # abbreviation)
            dest=f"refused_{name}",
        )
        group.add_argument(
            _flag(name) + "-file", dest=f"{_SECRET_FILE}{name}", default=None, metavar="PATH",
            help=f"{field.description or name} Read from this file: a secret is never a "
            f"flag, which would show in `ps`. [env {env}]".replace("%", "%%"),
        )
        return
    help_text = f"{field.description or ''} [env {env}; default {_default_text(field)}]"
    help_text = help_text.replace("%", "%%")  # argparse formats help with %-substitution
    if annotation is bool:
        group.add_argument(
            _flag(name), dest=f"setting_{name}", default=None,
            action=argparse.BooleanOptionalAction, help=help_text.strip(),
        )
        return
    group.add_argument(
        _flag(name), dest=f"setting_{name}", default=None, metavar=name.upper(),
        help=help_text.strip(),
    )


def _read_secret(name: str, path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{_flag(name)}-file {path}: cannot read: {exc.strerror or exc}") from None
    return text.rstrip("\r\n")


def settings_from_args(cls: type[S], args: argparse.Namespace, **extra: Any) -> S:
    """Settings with flags given on the command line taking precedence."""
    overrides: dict[str, Any] = {}
    for key, value in vars(args).items():
        if value is None:
            continue
        if key.startswith("setting_"):
            overrides[key.removeprefix("setting_")] = value
        elif key.startswith(_SECRET_FILE):
            name = key.removeprefix(_SECRET_FILE)
            overrides[name] = _read_secret(name, value)
    overrides.update({k: v for k, v in extra.items() if v is not None})
    return load_settings(cls, **overrides)
