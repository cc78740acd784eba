"""Turn a pydantic-settings class into argparse flags, so ``--help`` documents every setting.

Secrets (``SecretStr`` fields) get no plain flag — a flag's value shows in ``ps`` — but a
``--NAME-file PATH`` flag whose file holds the secret (env and ``.env`` work as well).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

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


class _DeprecatedFlag(argparse.Action):
    """An old spelling of a flag: one warning line on stderr, then the value is taken."""

    def __init__(self, *args: Any, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        print(f"{parser.prog}: {option_string} is deprecated and goes in the next release; use "
              f"{self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def flag_name(name: str, field: Any) -> str:
    """The flag of a setting: the one it declares (``setting(flag=...)``), else its public
    name's."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return _flag(str(extra.get("flag") or name))


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
    flag = flag_name(name, field)
    if flag != _flag(name):  # renamed: the public name's flag stays, deprecated, for a release
        help_text += f" ({_flag(name)}: deprecated alias)"
        group.add_argument(_flag(name), dest=f"setting_{name}", default=None, help=argparse.SUPPRESS,
                           action=_DeprecatedFlag, new=flag, metavar=name.upper())
    add_field_flag(group, flag.removeprefix("--").replace("-", "_"), field,
                   dest=f"setting_{name}", help_text=help_text)


def add_field_flag(group: Any, name: str, field: FieldInfo, *, dest: str, help_text: str,
                   aliases: Sequence[str] = (), convert: bool = False) -> None:
    """One flag for a pydantic field, ``--no-NAME`` too for a bool. With ``convert`` the value
    is parsed and checked against the field's type and constraints when the line is parsed
    (a list from commas; a Literal's values become the choices)."""
    flags = [_flag(name), *aliases]
    help_text = help_text.replace("%", "%%").strip()  # argparse formats help with %-substitution
    if field.annotation is bool:
        group.add_argument(*flags, dest=dest, default=None,
                           action=argparse.BooleanOptionalAction, help=help_text)
        return
    options: dict[str, Any] = {"metavar": _metavar(name, field.annotation)}
    if convert:  # a Literal shows its choices, a path PATH
        choices = _literal_choices(field.annotation)
        options = {"type": _converter(name, field), **(
            {"choices": choices} if choices else {"metavar": _metavar(name, field.annotation)})}
    group.add_argument(*flags, dest=dest, default=None, help=help_text, **options)


def add_model_arguments(
    group: Any, cls: type[BaseModel], *, dest_prefix: str,
    default_text: Callable[[str, FieldInfo], str | None], only: Collection[str] | None = None,
    skip: Collection[str] = (), flatten: Collection[str] = (),
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """One ``--field-name`` flag per field of a pydantic model (not a settings class: no env),
    help from the field's description plus ``[default_text(path, field)]``; the fields of a
    nested model named in ``flatten`` get flags of their own (``frontend.n_fft``: ``--n-fft``).
    Values are checked at parse time; ``model_overrides`` collects the ones given."""
    seen: set[str] = set()
    for path, field in _model_fields(cls, flatten):
        top = path.split(".")[0]
        if top in skip or (only is not None and top not in only):
            continue
        name = path.rsplit(".", 1)[-1]
        if name in seen:
            raise ValueError(f"{cls.__name__}: two fields would both be {_flag(name)}")
        seen.add(name)
        default = default_text(path, field)
        help_text = (field.description or "") + (f" [{default}]" if default else "")
        add_field_flag(group, name, field, dest=dest_prefix + path, help_text=help_text,
                       aliases=(aliases or {}).get(path, ()), convert=True)


def model_overrides(args: argparse.Namespace, dest_prefix: str) -> dict[str, Any]:
    """The values of ``add_model_arguments`` flags given on the line, by dotted field path."""
    return {key[len(dest_prefix):]: value for key, value in vars(args).items()
            if key.startswith(dest_prefix) and value is not None}


def _model_fields(cls: type[BaseModel], flatten: Collection[str], prefix: str = ""
                  ) -> list[tuple[str, FieldInfo]]:
    fields: list[tuple[str, FieldInfo]] = []
    for name, field in cls.model_fields.items():
        nested = field.annotation
        if name in flatten and isinstance(nested, type) and issubclass(nested, BaseModel):
            fields += _model_fields(nested, (), f"{prefix}{name}.")
        else:
            fields.append((prefix + name, field))
    return fields


def _metavar(name: str, annotation: Any) -> str:
    return "PATH" if Path in (annotation, *get_args(annotation)) else name.upper()


def _literal_choices(annotation: Any) -> list[Any] | None:
    return list(get_args(annotation)) if get_origin(annotation) is Literal else None


def _converter(name: str, field: FieldInfo) -> Callable[[str], Any]:
    """``text`` → the field's value, or an argparse error with pydantic's reason."""
    annotation = field.annotation
    adapter = TypeAdapter(Annotated[(annotation, *field.metadata)] if field.metadata
                          else annotation)
    sequence = get_origin(annotation) in (tuple, list)

    def convert(text: str) -> Any:
        value = [part.strip() for part in text.split(",") if part.strip()] if sequence else text
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(
                "; ".join(err["msg"] for err in exc.errors())) from None

    convert.__name__ = name
    return convert


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
