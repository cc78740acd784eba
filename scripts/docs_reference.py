"""MkDocs hook: the Reference pages generated from the code at build time, never by hand.

CLI (every command's ``--help``), settings (every public name of every settings class: env
variable, flag, section, default, description, which commands read it), exit codes
(:data:`genretag.core.exits.EXIT_CODES`), the Redis key layout
(:data:`genretag.core.store.keys.KEY_TABLE`), the message and event schemas (every pydantic
contract exported by :mod:`genretag.schemas`), plus deploy/README.md and bench/README.md as
pages. Run by ``mkdocs build`` (``hooks:`` in mkdocs.yml); tests/docs checks the pages.
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GENERATED = "<!-- generated from the code by scripts/docs_reference.py: do not edit -->\n\n"


# -- CLI ------------------------------------------------------------------------------------------
def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


def cli_page() -> str:
    from genretag.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: the same page everywhere
    parser = build_parser()
    parts = [GENERATED, "# Command line\n\n",
             "Every `genretag` command and its `--help`, as the installed command prints it "
             "(`python -m genretag` is the same command; `genretag --version`). Global flags "
             "(`--log-level`, `--log-format`, `--state-dir`, `--debug`) may come before or "
             "after the subcommand. An expected error prints one line on stderr and exits with "
             "its [exit code](exit-codes.md); `--debug` shows the traceback instead. Each "
             "command's `--help` lists the [settings](settings.md) it reads, with their "
             "environment variable and default. Secrets are never plain flags (they would show "
             "in `ps`): the environment (`GENRETAG_REDIS_PASSWORD`, "
             "`GENRETAG_KAFKA_SASL_PASSWORD`), `.env`, or `--redis-password-file PATH` / "
             "`--kafka-sasl-password-file PATH`. Logs: [logs](logs.md).\n\n",
             "## genretag\n\n```text\n", parser.format_help(), "```\n\n"]
    for path, sub in _commands(parser):
        parts += [f"## genretag {' '.join(path)}\n\n```text\n", sub.format_help(), "```\n\n"]
    return "".join(parts)


# -- settings ---------------------------------------------------------------------------------------
def settings_classes() -> dict[str, tuple[type, str]]:
    """Settings class name → (class, the commands that read it)."""
    from genretag.core.settings import ReaderSettings, RedisSettings, SimilaritySettings
    from genretag.producer.settings import ProducerSettings
    from genretag.worker.settings import WorkerSettings

    return {"WorkerSettings": (WorkerSettings, "work, tag"),
            "ProducerSettings": (ProducerSettings, "produce"),
            "ReaderSettings": (ReaderSettings, "dlq replay"),
            "RedisSettings": (RedisSettings, "tags, stats, dlq list|purge; the Python client"),
            "SimilaritySettings": (SimilaritySettings, "similar, index")}


def _default(field: Any) -> str:
    from pydantic import BaseModel, SecretStr

    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(its section)"
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        return f"computed at start (where this page was built: `{shown}`)"
    else:
        value = field.default
    if isinstance(value, list):
        return f"`{','.join(map(str, value))}`" if value else "(none)"
    if value is None or isinstance(value, SecretStr):
        return "(none)"
    return f"`{value}`"


def settings_rows() -> list[dict[str, str]]:
    """One row per public name: env variable, flag, section, default, description, commands."""
    from genretag.core.cli_settings import flag_name

    rows: dict[str, dict[str, str]] = {}
    for cls, commands in settings_classes().values():
        for public, (section, _field) in cls.public_fields().items():
            field = cls.field_info(public)
            row = rows.setdefault(public, {
                "public": public, "env": f"GENRETAG_{public.upper()}",
                "flag": (f"`{flag_name(public, field)}-file PATH`" if "Secret" in str(
                    field.annotation) else f"`{flag_name(public, field)}`"),
                "section": section or "(top level)", "default": _default(field),
                "description": " ".join((field.description or "").split()), "commands": ""})
            row["commands"] = ", ".join(filter(None, [row["commands"], commands]))
    return sorted(rows.values(), key=lambda r: (r["section"], r["public"]))


def settings_page() -> str:
    from genretag.core.settings import STATE_DIR_ENV

    parts = [GENERATED, "# Settings\n\n",
             "Every setting has one public name: the environment variable `GENRETAG_<NAME>` and "
             "the flag `--<name>` (a few flags are shorter, e.g. `--model` for `MODEL_PATH`). "
             "Precedence, highest first: the flag, the environment, `.env` in the current "
             "folder, the stack file `stack.env` written by `genretag stack up` (its folder: "
             f"`--state-dir`, `{STATE_DIR_ENV}`, the checkout's `.genretag/`; see "
             "[the local stack](../getting-started/quick-start.md#the-local-stack)). Secrets "
             "have no plain flag (it would show in `ps`): the environment, `.env`, or "
             "`--NAME-file PATH`. `GENRETAG_<SECTION>__<FIELD>` is accepted too.\n\n",
             "| env variable | flag | default | what | read by |\n|---|---|---|---|---|\n"]
    section = None
    for row in settings_rows():
        if row["section"] != section:
            section = row["section"]
            parts.append(f"| **{section}** | | | | |\n")
        parts.append(f"| `{row['env']}` | {row['flag']} | {row['default']} | "
                     f"{row['description'].replace('|', '&#124;')} | {row['commands']} |\n")
    return "".join(parts)


# -- exit codes, keys -------------------------------------------------------------------------------
def exit_codes_page() -> str:
    from genretag.core.exits import exit_table_markdown

    return (GENERATED + "# Exit codes\n\nEvery `genretag` command exits with one of these (the "
            "table is `genretag.core.exits.EXIT_CODES`, which the errors and the CLI use). An "
            "expected error prints one line on stderr; `--debug` shows the traceback "
            "instead.\n\n" + exit_table_markdown())


def redis_keys_page() -> str:
    from genretag.core.store.keys import KEY_TABLE

    rows = "".join(f"| `{k.pattern}` | {k.type} | {k.content} |\n" for k in KEY_TABLE)
    return (GENERATED + "# Redis key layout\n\n`P` is the key prefix "
            "(`GENRETAG_REDIS_KEY_PREFIX`, default `genretag:`). Written by the worker through "
            "one Lua script per track (`genretag.core.store.write`), read by the "
            "[Python client](client.md) and `genretag tags`; only standard commands are used, "
            "so any Redis client reads them: `HGETALL P track:<id>`, `ZREVRANGEBYSCORE "
            "P genre:<g> +inf <min> LIMIT 0 <n> WITHSCORES`.\n\n"
            "| key | type | content |\n|---|---|---|\n" + rows)


# -- schemas ----------------------------------------------------------------------------------------
def _type_text(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        return spec["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in spec:
        return " or ".join(_type_text(s) for s in spec["anyOf"])
    if spec.get("type") == "array":
        return f"array of {_type_text(spec.get('items', {}))}"
    if "enum" in spec:
        return "one of " + ", ".join(f"`{v}`" for v in spec["enum"])
    if "const" in spec:
        return f"`{spec['const']}`"
    return str(spec.get("type", "any"))


def contracts() -> list[type]:
    """Every pydantic model exported by :mod:`genretag.schemas` (messages, records, events)."""
    import genretag.schemas as schemas
    from pydantic import BaseModel

    found = [getattr(schemas, name) for name in schemas.__all__]
    return [c for c in found if isinstance(c, type) and issubclass(c, BaseModel)]


def schemas_page() -> str:
    from genretag.schemas import ReasonCode

    parts = [GENERATED, "# Message and event schemas\n\n",
             "The contracts of `genretag.schemas` (pydantic v2, frozen, unknown fields refused; "
             "`schema_version` lets a reader refuse data of a newer, incompatible writer). "
             "Kafka messages are their JSON; the Redis fields are in the "
             "[key layout](redis-keys.md).\n\n"]
    for cls in contracts():
        schema = cls.model_json_schema()
        doc = " ".join((cls.__doc__ or "").split())
        parts += [f"## {cls.__name__}\n\n{doc}\n\n",
                  "| field | type | required | description |\n|---|---|---|---|\n"]
        required = set(schema.get("required", []))
        for name, spec in schema.get("properties", {}).items():
            desc = " ".join(spec.get("description", "").split()).replace("|", "&#124;")
            parts.append(f"| `{name}` | {_type_text(spec).replace('|', '&#124;')} | "
                         f"{'yes' if name in required else 'no'} | {desc} |\n")
        parts += ["\n??? note \"JSON schema\"\n\n",
                  textwrap.indent("```json\n" + json.dumps(schema, indent=2) + "\n```", "    "),
                  "\n\n"]
    parts += ["## Reason codes\n\nWhy a track was dead-lettered (`DeadLetter.reason`):\n\n",
              "".join(f"- `{r.value}`\n" for r in ReasonCode), "\n"]
    return "".join(parts)


# -- pages kept beside their code --------------------------------------------------------------------
def copied_page(path: str, title_note: str) -> str:
    text = (ROOT / path).read_text(encoding="utf-8")
    return f"<!-- {path}, copied at build time: edit it there -->\n\n{text}\n\n{title_note}\n"


PAGES = {
    "reference/cli.md": cli_page,
    "reference/settings.md": settings_page,
    "reference/exit-codes.md": exit_codes_page,
    "reference/redis-keys.md": redis_keys_page,
    "reference/schemas.md": schemas_page,
    "guides/deploy.md": lambda: copied_page(
        "deploy/README.md", "*Source: `deploy/README.md`.* Container images (GPU and CPU "
        "worker, CLI), a compose file with Apache Kafka (KRaft) and Redis (AOF), Kubernetes "
        "manifests (kustomize base + cpu/gpu overlays, KEDA scaling on consumer lag, PDB, "
        "probes, metrics port); `deploy/validate.sh` checks them without a container engine "
        "(hadolint, compose schema and `docker-compose config`, rendered overlays, "
        "kubernetes-validate), and the test suite runs it."),
    "reports/benchmarks.md": lambda: copied_page("bench/README.md", "*Source: `bench/README.md`.*"),
}


def on_files(files, config):  # noqa: ANN001, ANN201 - the MkDocs hook signature
    """Add the generated pages to the site (in memory: nothing is written under docs/)."""
    from mkdocs.structure.files import File

    for uri, build in PAGES.items():
        files.append(File.generated(config, uri, content=build()))
    return files
