"""The pretrained models genretag can build: source wheel, checkpoint, architecture, vocabulary.

The weights are the TensorFlow checkpoints inside the PyPI wheel ``musicnn==0.1.0`` (ISC
licence, copyright Music Technology Group, Universitat Pompeu Fabra 2019; code by Jordi
Pons). Labels are musicnn's, lower-cased (``House`` → ``house``) so a query needs no exact capitalisation;
each label's kind (genre, mood, era, instrument, voice, other) is ours, by reading the tag.
"""

from __future__ import annotations

from dataclasses import dataclass

WHEEL_NAME = "musicnn-0.1.0-py3-none-any.whl"
WHEEL_REQUIREMENT = "musicnn==0.1.0"
#: SHA-256 of the wheel as PyPI serves it; a pull refuses any other file.
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"

MSD_TAGS: tuple[tuple[str, str], ...] = (
    ("rock", "genre"), ("pop", "genre"), ("alternative", "genre"), ("indie", "genre"),
    ("electronic", "genre"), ("female vocalists", "voice"), ("dance", "genre"), ("00s", "era"),
    ("alternative rock", "genre"), ("jazz", "genre"), ("beautiful", "mood"), ("metal", "genre"),
    ("chillout", "genre"), ("male vocalists", "voice"), ("classic rock", "genre"),
    ("soul", "genre"), ("indie rock", "genre"), ("mellow", "mood"), ("electronica", "genre"),
    ("80s", "era"), ("folk", "genre"), ("90s", "era"), ("chill", "mood"),
    ("instrumental", "voice"), ("punk", "genre"), ("oldies", "era"), ("blues", "genre"),
    ("hard rock", "genre"), ("ambient", "genre"), ("acoustic", "instrument"),
    ("experimental", "genre"), ("female vocalist", "voice"), ("guitar", "instrument"),
    ("hip-hop", "genre"), ("70s", "era"), ("party", "mood"), ("country", "genre"),
    ("easy listening", "genre"), ("sexy", "mood"), ("catchy", "mood"), ("funk", "genre"),
    ("electro", "genre"), ("heavy metal", "genre"), ("progressive rock", "genre"), ("60s", "era"),
    ("rnb", "genre"), ("indie pop", "genre"), ("sad", "mood"), ("house", "genre"),
    ("happy", "mood"),
)

MTT_TAGS: tuple[tuple[str, str], ...] = (
    ("guitar", "instrument"), ("classical", "genre"), ("slow", "other"), ("techno", "genre"),
    ("strings", "instrument"), ("drums", "instrument"), ("electronic", "genre"), ("rock", "genre"),
    ("fast", "other"), ("piano", "instrument"), ("ambient", "genre"), ("beat", "other"),
    ("violin", "instrument"), ("vocal", "voice"), ("synth", "instrument"), ("female", "voice"),
    ("indian", "genre"), ("opera", "genre"), ("male", "voice"), ("singing", "voice"),
    ("vocals", "voice"), ("no vocals", "voice"), ("harpsichord", "instrument"), ("loud", "other"),
    ("quiet", "other"), ("flute", "instrument"), ("woman", "voice"), ("male vocal", "voice"),
    ("no vocal", "voice"), ("pop", "genre"), ("soft", "mood"), ("sitar", "instrument"),
    ("solo", "other"), ("man", "voice"), ("classic", "genre"), ("choir", "voice"),
    ("voice", "voice"), ("new age", "genre"), ("dance", "genre"), ("male voice", "voice"),
    ("female vocal", "voice"), ("beats", "other"), ("harp", "instrument"), ("cello", "instrument"),
    ("no voice", "voice"), ("weird", "mood"), ("country", "genre"), ("metal", "genre"),
    ("female voice", "voice"), ("choral", "genre"),
)


@dataclass(frozen=True)
class PretrainedSpec:
    """One convertible model: its genretag name, checkpoint folder in the wheel, architecture."""

    name: str
    checkpoint: str
    arch: str  # "musicnn" or "vgg"
    dataset: str
    tags: tuple[tuple[str, str], ...]

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self.tags]

    @property
    def kinds(self) -> dict[str, str]:
        """Kinds of the labels that are not genres (the manifest's ``kinds``)."""
        return {label: kind for label, kind in self.tags if kind != "genre"}


MODELS: dict[str, PretrainedSpec] = {
    spec.name: spec
    for spec in (
        PretrainedSpec("musicnn-msd", "MSD_musicnn", "musicnn",
                       "Million Song Dataset (last.fm tags)", MSD_TAGS),
        PretrainedSpec("musicnn-mtt", "MTT_musicnn", "musicnn", "MagnaTagATune", MTT_TAGS),
        PretrainedSpec("vgg-msd", "MSD_vgg", "vgg", "Million Song Dataset (last.fm tags)",
                       MSD_TAGS),
        PretrainedSpec("vgg-mtt", "MTT_vgg", "vgg", "MagnaTagATune", MTT_TAGS),
    )
}
