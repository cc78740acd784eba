"""Settings in sections, each a small frozen model used directly by the code that needs it.

A process's settings (e.g. ``WorkerSettings``) hold sections (``kafka``, ``redis``, ``decode``,
``windows`` …); code receives its section (``settings.redis``), never a copy of its fields.
Every field also has one **public name**, flat and stable: the section's ``public_prefix`` plus
the field's name (``redis`` + ``url`` → ``redis_url``), or the name a field declares with
:func:`setting` (``windows.skip_start_s`` is ``window_skip_start_s``). The public name is the
environment variable ``GENRETAG_<NAME>``, the flag ``--<name>`` and the keyword a test may pass,
so deployments keep working whatever the code's structure. ``GENRETAG_<SECTION>__<FIELD>``
(pydantic-settings' nested style) is accepted as well.

Precedence (highest first): keyword overrides (flags), the environment, ``.env``, the local
stack file written by ``genretag stack up``. One settings object per process, built once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from dotenv import dotenv_values
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

ENV_PREFIX = "GENRETAG_"


def expand_path(value: str | os.PathLike[str]) -> str:
    """``~`` and ``$VARS`` expanded: the one way every path setting is read (a ``.env`` file
    often holds ``~/music``, which no shell expanded)."""
    return os.path.expandvars(os.path.expanduser(os.fspath(value)))


def _split_csv(value: Any) -> Any:
    """``a,b`` or a JSON array ``["a","b"]`` → list of strings (env vars and flags)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _expand_each(value: Any) -> Any:
    return [expand_path(v) for v in value] if isinstance(value, list) else value


#: A list setting given as ``a,b`` (or a JSON array).
CsvList = Annotated[list[str], BeforeValidator(_split_csv)]
#: A list of paths: comma-separated, each with ``~``/``$VARS`` expanded (:func:`expand_path`).
PathList = Annotated[list[str], BeforeValidator(_expand_each), BeforeValidator(_split_csv)]
def _expand_one(value: Any) -> Any:
    return expand_path(value) if isinstance(value, str | os.PathLike) else value


#: One path, ``~``/``$VARS`` expanded.
ExpandedPath = Annotated[Path, BeforeValidator(_expand_one)]
#: One path kept as text (what a client library takes), ``~``/``$VARS`` expanded.
ExpandedPathText = Annotated[str, BeforeValidator(_expand_one)]


def setting(default: Any = ..., *, public: str | None = None, flag: str | None = None,
            **kwargs: Any) -> Any:
    """A section field whose public name is ``public`` (default: section prefix + name).

    ``flag``: its command-line flag when that differs from the public name (``--model`` for
    ``model_path``); the public name's flag then stays as a deprecated alias. The environment
    variable is always ``GENRETAG_<PUBLIC NAME>``.
    """
    extra = {k: v for k, v in (("public", public), ("flag", flag)) if v} or None
    if "default_factory" in kwargs:
        return Field(json_schema_extra=extra, **kwargs)
    return Field(default, json_schema_extra=extra, **kwargs)


class Section(BaseModel):
    """One group of settings (frozen); ``public_prefix`` + field name is each field's public
    name unless the field says otherwise (:func:`setting`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True,
                              hide_input_in_errors=True)
    public_prefix: ClassVar[str] = ""

    @classmethod
    def public_names(cls) -> dict[str, str]:
        """field name → public name."""
        out = {}
        for name, field in cls.model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            out[name] = str(extra.get("public") or f"{cls.public_prefix}{name}")
        return out


def _masked(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return value


class Settings(BaseModel):
    """A process's settings: sections (fields typed as :class:`Section`) plus top-level fields.

    Built by :func:`load_settings` (flags, environment, ``.env``, stack file) or directly with
    public names (``WorkerSettings(redis_url=..., max_windows=8)``) or nested values.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True,
                              hide_input_in_errors=True)

    # -- the public names ------------------------------------------------------------------
    @classmethod
    def sections(cls) -> dict[str, type[Section]]:
        """section attribute → its class."""
        return {name: field.annotation for name, field in cls.model_fields.items()
                if isinstance(field.annotation, type) and issubclass(field.annotation, Section)}

    @classmethod
    def public_fields(cls) -> dict[str, tuple[str | None, str]]:
        """public name → (section or None for a top-level field, field name)."""
        out: dict[str, tuple[str | None, str]] = {}
        sections = cls.sections()
        for name in cls.model_fields:
            if name in sections:
                for field, public in sections[name].public_names().items():
                    out[public] = (name, field)
            else:
                out[name] = (None, name)
        return out

    @classmethod
    def field_info(cls, public: str) -> Any:
        """The pydantic ``FieldInfo`` behind a public name."""
        section, field = cls.public_fields()[public]
        owner = cls.sections()[section] if section else cls
        return owner.model_fields[field]

    @classmethod
    def env_names(cls) -> set[str]:
        """Every ``GENRETAG_*`` variable this class reads."""
        return {ENV_PREFIX + name.upper() for name in cls.public_fields()}

    @model_validator(mode="before")
    @classmethod
    def _nest_public_names(cls, data: Any) -> Any:
        """Accept public (flat) names beside nested values: ``redis_url`` → ``redis.url``."""
        if not isinstance(data, Mapping):
            return data
        table = cls.public_fields()
        nested: dict[str, Any] = {}
        for key, value in data.items():
            if key in table and table[key][0] is not None:
                section, field = table[key]
                current = nested.get(section)
                if isinstance(current, BaseModel):
                    current = current.model_dump()
                nested[section] = {**(current or {}), field: value}
            elif key in cls.sections() and isinstance(nested.get(key), dict):
                given = value.model_dump() if isinstance(value, BaseModel) else dict(value)
                nested[key] = {**given, **nested[key]}
            else:
                nested[key] = value
        return nested

    # -- reading them back -----------------------------------------------------------------
    def public(self) -> dict[str, Any]:
        """public name → value (secrets stay :class:`SecretStr`)."""
        out = {}
        for public, (section, field) in self.public_fields().items():
            owner = getattr(self, section) if section else self
            out[public] = getattr(owner, field)
        return out

    def masked(self) -> dict[str, Any]:
        """Settings for logs by public name, secrets masked (``**********``)."""
        return {k: _masked(v) for k, v in self.public().items()}

    def as_env(self, skip: frozenset[str] = frozenset()) -> dict[str, str]:
        """``GENRETAG_<NAME>`` → text of every set value (secrets revealed: for a child
        process's environment, never for logs), e.g. to start a worker with these settings."""
        env: dict[str, str] = {}
        for name, value in self.plain().items():
            if value is None or name in skip:
                continue
            if isinstance(value, list | tuple):
                text = json.dumps([str(v) for v in value])
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            env[ENV_PREFIX + name.upper()] = text
        return env

    def updated(self, **public_values: Any) -> Any:
        """A validated copy with some settings changed, given by public (or section) name."""
        return type(self).model_validate({**self.plain(), **public_values})

    def plain(self) -> dict[str, Any]:
        """public name → value, secrets as plain text (to build other settings from these)."""
        out = {}
        for public, value in self.public().items():
            out[public] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return out


S = TypeVar("S", bound=Settings)


def _env_values(names: Mapping[str, tuple[str | None, str]],
                sources: list[Mapping[str, str | None]]) -> dict[str, Any]:
    """The values of ``sources`` (lowest precedence first) for public names, by env name."""
    upper = {ENV_PREFIX + public.upper(): public for public in names}
    nested = {ENV_PREFIX + f"{section}__{field}".upper(): public
              for public, (section, field) in names.items() if section}
    out: dict[str, Any] = {}
    for source in sources:
        for key, value in source.items():
            if value is None:
                continue
            key = key.upper()
            public = upper.get(key) or nested.get(key)
            if public is not None:
                out[public] = value
    return out


def iter_env_files(files: tuple[Path | str, ...]) -> Iterator[Mapping[str, str | None]]:
    for path in files:
        if Path(path).is_file():
            yield dotenv_values(path)


def load_settings(cls: type[S], *, env_files: tuple[Path | str, ...] | None = None,
                  **overrides: Any) -> S:
    """Settings from flags (``overrides`` by public name, None ignored), the environment,
    ``.env`` and the local stack file (in that precedence)."""
    from genretag.core.settings.statedir import stack_env_file

    files = env_files if env_files is not None else (stack_env_file(), ".env")
    values = _env_values(cls.public_fields(), [*iter_env_files(files), os.environ])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls.model_validate(values)
