"""The model artifact format: one TorchScript file with ``manifest.json`` embedded.

The module takes a ``(batch, samples)`` float32 waveform at the manifest's sample rate and
returns ``(batch, n_labels)`` probabilities (the MFCC frontend and activation are inside).
A schema-2 artifact (``manifest.embedding`` set) also exports ``embed(wave) -> (batch, size)``,
``head(embedding) -> probabilities`` and ``tag(wave) -> (probabilities, embedding)`` (one pass);
schema-1 artifacts load and serve unchanged.
``sha256`` in the manifest covers the weights (``state_dict`` in key order), so it can be
verified after loading without the file having to contain its own hash.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from pydantic import ValidationError

from genretag.schemas import ModelManifest
from genretag.core.errors import GET_A_MODEL, FatalError, ModelNotFound

MANIFEST_NAME = "manifest.json"
#: Methods a schema-2 module exports besides ``forward``.
EMBEDDING_METHODS = ("tag", "embed", "head")


class ArtifactError(FatalError):
    """The model file is missing, not TorchScript, lacks a valid manifest, or fails its checksum."""


class MissingArtifact(ArtifactError, ModelNotFound):
    """No file at the model path: a usage error (exit 2), whichever flag named it."""


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over parameter/buffer names, dtypes, shapes and bytes, in state_dict order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def save_artifact(scripted: torch.jit.ScriptModule, manifest: ModelManifest, path: Path) -> Path:
    """Write the TorchScript module with its manifest; the manifest's sha256 must match."""
    if manifest.sha256 != weights_sha256(scripted):
        raise ArtifactError("manifest.sha256 does not match the module's weights")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.jit.save(scripted, str(tmp), _extra_files={MANIFEST_NAME: manifest.model_dump_json()})
    tmp.replace(path)  # atomic: a worker never loads a half-written model
    return path


def read_manifest(path: Path) -> ModelManifest:
    """Only the manifest (cheap-ish: still loads the archive index)."""
    return load_artifact(path, map_location="cpu")[1]


def load_artifact(
    path: Path, map_location: str | torch.device = "cpu", verify: bool = True
) -> tuple[torch.jit.ScriptModule, ModelManifest]:
    """Load the module and its manifest, verifying the weights checksum."""
    path = Path(path)
    if not path.is_file():
        raise MissingArtifact(f"model file not found: {path}: {GET_A_MODEL}")
    extra = {MANIFEST_NAME: ""}
    try:
        module = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad archive
        raise ArtifactError(f"{path} is not a TorchScript archive: {exc}") from exc
    if not extra[MANIFEST_NAME]:
        raise ArtifactError(f"{path} has no embedded {MANIFEST_NAME}")
    try:
        manifest = ModelManifest.model_validate(json.loads(extra[MANIFEST_NAME]))
    except (ValueError, ValidationError) as exc:
        raise ArtifactError(f"{path}: invalid manifest: {exc}") from exc
    if verify:
        actual = weights_sha256(module)
        if actual != manifest.sha256:
            raise ArtifactError(
                f"{path}: weights checksum mismatch (manifest {manifest.sha256[:12]}…, "
                f"actual {actual[:12]}…): the file was altered or corrupted"
            )
    if manifest.embedding is not None:
        missing = [m for m in EMBEDDING_METHODS if not hasattr(module, m)]
        if missing:
            raise ArtifactError(f"{path}: the manifest describes an embedding but the module "
                                f"lacks {', '.join(missing)}()")
    module.eval()
    return module, manifest
