"""Model sets: the MSD tagger and a transfer head in one worker vs the two one-model workers
run one after the other, on the same clips, in one run.

    python -m bench.modelsets [--quick] [--tracks 24] [--seconds 30] [--rounds 3] [--out DIR]

Each side is the worker's own path (:class:`genretag.worker.process.Processor`: URI vetting,
libav decoder processes, whole-track windows, the models, the tag records) fed micro-batches
of ``batch_size`` with two in flight (the worker's ``pipeline_depth``); Kafka and Redis are
left out (the same for both sides, and small next to decoding and the backbone). The pair is
``musicnn-msd`` alone then the head alone; the set is both in one :class:`ModelSet` (one
decode, one backbone pass, two heads). Rounds alternate which side goes first; the ratio is
pair seconds / set seconds per round (the issue's target: ≥ 1.8). The head is exported on the
MSD backbone with seeded weights (:func:`bench.modelset_models.head_on`): its cost is the
same as a fitted one's. The set's tags are checked against each model's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

HEAD_LABELS = ["blues", "classical", "country", "electronic", "folk", "hiphop", "jazz", "pop",
               "rock", "world"]
#: The generated clips' styles (genretag.training.synth).
SYNTH_STYLES = ["ambient", "chiptune", "noise", "techno"]


def ensure_msd(path: Path) -> Path:
    """The musicnn MSD artifact at ``path`` (pulled from the cached musicnn wheel if absent)."""
    if not path.is_file():
        from genretag.cli import main as genretag_main

        if genretag_main(["models", "pull", "musicnn-msd", "--out", str(path)]) != 0:
            raise SystemExit(f"could not pull musicnn-msd to {path}")
    return path


def run_side(processor, messages: list, batch: int, depth: int = 2) -> tuple[float, list]:
    """Seconds to take ``messages`` through ``processor`` as the worker does (``depth``
    micro-batches in flight), and the outcomes in order."""
    start = time.perf_counter()
    jobs, outcomes = [], []
    for k in range(0, len(messages), batch):
        jobs.append(processor.submit(messages[k:k + batch]))
        if len(jobs) >= depth:
            outcomes += jobs.pop(0).result()
    for job in jobs:
        outcomes += job.result()
    return time.perf_counter() - start, outcomes


def check_same(set_outcomes: list, alone: list[list], namespaces: list[str]) -> float:
    """Largest probability difference between the set's records and each model's alone (all
    tracks must be tagged on both sides)."""
    worst = 0.0
    for k, (ns, own) in enumerate(zip(namespaces, alone, strict=True)):
        for joint, solo in zip(set_outcomes, own, strict=True):
            record = joint.record if k == 0 else joint.model_records[ns]
            if record is None or solo.record is None:
                raise SystemExit(f"a track was not tagged: {joint.dead or solo.dead}")
            a = np.array(list(record.probabilities.values()))
            b = np.array(list(solo.record.probabilities.values()))
            worst = max(worst, float(np.abs(a - b).max()))
    return worst


def rate(tracks: int, seconds: list[float]) -> float:
    """Tracks per second at the median of the rounds' seconds."""
    return round(tracks / statistics.median(seconds), 2)


def main(argv: list[str] | None = None) -> int:
    from genretag.core.settings import load_settings
    from genretag.producer.ids import path_track_id
    from genretag.schemas import TrackRef
    from genretag.training.synth import make_synth_dataset
    from genretag.worker.modelset import ModelSet
    from genretag.worker.oneshot import LocalMessage
    from genretag.worker.process import Processor
    from genretag.worker.settings import WorkerSettings

    from bench.modelset_models import head_on

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="8 tracks of 20 s, 2 rounds.")
    p.add_argument("--tracks", type=int, default=24)
    p.add_argument("--seconds", type=float, default=30.0, help="Length of each clip.")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--msd", type=Path, default=Path("models/msd_musicnn.pt"))
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    if args.quick:
        args.tracks, args.seconds, args.rounds = 8, 20.0, 2
    msd = ensure_msd(args.msd)
    with tempfile.TemporaryDirectory(prefix="genretag-modelsets-") as tmp:
        root = Path(tmp)
        head = root / "genres.pt"
        head_on(msd, HEAD_LABELS, head, name="genres")
        per_class = max(1, -(-args.tracks // 4))
        clips = make_synth_dataset(root / "audio", per_class=per_class, seconds=args.seconds,
                                   seed=7, workers=2, labels=SYNTH_STYLES)[:args.tracks]
        messages = [LocalMessage(TrackRef(track_id=path_track_id(c.path), uri=str(c.path))
                                 .model_dump_json().encode(), offset=k)
                    for k, c in enumerate(clips)]
        settings = load_settings(WorkerSettings, allowed_roots=[str(root)], device="cpu",
                                 model_path=str(msd))
        batch = settings.batching.size

        def processor(*paths: Path) -> Processor:
            section = settings.model.model_copy(update={"paths": [str(x) for x in paths]})
            return Processor(settings, ModelSet.load(section))

        together, msd_alone, head_alone = processor(msd, head), processor(msd), processor(head)
        load_before = os.getloadavg()
        rounds = []
        try:
            for r in range(args.rounds):
                sides = ["set", "pair"] if r % 2 == 0 else ["pair", "set"]
                row: dict[str, float] = {}
                for side in sides:
                    if side == "set":
                        row["set_s"], set_out = run_side(together, messages, batch)
                    else:
                        t_msd, msd_out = run_side(msd_alone, messages, batch)
                        t_head, head_out = run_side(head_alone, messages, batch)
                        row.update(msd_alone_s=t_msd, head_alone_s=t_head, pair_s=t_msd + t_head)
                row["ratio"] = row["pair_s"] / row["set_s"]
                row["first"] = sides[0]
                row["max_prob_diff"] = check_same(set_out, [msd_out, head_out], ["", "genres"])
                rounds.append(row)
                print(f"round {r + 1}: set {row['set_s']:.2f} s, pair {row['pair_s']:.2f} s "
                      f"(msd {row['msd_alone_s']:.2f} + head {row['head_alone_s']:.2f}), "
                      f"ratio {row['ratio']:.2f}, first {row['first']}", flush=True)
            passes = dict(together.models.passes)
        finally:
            for proc in (together, msd_alone, head_alone):
                proc.close()
    ratio = statistics.median(r["ratio"] for r in rounds)
    result = {
        "tracks": len(messages), "seconds_per_clip": args.seconds, "rounds": rounds,
        "median_ratio": round(ratio, 3), "target_ratio": 1.8, "meets_target": ratio >= 1.8,
        "set_tracks_per_s": rate(len(messages), [r["set_s"] for r in rounds]),
        "pair_tracks_per_s": rate(len(messages), [r["pair_s"] for r in rounds]),
        "set_model_passes": passes, "batch_size": batch,
        "decode_workers": settings.decode.workers, "decoder": settings.decode.decoder,
        "max_windows": settings.windows.max_windows, "cpus": os.cpu_count(),
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "modelsets.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
