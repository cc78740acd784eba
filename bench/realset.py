"""Assemble a labelled set of real repertoire, rendered to audio, for measuring training changes.

The synthetic demo classes say nothing about real music, and FMA cannot be downloaded here. The
package registries do carry real repertoire: the scores in music21's corpus (PyPI, BSD licence;
Bach chorales, Palestrina masses, Classical string quartets, Irish and Scottish fiddle tunes,
Trecento songs). This script renders them with FluidSynth and the FluidR3 General MIDI
soundfont (Debian, MIT licence) in each style's own instrumentation, with a random tempo,
transposition and instrument choice per piece, then encodes 30 s stereo mp3 clips like a
catalog's previews. Labels are styles; ``group`` is the source piece, so a split never puts
two clips of one piece on both sides. Nothing here is committed: the script rebuilds it.

    .venv/bin/python -m bench.realset --out data/realset            # ~250 clips, a few minutes
    genretag train --labels data/realset/labels.csv --arch tdcnn

Needs: ``pip install music21==10.5.0`` and ``apt-get install fluidsynth fluid-soundfont-gm``
(the script installs both when missing and it may).
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
CLIP_SECONDS = 30.0
SAMPLE_RATE = 44100


@dataclass(frozen=True)
class Style:
    """One class: where its scores are in music21's corpus and how it is played."""

    label: str
    sources: tuple[str, ...]  # corpus composer / collection names
    programs: tuple[int, ...]  # General MIDI programs (0-based) one of which plays each piece
    clips_per_piece: int  # long pieces (quartet movements) give several consecutive clips


STYLES: tuple[Style, ...] = (
    Style("baroque_chorale", ("bach",), (19, 48, 52, 20), 1),  # organ, strings, choir, reed organ
    Style("renaissance_polyphony", ("palestrina", "josquin"), (52, 53, 19, 74), 1),  # choir, oohs
    Style("classical_quartet", ("beethoven", "mozart", "haydn"), (48, 40, 0), 4),  # strings, piano
    Style("folk_fiddle", ("ryansMammoth", "oneills1850"), (110, 40, 73, 21), 1),  # fiddle, accordion
    Style("medieval_song", ("trecento",), (74, 46, 24, 52), 1),  # recorder, harp, lute, voices
)


def ensure_tools(install: bool) -> None:
    """music21 and FluidSynth with its soundfont, installed when ``install`` and missing."""
    try:
        import music21  # noqa: F401
    except ImportError:
        if not install:
            raise SystemExit("bench.realset: pip install music21==10.5.0") from None
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "music21==10.5.0"],
                       check=True)
    if shutil.which("fluidsynth") and SOUNDFONT.is_file():
        return
    if not install:
        raise SystemExit("bench.realset: apt-get install fluidsynth fluid-soundfont-gm")
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "fluidsynth",
                    "fluid-soundfont-gm"], check=True, stdout=subprocess.DEVNULL)


def corpus_paths(source: str) -> list[Path]:
    """Score files of one composer or collection in music21's corpus, in a stable order."""
    from music21 import corpus

    paths = [Path(p) for p in corpus.getComposer(source)]
    if not paths:  # collections (ryansMammoth, trecento...) are folders, not composers
        root = Path(corpus.__file__).parent / source
        paths = [p for p in root.rglob("*") if p.suffix.lower() in {".xml", ".mxl", ".abc",
                                                                       ".krn", ".musicxml"}]
    return sorted(paths)


def scores(path: Path) -> Iterator[tuple[str, object]]:
    """(piece id, music21 score) for each piece in a file (ABC collections hold many)."""
    from music21 import converter, stream

    parsed = converter.parse(str(path))
    if isinstance(parsed, stream.Opus):
        for i, score in enumerate(parsed.scores):
            yield f"{path.parent.name}-{path.stem}-{i}", score
    else:
        yield f"{path.parent.name}-{path.stem}", parsed


def render(score, program: int, tempo_scale: float, transpose: int, work: Path,
           seconds: float) -> Path | None:
    """Score → MIDI (one instrument, scaled tempo, transposed; about its first ``seconds``) →
    FluidSynth wav; None if nothing sounded."""
    from music21 import instrument, midi, tempo

    score = score.transpose(transpose) if transpose else score
    marks = list(score.recurse().getElementsByClass(tempo.MetronomeMark))
    qpm = (marks[0].number if marks and marks[0].number else 96) * tempo_scale
    bars = _bars_for(score, seconds * qpm / 60)
    if bars is not None:  # long movements: render only what the clips use
        score = score.measures(0, bars)
    for part in score.parts:
        for old in part.recurse().getElementsByClass(instrument.Instrument):
            part.remove(old, recurse=True)
        inst = instrument.instrumentFromMidiProgram(program)
        part.insert(0, inst)
    for mark in list(score.recurse().getElementsByClass(tempo.MetronomeMark)):
        mark.activeSite.remove(mark)
    score.parts[0].insert(0, tempo.MetronomeMark(number=qpm)) if score.parts else None
    mf = midi.translate.music21ObjectToMidiFile(score)
    mid, wav = work / "piece.mid", work / "piece.wav"
    mf.open(str(mid), "wb")
    mf.write()
    mf.close()
    subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.7", "-r", str(SAMPLE_RATE), "-F",
                    str(wav), str(SOUNDFONT), str(mid)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60, preexec_fn=_cap_file_size)
    return wav if wav.is_file() and wav.stat().st_size > 44 else None


def _cap_file_size() -> None:
    """In FluidSynth's process: a few corpus MIDI files make it render without end, so its
    output file is capped (a write past it fails the render instead of filling the disk)."""
    import resource

    cap = 400 * 1024 * 1024  # ~40 min of 44.1 kHz stereo float: far more than any clip needs
    resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))


def _bars_for(score, quarters: float) -> int | None:
    """How many bars hold ``quarters`` quarter notes (None: unmeasured, or the piece is shorter)."""
    if not score.parts or score.highestTime <= quarters:
        return None
    bars = list(score.parts[0].getElementsByClass("Measure"))
    if not bars:
        return None
    for bar in bars:
        if bar.offset >= quarters:
            return int(bar.number or 0) + 1
    return None


def cut_clips(wav: Path, out_stem: Path, count: int) -> list[Path]:
    """Up to ``count`` consecutive 30 s mp3 clips (a short piece loops to fill one clip)."""
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                            "csv=p=0", str(wav)], capture_output=True, text=True, check=True)
    duration = float(probe.stdout.strip() or 0)
    if duration < 8.0:
        return []
    clips = []
    starts = [i * CLIP_SECONDS for i in range(count) if (i + 1) * CLIP_SECONDS <= duration]
    for i, start in enumerate(starts or [0.0]):
        target = out_stem.with_name(f"{out_stem.name}__{i}.mp3")
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", "-1", "-ss",
                        f"{start}", "-i", str(wav), "-t", f"{CLIP_SECONDS}", "-ac", "2", "-ar",
                        str(SAMPLE_RATE), "-c:a", "libmp3lame", "-b:a", "128k", str(target)],
                       check=True)
        clips.append(target)
    return clips


def build(out: Path, per_class: int, seed: int) -> list[tuple[str, str, str]]:
    """Render every style into ``out/<label>/`` and return (path, label, group) rows."""
    rows: list[tuple[str, str, str]] = []
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for style in STYLES:
            folder = out / style.label
            folder.mkdir(parents=True, exist_ok=True)
            paths = [p for source in style.sources for p in corpus_paths(source)]
            rng.shuffle(paths)
            made = 0
            for path in paths:
                if made >= per_class:
                    break
                try:
                    pieces = list(scores(path))
                except Exception as exc:  # noqa: BLE001 - a few corpus files do not parse
                    print(f"skip {path.name}: {type(exc).__name__}", file=sys.stderr)
                    continue
                for piece_id, score in pieces[:3]:
                    if made >= per_class:
                        break
                    group = f"{style.label}/{piece_id}"
                    try:
                        wav = render(score, rng.choice(style.programs), rng.uniform(0.85, 1.15),
                                     rng.randint(-2, 2), work,
                                     (style.clips_per_piece + 0.5) * CLIP_SECONDS)
                    except Exception as exc:  # noqa: BLE001
                        print(f"skip {piece_id}: {type(exc).__name__}: {exc}", file=sys.stderr)
                        continue
                    if wav is None:
                        continue
                    for clip in cut_clips(wav, folder / piece_id, style.clips_per_piece):
                        rows.append((clip.relative_to(out).as_posix(), style.label, group))
                        made += 1
            print(f"{style.label}: {made} clips", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/realset"))
    parser.add_argument("--per-class", type=int, default=50, help="Clips per style (default 50).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-install", action="store_true", help="Fail instead of installing.")
    args = parser.parse_args(argv)
    ensure_tools(install=not args.no_install)
    rows = build(args.out, args.per_class, args.seed)
    with (args.out / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "group"])
        writer.writerows(rows)
    print(f"{len(rows)} clips → {args.out / 'labels.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
