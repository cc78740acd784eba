"""Turn a musicnn checkpoint into a torch network, and that into a genretag artifact.

Variable names follow TF 1.x's creation order (``conv2d``, ``conv2d_1``, …); the mapping below
is checked both ways: every torch parameter gets a tensor of its exact shape and every trained
checkpoint variable is used (optimizer slots aside), else :class:`ConversionError`.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genretag.core.errors import FatalError
from genretag.training.pretrained.catalog import PretrainedSpec
from genretag.training.pretrained.logmel import PATCH_SECONDS, SAMPLE_RATE, LogMel
from genretag.training.pretrained.nets import Musicnn, Vgg
from genretag.training.pretrained.tfcheckpoint import read_checkpoint

_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
       "moving_variance": "running_var"}
#: Checkpoint entries that are optimizer state, not weights.
_OPTIMIZER = re.compile(r"(/Adam(_\d+)?$|^beta[12]_power$|^global_step$)")


class ConversionError(FatalError):
    """The checkpoint does not fit the architecture (missing, extra or mis-shaped variables)."""


def _musicnn_names() -> dict[str, str]:
    """TF layer name → torch module path, in musicnn's layer creation order."""
    convs = ["timbral.0", "timbral.1", "temporal.0", "temporal.1", "temporal.2",
             "mid.0", "mid.1", "mid.2"]
    names = {"batch_normalization": "input_bn"}
    for i, path in enumerate(convs):
        names["conv2d" + (f"_{i}" if i else "")] = f"{path}.conv"
        names[f"batch_normalization_{i + 1}"] = f"{path}.bn"
    names.update({"batch_normalization_9": "pool_bn", "dense": "dense",
                  "batch_normalization_10": "dense_bn", "dense_1": "out"})
    return names


def _vgg_names() -> dict[str, str]:
    names = {"batch_normalization": "input_bn", "dense": "out"}
    for i in range(5):
        names[f"{i + 1}CNN"] = f"blocks.{i}.conv"
        names[f"batch_normalization_{i + 1}"] = f"blocks.{i}.bn"
    return names


def build_net(spec: PretrainedSpec) -> nn.Module:
    """An untrained network of ``spec``'s architecture."""
    n = len(spec.tags)
    return Musicnn(n) if spec.arch == "musicnn" else Vgg(n)


def convert(spec: PretrainedSpec, tensors: dict[str, np.ndarray]) -> nn.Module:
    """The network of ``spec`` with the checkpoint's weights, in eval mode."""
    net = build_net(spec)
    layer_names = _musicnn_names() if spec.arch == "musicnn" else _vgg_names()
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for tf_name, array in tensors.items():
        if _OPTIMIZER.search(tf_name):
            continue
        layer, _, var = tf_name.rpartition("/")
        if layer not in layer_names:
            raise ConversionError(f"{spec.checkpoint}: unexpected variable {tf_name}")
        path = layer_names[layer]
        t = torch.from_numpy(np.ascontiguousarray(array))
        if var == "kernel" and t.ndim == 4:  # (kh, kw, in, out) → (out, in, kh, kw)
            key, t = f"{path}.weight", t.permute(3, 2, 0, 1)
        elif var == "kernel" and t.ndim == 2:  # dense (in, out) → (out, in)
            key, t = f"{path}.weight", t.t()
        elif var == "bias":
            key = f"{path}.bias"
        elif var in _BN:
            key = f"{path}.{_BN[var]}"
        else:
            raise ConversionError(f"{spec.checkpoint}: unexpected variable {tf_name}")
        state[key] = t.contiguous().float()
        used.add(key)
    expected = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - used)
    if missing:
        raise ConversionError(f"{spec.checkpoint}: no checkpoint variable for {missing}")
    for key, t in state.items():
        if tuple(t.shape) != tuple(expected[key].shape):
            raise ConversionError(f"{spec.checkpoint}: {key} has shape {tuple(t.shape)}, "
                                  f"the architecture wants {tuple(expected[key].shape)}")
    net.load_state_dict(state, strict=False)
    return net.eval()


def read_wheel_checkpoint(wheel: Path, spec: PretrainedSpec,
                          workdir: Path) -> dict[str, np.ndarray]:
    """Extract ``spec``'s checkpoint files from the musicnn wheel into ``workdir`` and read them."""
    folder = f"musicnn/{spec.checkpoint}/"
    target = Path(workdir) / spec.checkpoint
    target.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as zf:
            files = (".index", ".data-00000-of-00001")
            members = [m for m in zf.namelist()
                       if m.startswith(folder) and m[len(folder):] in files]
            if len(members) != 2:
                raise ConversionError(f"{wheel}: no checkpoint {folder} in the wheel")
            for member in members:
                (target / member[len(folder):]).write_bytes(zf.read(member))
    except zipfile.BadZipFile as exc:
        raise ConversionError(f"{wheel}: not a wheel (zip): {exc}") from exc
    return read_checkpoint(str(target) + "/")


class PretrainedTagger(nn.Module):
    """Serving module: waveform ``(batch, 48000)`` at 16 kHz → sigmoid probabilities; contract
    v2 adds the net's embedding (musicnn ``penultimate``, vgg ``pool5``) per window."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.logmel = LogMel()
        self.net = net

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(self.logmel(wave)))

    @torch.jit.export
    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        """Window embeddings ``(batch, size)``."""
        return self.net.embed(self.logmel(wave))

    @torch.jit.export
    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Probabilities of window embeddings (the net's output layer)."""
        return torch.sigmoid(self.net.out(z))

    @torch.jit.export
    def tag(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities and embeddings of one pass."""
        z = self.embed(wave)
        return self.head(z), z


#: Name of each architecture's embedding layer in the manifest.
EMBEDDING_LAYER = {"musicnn": "penultimate", "vgg": "pool5"}


CLIP_SAMPLES = int(PATCH_SECONDS * SAMPLE_RATE)
