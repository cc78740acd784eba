"""``train --from-store`` at catalog scale: a head on N stored embeddings (default 100,000).

    python -m bench.from_store [--quick] [--tracks 100000] [--out bench/results]

Synthetic 200-d track vectors (musicnn's ``penultimate`` size; ten styles as clusters) are
written to a real redis-server through the embeddings sink's writer, with a labels CSV naming
the tracks by id (the audio files need not exist: nothing is decoded); then the whole
``train_from_store`` run is timed (Redis reads, the LBFGS head with its C chosen on
validation, thresholds, scores, the exported artifact). The issue's target: < 60 s on 2 cores;
the process's CPU seconds are reported beside the wall time, which a busy machine stretches.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchaudio

STYLES = 10
DIM = 200
#: Spread of a style around its centre: overlapping styles (accuracy ~0.9), not separable ones.
SPREAD = 4.0


def backbone(path: Path) -> Path:
    """A musicnn-shaped schema-2 artifact with a 200-d embedding (random weights)."""
    from genretag.core.artifact import save_artifact, weights_sha256
    from genretag.schemas import EmbeddingSpec, LogMelParams, ModelManifest
    from genretag.training.pretrained.convert import PretrainedTagger
    from genretag.training.pretrained.nets import Musicnn

    torch.manual_seed(0)
    net = Musicnn(3, midend=8, backend=DIM, frontend_scale=0.1).eval()
    scripted = torch.jit.script(PretrainedTagger(net).eval())
    sha = weights_sha256(scripted)
    labels = ["a", "b", "c"]
    return save_artifact(scripted, ModelManifest(
        schema_version=2, name="bench-musicnn", version="bench-1", labels=labels,
        sample_rate=16000, clip_seconds=3.0, frontend=LogMelParams(),
        thresholds={x: 0.5 for x in labels}, sha256=sha,
        embedding=EmbeddingSpec(name="penultimate", size=DIM, backbone="bench-musicnn",
                                backbone_sha256=sha),
        torch_version=torch.__version__, torchaudio_version=torchaudio.__version__), path)


def main(argv: list[str] | None = None) -> int:
    from genretag.cli.stack import LocalStack
    from genretag.core.artifact import load_artifact
    from genretag.core.settings import RedisSection
    from genretag.core.store import EmbeddingWriter, KeyLayout, TrackVector, connect
    from genretag.training.config import TrainConfig
    from genretag.training.from_store import train_from_store
    from genretag.training.readers import read_labels_csv

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="5,000 tracks.")
    p.add_argument("--tracks", type=int, default=100_000)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    n = 5_000 if args.quick else args.tracks
    with tempfile.TemporaryDirectory(prefix="bench-fromstore-") as tmp:
        root = Path(tmp)
        stack = LocalStack(root / "stack")
        stack.state_dir.mkdir(parents=True)
        stack.start_redis()
        try:
            art = backbone(root / "bb.pt")
            space = load_artifact(art)[1].embedding.space
            redis = RedisSection(url=stack.redis_url, key_prefix="bench:")
            writer = EmbeddingWriter(connect(redis, binary=True), KeyLayout("bench:"))
            rng = np.random.default_rng(0)
            centres = rng.standard_normal((STYLES, DIM)).astype(np.float32)
            style = rng.integers(0, STYLES, n)
            vectors = centres[style] + SPREAD * rng.standard_normal((n, DIM), dtype=np.float32)
            started = time.perf_counter()
            for s in range(0, n, 1000):
                writer.write(TrackVector(f"t{i}", vectors[i], space, "bench-1")
                             for i in range(s, min(n, s + 1000)))
            write_s = time.perf_counter() - started
            labels = root / "labels.csv"
            with open(labels, "w", newline="") as fh:
                out = csv.writer(fh)
                out.writerow(["path", "label", "id"])
                for i in range(n):
                    out.writerow([f"audio/t{i}.mp3", f"style{style[i]}", f"t{i}"])
            items = read_labels_csv(labels, check_files=False)
            cfg = TrainConfig(model="transfer", backbone=art, dataset="bench", device="cpu")
            started, cpu = time.perf_counter(), time.process_time()
            report = train_from_store(items, cfg, root / "head.pt", redis)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        finally:
            stack.stop()
    result = {"tracks": n, "dim": DIM, "styles": STYLES, "threads": torch.get_num_threads(),
              "cpus": os.cpu_count(), "load_1m": os.getloadavg()[0],
              "store_write_s": round(write_s, 2), "from_store_total_s": round(seconds, 2),
              "from_store_cpu_s": round(cpu, 2),
              "head_fits": [{k: h.get(k) for k in ("C", "rows", "iterations", "seconds",
                                                   "selected")} for h in report.head_history],
              "read_s": round(report.decode_seconds, 2), "fit_s": round(report.fit_seconds, 2),
              "test_accuracy": report.test_accuracy, "found": report.from_store.found,
              "missing": report.from_store.missing, "target_s": 60,
              "met": seconds < 60}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"from_store-{n}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
