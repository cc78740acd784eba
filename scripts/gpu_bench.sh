#!/usr/bin/env bash
# The pretrained taggers on a GPU host (issue 28), in under 5 minutes: each model alone (the port
# before issue 28, now, and now under float16 autocast) over batch sizes 1-64, the float16 check
# on real audio (top-5 tags unchanged), then `genretag work` with musicnn-msd on CUDA at 4 and
# 10 windows per 30 s clip. Prints the tables; writes bench/results/pretrained-cuda.{json,md}.
#
# Needs the project set up as for `make bench` (scripts/bootstrap.sh: ffmpeg, redis-server, the
# Tansu broker, .venv) with a CUDA build of torch 2.9.1 in .venv, e.g.
#   .venv/bin/pip install torch==2.9.1 torchaudio==2.9.1 --index-url https://download.pytorch.org/whl/cu128
# and the musicnn wheel (pip fetches it once into ~/.cache/genretag; or GENRETAG_MUSICNN_CACHE).
# Extra arguments go to `python -m bench.pretrained` (e.g. --models musicnn-msd --no-worker).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" - <<'PY'
import sys
import torch
if torch.version.cuda is None:
    sys.exit(f"gpu_bench.sh: torch {torch.__version__} is a CPU-only build (install a CUDA "
             "build, see the header of this script)")
if not torch.cuda.is_available():
    sys.exit(f"gpu_bench.sh: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")
print(f"gpu_bench.sh: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}", file=sys.stderr)
PY
# 290 s: what is measured by then is lost, so the sizes below fit in ~2-3 minutes on one GPU.
timeout 290 "$PY" -m bench.pretrained --device cuda --passes 2 --rounds 2 "$@"
