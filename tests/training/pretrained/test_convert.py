"""Checkpoint reader, converter, ``models pull|info`` and the worker's Tagger on a pulled model.

No TensorFlow needed (parity with TF is tests/training/pretrained/test_parity.py); the musicnn wheel is
fetched once with pip and verified (skipped with the reason when PyPI is unreachable).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from genretag.core.artifact import load_artifact
from genretag.cli import main
from genretag.training.pretrained.catalog import MODELS, WHEEL_SHA256
from genretag.training.pretrained.convert import ConversionError, convert, read_wheel_checkpoint
from genretag.training.pretrained.logmel import LogMel
from genretag.training.pretrained.pull import PullError, fetch_wheel, pull
from genretag.training.pretrained.tfcheckpoint import CheckpointError, read_checkpoint
from genretag.worker.infer import Tagger
from genretag.worker.settings import ModelSection


pytestmark = pytest.mark.heavy  # FFmpeg/decoder processes, TensorFlow or training


@pytest.fixture(scope="module")
def msd_artifact(musicnn_wheel, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "msd.pt"
    pull("musicnn-msd", out, out.parent, wheel=musicnn_wheel)
    return out


def _checkpoint(wheel: Path, tmp_path: Path, name: str = "MTT_vgg") -> Path:
    read_wheel_checkpoint(wheel, MODELS["vgg-mtt"], tmp_path)  # extracts the files
    return tmp_path / name


def test_reader_reads_every_tensor_with_its_shape(musicnn_wheel, tmp_path) -> None:
    tensors = read_checkpoint(str(_checkpoint(musicnn_wheel, tmp_path)) + "/")
    assert tensors["1CNN/kernel"].shape == (3, 3, 1, 128)
    assert tensors["dense/kernel"].shape == (256, 50)
    assert tensors["dense/kernel"].dtype == np.float32
    assert tensors["batch_normalization_3/moving_variance"].min() > 0  # real statistics
    assert tensors["beta1_power"].shape == ()


def test_reader_rejects_corrupt_and_truncated_files(musicnn_wheel, tmp_path) -> None:
    ckpt = _checkpoint(musicnn_wheel, tmp_path)
    index, data = Path(str(ckpt) + "/.index"), Path(str(ckpt) + "/.data-00000-of-00001")
    raw = index.read_bytes()
    index.write_bytes(raw[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="bad magic"):
        read_checkpoint(str(ckpt) + "/")
    index.write_bytes(raw)
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(str(ckpt) + "/")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(str(tmp_path / "nowhere") + "/")


def test_converter_refuses_missing_or_misshaped_variables(musicnn_wheel, tmp_path) -> None:
    tensors = read_checkpoint(str(_checkpoint(musicnn_wheel, tmp_path)) + "/")
    spec = MODELS["vgg-mtt"]
    assert isinstance(convert(spec, tensors), torch.nn.Module)
    with pytest.raises(ConversionError, match="no checkpoint variable"):
        convert(spec, {k: v for k, v in tensors.items() if k != "3CNN/bias"})
    bad = dict(tensors, **{"dense/kernel": np.zeros((128, 50), np.float32)})
    with pytest.raises(ConversionError, match="shape"):
        convert(spec, bad)
    with pytest.raises(ConversionError, match="unexpected variable"):
        convert(MODELS["musicnn-mtt"], tensors)  # a vgg checkpoint is not a musicnn


def test_wheel_with_another_checksum_is_refused(musicnn_wheel, tmp_path) -> None:
    assert hashlib.sha256(musicnn_wheel.read_bytes()).hexdigest() == WHEEL_SHA256
    fake = tmp_path / "musicnn-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("musicnn/__init__.py", "")
    with pytest.raises(PullError, match="refusing"):
        fetch_wheel(tmp_path, fake)
    with pytest.raises(PullError, match="unknown model"):
        pull("musicnn-big", tmp_path / "x.pt", tmp_path, wheel=musicnn_wheel)


def test_pull_is_idempotent_and_info_prints_kinds(musicnn_wheel, msd_artifact, tmp_path,
                                                  capsys) -> None:
    out = tmp_path / "m.pt"
    shutil.copy(msd_artifact, out)
    mtime = out.stat().st_mtime_ns
    argv = ["models", "pull", "musicnn-msd", "--out", str(out), "--wheel", str(musicnn_wheel)]
    assert main(argv) == 0
    assert "up to date" in capsys.readouterr().out and out.stat().st_mtime_ns == mtime
    assert main([*argv, "--threshold", "0.4"]) == 0  # another threshold: converted again
    assert "written" in capsys.readouterr().out
    assert set(load_artifact(out)[1].thresholds.values()) == {0.4}
    assert main(["models", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "version:     musicnn-msd-0.1.0-r1" in text
    assert "mood:" in text and "happy" in text.split("mood:")[1].splitlines()[0]
    assert main(["models", "info", "--json", str(out)]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["kinds"]["80s"] == "era" and "rock" not in manifest["kinds"]
    assert manifest["frontend"]["kind"] == "logmel" and manifest["sample_rate"] == 16000


def test_artifact_batched_equals_per_item_and_scripted_equals_eager(musicnn_wheel, msd_artifact,
                                                                   tmp_path) -> None:
    module, manifest = load_artifact(msd_artifact)
    assert manifest.clip_samples == 48000 and len(manifest.labels) == 50
    gen = torch.Generator().manual_seed(1)
    waves = torch.randn(3, 48000, generator=gen) * 0.1
    with torch.inference_mode():
        batched = module(waves)
        single = torch.cat([module(w[None]) for w in waves])
        net = convert(MODELS["musicnn-msd"], read_wheel_checkpoint(
            musicnn_wheel, MODELS["musicnn-msd"], tmp_path))
        eager = torch.sigmoid(net(LogMel()(waves)))
    assert batched.shape == (3, 50)
    assert torch.allclose(batched, single, atol=1e-5)
    assert torch.allclose(batched, eager, atol=1e-5)
    assert ((batched > 0) & (batched < 1)).all()


def test_frontend_survives_float16_autocast_on_loud_input() -> None:
    """The worker's half_precision runs the model under float16 autocast: no inf in the log-mel."""
    t = torch.arange(48000) / 16000
    loud = (0.9 * torch.sin(2 * torch.pi * 110 * t))[None]
    frontend = LogMel()
    with torch.inference_mode():
        full = frontend(loud)
        with torch.autocast("cpu", dtype=torch.float16):
            half = frontend(loud)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert torch.equal(full, half) and full.max() > 5  # loud: 10000·mel far above float16's max


def test_worker_tagger_serves_the_pulled_model(msd_artifact) -> None:
    """The worker's own loader (CPU-optimised) gives the artifact's probabilities and tags."""
    tagger = Tagger.load(ModelSection(path=msd_artifact, device="cpu"))
    module, manifest = load_artifact(msd_artifact)
    t = np.arange(5 * 48000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 2 * t))).astype(np.float32)
    windows = wave.reshape(5, 48000)
    probs = tagger.predict([windows, windows[:2]])
    with torch.inference_mode():
        direct = module(torch.from_numpy(windows)).mean(0).numpy()
    assert probs.shape == (2, 50)
    np.testing.assert_allclose(probs[0], direct, atol=1e-4)
    labels = tagger.labels_over_threshold(probs[0])
    assert all(probs[0][manifest.labels.index(x)] >= 0.25 for x in labels)
