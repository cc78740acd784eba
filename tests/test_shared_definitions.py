"""Definitions shared across services behave as one: the audio suffixes the producer enqueues
are the ones training reads, the FMA subsets every CLI offers are core.fma's, and one device rule."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from genretag.core.audio.formats import AUDIO_EXTENSIONS
from genretag.core.device import pick_device
from genretag.core.fma import SUBSETS
from genretag.core.settings import load_settings
from genretag.cli import build_parser
from genretag.producer.settings import ProducerSettings
from genretag.producer.sources import directory_source
from genretag.training.readers import read_folder_dataset


def test_producer_and_training_pick_up_the_same_audio_files(tmp_path: Path) -> None:
    root = tmp_path / "music"
    for ext in AUDIO_EXTENSIONS:
        for name in (f"a{ext}", f"B{ext.upper()}"):
            (root / "jazz" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "jazz" / name).write_bytes(b"x")
    for other in ("notes.txt", "cover.jpg", "playlist.m3u"):
        (root / "jazz" / other).write_bytes(b"x")
    settings = load_settings(ProducerSettings, kafka_bootstrap_servers="127.0.0.1:1")
    assert settings.producer.audio_extensions == list(AUDIO_EXTENSIONS)
    produced = {Path(r.data["uri"]).name
                for r in directory_source(root, settings.producer.audio_extensions)}
    trained = {item.path.name for item in read_folder_dataset(root)}
    assert produced == trained
    assert len(trained) == 2 * len(AUDIO_EXTENSIONS)


def _subset_choices(argv: list[str]) -> list[str]:
    """The ``--subset`` choices of the subcommand named by ``argv``."""
    parser = build_parser()
    sub = parser
    for word in argv:
        actions = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        sub = actions[0].choices[word]
    return [a for a in sub._actions if "--subset" in a.option_strings][0].choices


@pytest.mark.parametrize("argv", [["train"], ["produce"], ["fma", "download"], ["fma", "info"]])
def test_every_cli_offers_core_fma_subsets(argv: list[str]) -> None:
    assert tuple(_subset_choices(argv)) == SUBSETS


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")
