"""musicnn's own code as the reference: extracted from the wheel into a temp dir, not committed.

Needs the parity extras (requirements-parity.txt: tensorflow-cpu + tf-keras with
``TF_USE_LEGACY_KERAS=1``, librosa). :func:`load_reference` imports the wheel's
``musicnn.models`` / ``musicnn.extractor`` unchanged; :class:`TfModel` restores a checkpoint
into musicnn's graph exactly as ``musicnn.extractor.extractor`` does.
"""

from __future__ import annotations

import importlib
import os
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np

PATCH_FRAMES = 187


def load_reference(wheel: Path, workdir: Path) -> tuple[ModuleType, ModuleType, Path]:
    """(musicnn.models, musicnn.extractor, package folder) from the wheel's files."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(workdir, [m for m in zf.namelist() if m.startswith("musicnn/")])
    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))
    models = importlib.import_module("musicnn.models")
    extractor = importlib.import_module("musicnn.extractor")  # disables TF eager mode, as upstream
    return models, extractor, Path(workdir) / "musicnn"


class TfModel:
    """One restored checkpoint in musicnn's TF1 graph: ``logits(logmel)`` on ``(n, 187, 96)``.

    ``threads`` > 0 sets TF's intra-op threads (inter-op 1), as bench.pretrained compares
    it with torch on the same number of cores; 0 keeps TF's defaults.
    """

    def __init__(self, models: ModuleType, package: Path, checkpoint: str, n_labels: int,
                 threads: int = 0) -> None:
        import tensorflow as tf

        self.graph = tf.Graph()
        with self.graph.as_default():
            with tf.name_scope("model"):
                self.x = tf.compat.v1.placeholder(tf.float32, [None, PATCH_FRAMES, 96])
                self.is_training = tf.compat.v1.placeholder(tf.bool)
                self.y = models.define_model(self.x, self.is_training, checkpoint, n_labels)[0]
            config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads,
                                              inter_op_parallelism_threads=1 if threads else 0)
            self.session = tf.compat.v1.Session(graph=self.graph, config=config)
            tf.compat.v1.train.Saver().restore(self.session, f"{package}/{checkpoint}/")

    def logits(self, logmel: np.ndarray) -> np.ndarray:
        return self.session.run(self.y, {self.x: logmel, self.is_training: False})


def reference_batch(path: Path) -> np.ndarray:
    """``musicnn.extractor.batch_data`` as it computes under its own pin, numpy < 1.17.

    The wheel's line ``np.log10(10000 * audio_rep + 1)`` on a float16 ``audio_rep`` promoted
    to float32 under numpy 1.x (value-based casting: 10000 → uint16, uint16 + float16 →
    float32). Since numpy 2 (NEP 50) the product stays float16 and overflows to inf wherever
    the mel power exceeds 6.55 — on every real recording of the parity set. So we keep the
    float16 rounding of the mel spectrogram, and do the product in float32 as numpy 1 did.
    """
    import librosa

    audio, sr = librosa.load(str(path), sr=16000)
    mel = librosa.feature.melspectrogram(y=audio, sr=sr, hop_length=256, n_fft=512, n_mels=96).T
    rep = np.log10(np.float32(10000) * mel.astype(np.float16) + 1)
    starts = range(0, rep.shape[0] - PATCH_FRAMES + 1, PATCH_FRAMES)
    return np.stack([rep[s: s + PATCH_FRAMES] for s in starts])
