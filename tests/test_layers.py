"""The layer contracts in pyproject.toml hold, and a back-edge really fails them.

``lint-imports`` sees static imports only, so a second check forbids dynamic ones
(``importlib.import_module``/``__import__``) in the layered packages.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("genretag",)
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the packages under ``root`` with root's pyproject.toml."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
    )


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory) -> Path:
    """The layered packages and pyproject.toml, copied so a test can add an import."""
    root = tmp_path_factory.mktemp("layers")
    shutil.copy(ROOT / "pyproject.toml", root)
    for name in PACKAGES:
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    clean = lint(root)  # the copy itself passes: a failure below is the probe's doing
    assert clean.returncode == 0, clean.stdout + clean.stderr
    return root


def test_contracts_are_kept() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("genretag/core/_probe.py", "import genretag.worker.settings\n", "Layers"),  # library → service
        ("genretag/schemas/_probe.py", "import genretag.core.settings\n", "Layers"),  # contracts → library
        ("genretag/worker/_probe.py", "import genretag.cli\n", "Layers"),  # service → CLI
        ("genretag/training/_probe.py", "from genretag.worker import settings\n",
         "independence"),  # sibling
        ("genretag/core/audio/libav/_probe.py", "import genretag.core.audio.ffmpeg.decode\n",
         "Audio backends never import each other"),  # backend → backend
        ("genretag/worker/_probe.py", "from genretag.core.audio.libav import pool\n",
         "Services reach the audio backends through open_decoder only"),  # around open_decoder
    ],
)
def test_a_back_edge_fails_the_build(tree_copy: Path, module: str, line: str,
                                     contract: str) -> None:
    probe = tree_copy / module
    probe.write_text(line)
    try:
        result = lint(tree_copy)
    finally:
        probe.unlink()
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    if contract == "independence":
        assert "Services never import each other BROKEN" in result.stdout
    elif contract != "Layers":
        assert f"{contract} BROKEN" in result.stdout


def test_no_dynamic_imports_in_layered_packages() -> None:
    """A dynamic import is an edge lint-imports cannot see: the layered code has none."""
    pattern = re.compile(r"\bimport_module\(|\b__import__\(")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for name in PACKAGES
        for path in (ROOT / name).rglob("*.py")
        for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(text)
    ]
    assert not offenders, offenders
