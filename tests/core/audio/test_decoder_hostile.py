"""The faults suite's hostile inputs through both decoders: the same reason code for each.

Files, paths and schemes of tests/faults/test_hostile_input.py, vetted by ``resolve_source``
and decoded by the FFmpeg command line and by the libav decoder processes; then the worker's
own length and silence checks. Each must end in the outcome the faults suite allows, and both
decoders must agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genretag.core.audio.decoders import DecodeOptions, open_decoder
from genretag.core.audio.uri import resolve_source
from genretag.core.errors import PermanentError
from tests.faults.test_hostile_input import (
    MAX_FILE_BYTES,
    TAGGED,
    hostile_cases,
    make_files,
)
from genretag.core.audio.aggregate import SILENCE_RMS

OPTS = DecodeOptions(sample_rate=22050, max_seconds=24.0, timeout_s=30.0)
MIN_SECONDS = 1.0


pytestmark = pytest.mark.heavy  # FFmpeg/decoder processes, TensorFlow or training


def outcome(uri: str, roots: list[str], decode) -> str:
    """``tagged`` or the reason code, as the worker would decide (validate, decode, checks)."""
    try:
        wave = decode(resolve_source(uri, roots, max_file_bytes=MAX_FILE_BYTES), OPTS)
    except PermanentError as exc:
        return str(exc.reason)
    if len(wave) < MIN_SECONDS * OPTS.sample_rate:
        return "too_short"
    if float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) < SILENCE_RMS:
        return "silent"
    return TAGGED


def test_hostile_inputs_get_the_same_reasons_from_both_decoders(tmp_path: Path) -> None:
    from genretag.training.synth import synth_clip

    clip = synth_clip(tmp_path / "clips" / "clip.mp3", "techno", 2.5, seed=7)
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    files = make_files(inside, outside, clip)
    cases = [c for c in hostile_cases(files, inside, outside) if c.track_id and c.value]
    cases = [c for c in cases if c.expected != ("bad_message",)]
    extra = {"good clip": str(clip),
             "file named 'concat:a.mp3|b.mp3'": str(files["colon_pipe_name"]),
             "unicode file name": str(files["unicode_name"])}
    roots = [str(inside), str(clip.parent)]
    ffmpeg, libav = open_decoder("ffmpeg"), open_decoder("libav", 2)
    try:
        got = {}
        for case in cases:
            uri = json.loads(case.value)["uri"]
            got[case.name] = (outcome(uri, roots, ffmpeg.decode_audio),
                              outcome(uri, roots, libav.decode_audio), case.expected)
        for name, uri in extra.items():
            got[name] = (outcome(uri, roots, ffmpeg.decode_audio),
                         outcome(uri, roots, libav.decode_audio), (TAGGED,))
        restarts = libav.pool.restarts  # type: ignore[attr-defined]
    finally:
        libav.close()
    assert len(got) >= 30
    disagree = {n: g for n, g in got.items() if g[0] != g[1]}
    wrong = {n: g for n, g in got.items() if g[1] not in g[2]}
    assert not disagree, disagree
    assert not wrong, wrong
    assert restarts == 0  # every bad file is answered by the decoder process: none kills it


@pytest.mark.parametrize("name", ["garbage_middle", "random", "truncated"])
def test_damaged_mp3s_decode_to_the_same_length_as_the_cli(tmp_path: Path, name: str) -> None:
    """Bad packets are skipped as the CLI skips them: same amount of audio comes out."""
    from genretag.training.synth import synth_clip

    clip = synth_clip(tmp_path / "clips" / "clip.mp3", "techno", 2.5, seed=7)
    files = make_files(tmp_path / "in", tmp_path / "out", clip)
    source = resolve_source(str(files[name]), [str(tmp_path / "in")])
    ffmpeg, libav = open_decoder("ffmpeg"), open_decoder("libav", 1)
    try:
        try:
            cli = len(ffmpeg.decode_audio(source, OPTS))
        except PermanentError as exc:
            cli = str(exc.reason)
        try:
            ours = len(libav.decode_audio(source, OPTS))
        except PermanentError as exc:
            ours = str(exc.reason)
    finally:
        libav.close()
    if isinstance(cli, int) and isinstance(ours, int):
        assert abs(cli - ours) <= 0.05 * OPTS.sample_rate, (cli, ours)
    else:
        assert cli == ours
