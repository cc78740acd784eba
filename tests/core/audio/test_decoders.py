"""Decoder selection and the manifest's record of it: old artifacts load, mismatches are named;
and a batch split over the decoders."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from genretag.core.audio.decoders import decoder_info, mismatch, open_decoder, split_evenly
from genretag.core.audio.ffmpeg.decoder import FFmpegDecoder
from genretag.core.audio.libav.decoder import LibavDecoder
from genretag.schemas import DecoderInfo, ModelManifest

BASE = dict(version="v1", labels=["a", "b"], sample_rate=22050, clip_seconds=30.0,
            thresholds={"a": 0.5, "b": 0.5}, sha256="0" * 64)


def test_manifest_records_the_decoder_and_old_manifests_still_load() -> None:
    old = ModelManifest.model_validate_json(ModelManifest(**BASE).model_dump_json(
        exclude={"decoder"}))
    assert old.decoder is None
    info = decoder_info("libav")
    new = ModelManifest(**BASE, decoder=info)
    assert ModelManifest.model_validate_json(new.model_dump_json()).decoder == info
    with pytest.raises(ValidationError):
        DecoderInfo(name="gstreamer")
    with pytest.raises(ValidationError):
        DecoderInfo(name="libav", extra_field=1)


def test_decoder_info_names_the_libraries() -> None:
    libav, cli = decoder_info("libav"), decoder_info("ffmpeg")
    assert libav.name == "libav" and {"pyav", "libavcodec", "libswresample"} <= set(libav.versions)
    assert cli.name == "ffmpeg" and cli.versions["ffmpeg"] not in ("", "unknown")


def test_mismatch_words_each_difference() -> None:
    libav = decoder_info("libav")
    assert mismatch(libav, libav) is None
    assert mismatch(None, decoder_info("ffmpeg")) is None  # nothing recorded: nothing to compare
    assert mismatch(None, libav) is None  # (pretrained ports; artifacts older than the record)
    cli = decoder_info("ffmpeg")
    assert "trained on audio decoded by ffmpeg, this worker decodes with libav" in mismatch(
        cli, libav)
    assert "trained on audio decoded by libav" in mismatch(libav, cli)
    older = DecoderInfo(name="libav", versions={**libav.versions, "libavcodec": "61.0.0"})
    line = mismatch(older, libav)
    assert "libavcodec 61.0.0 (model)" in line and libav.versions["libavcodec"] in line


def test_open_decoder_by_name() -> None:
    ffmpeg = open_decoder("ffmpeg", 2)
    assert isinstance(ffmpeg, FFmpegDecoder) and ffmpeg.name == "ffmpeg"
    libav = open_decoder("libav", 1)
    try:
        assert isinstance(libav, LibavDecoder) and libav.name == "libav"
        assert len(libav.pool.pids()) == 1
        assert libav.remote.name == "ffmpeg"  # http(s) sources go to the FFmpeg backend
    finally:
        libav.close()
    with pytest.raises(ValueError, match="unknown decoder"):
        open_decoder("gstreamer", 1)  # type: ignore[arg-type]


def test_split_evenly() -> None:
    assert split_evenly(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_evenly([1, 2], 4) == [[1], [2]]
    assert split_evenly([], 2) == []
    assert split_evenly(list(range(16)), 16, min_size=4) == [[0, 1, 2, 3], [4, 5, 6, 7],
                                                            [8, 9, 10, 11], [12, 13, 14, 15]]
    assert split_evenly(list(range(16)), 2, min_size=4) == [list(range(8)), list(range(8, 16))]
    assert split_evenly([1, 2, 3], 2, min_size=4) == [[1, 2, 3]]
