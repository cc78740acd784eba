"""The documentation's Reference pages are generated from the code, and say all of it.

``scripts/docs_reference.py`` is the MkDocs hook that builds them; ``scripts/test.sh`` runs
``mkdocs build --strict`` (broken links fail it). These tests check the pages' content against
the code they come from, so a new setting, key, contract or command cannot go undocumented.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from genretag.core.exits import EXIT_CODES
from genretag.core.store.keys import KEY_TABLE, KeyLayout

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ref():
    spec = importlib.util.spec_from_file_location("docs_reference",
                                                  ROOT / "scripts" / "docs_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_page_has_every_public_name_with_env_default_and_description(ref) -> None:
    page = ref.settings_page()
    for cls, _commands in ref.settings_classes().values():
        for public in cls.public_fields():
            row = next((line for line in page.splitlines()
                        if line.startswith(f"| `GENRETAG_{public.upper()}` |")), None)
            assert row is not None, public
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert cells[1].startswith("`--") and cells[2] and cells[4], (public, cells)
            if cls.field_info(public).description:
                assert cells[3], public
    assert "| `GENRETAG_MODEL_PATH` | `--model` | `models/demo.pt` |" in page
    assert "`--redis-password-file PATH`" in page  # a secret: never a plain flag
    assert "None" not in page


def test_key_table_names_every_key_the_layout_builds() -> None:
    layout = KeyLayout("P ")
    built = {layout.track("<track_id>"), layout.genre("<label>"), layout.tag("<label>"),
             layout.kind("<kind>"), layout.model("<version>"), layout.genres, layout.models,
             layout.dlq, layout.dlq_msg, layout.embedding("<track_id>"), layout.embedding_seq,
             layout.embedding_log, layout.namespaces, layout.for_model("<name>").prefix}
    assert {k.pattern for k in KEY_TABLE} == built
    covered = {"track", "genre", "tag", "kind", "model", "genres", "models", "dlq", "dlq_msg",
               "embedding", "embedding_seq", "embedding_log",
               "namespaces", "for_model", "namespace", "root_prefix",
               "prefix", "label", "dead_letter_slot"}  # label/slot: choose among the above
    public = {name for name in dir(KeyLayout) if not name.startswith("_")}
    assert public <= covered, public - covered


def test_redis_keys_and_exit_code_pages_come_from_their_tables(ref) -> None:
    keys = ref.redis_keys_page()
    assert all(f"| `{k.pattern}` | {k.type} |" in keys for k in KEY_TABLE)
    exits = ref.exit_codes_page()
    assert all(f"| {row.code.value} | {row.meaning} |" in exits for row in EXIT_CODES)


def test_cli_page_has_every_command(ref) -> None:
    from genretag.cli import build_parser

    page = ref.cli_page()
    for path, _ in ref._commands(build_parser()):
        assert f"## genretag {' '.join(path)}\n" in page, path
    assert "## genretag dlq replay\n" in page and "--model PATH" in page


def test_schemas_page_has_every_contract_and_reason(ref) -> None:
    from genretag.schemas import ReasonCode

    page = ref.schemas_page()
    names = [c.__name__ for c in ref.contracts()]
    assert {"TrackRef", "TagRecord", "DeadLetter", "ModelManifest"} <= set(names)
    for cls in ref.contracts():
        assert f"## {cls.__name__}\n" in page
        for field in cls.model_fields:
            assert f"| `{field}` |" in page, (cls.__name__, field)
    assert all(f"- `{r.value}`" in page for r in ReasonCode)


def test_every_nav_page_exists() -> None:
    generated = {"reference/cli.md", "reference/settings.md", "reference/exit-codes.md",
                 "reference/redis-keys.md", "reference/schemas.md", "guides/deploy.md",
                 "reports/benchmarks.md"}
    nav = re.findall(r":\s*([\w./-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert len(nav) > 20
    for page in nav:
        assert page in generated or (ROOT / "docs" / page).is_file(), page


def test_readme_is_a_front_page_whose_links_resolve() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 250
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
