#!/usr/bin/env bash
# Prepare the pretrained-model parity tests (tests/training/pretrained): install the parity extras into
# .venv (TensorFlow CPU + tf-keras + librosa, ~600 MB, only additions to the lock), fetch and
# verify the musicnn wheel, and assemble the real-audio excerpts from Debian packages.
# Idempotent; call it from the test command before pytest. Without it the parity tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c "import tensorflow, tf_keras, librosa" >/dev/null 2>&1; then
  .venv/bin/pip install -q -r requirements-parity.txt
fi
export GENRETAG_MUSICNN_CACHE="${GENRETAG_MUSICNN_CACHE:-$HOME/.cache/genretag}"
.venv/bin/python -c "
from pathlib import Path; import os
from genretag.training.pretrained.pull import fetch_wheel
print(fetch_wheel(Path(os.environ['GENRETAG_MUSICNN_CACHE'])))"
if command -v apt-get >/dev/null; then
  .venv/bin/python -m tests.training.pretrained.realaudio "${GENRETAG_PARITY_AUDIO:-.genretag/parity-audio}" \
    | tail -n 1
fi
