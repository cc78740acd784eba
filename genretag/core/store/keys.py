"""The Redis key layout: every key genretag writes, from one prefix (this module owns the names).

:data:`KEY_TABLE` describes each key (``P`` = the key prefix, ``GENRETAG_REDIS_KEY_PREFIX``,
default ``genretag:``); the documentation's key-layout page is generated from it, and a test
checks it names every key :class:`KeyLayout` builds.
"""

from __future__ import annotations

from dataclasses import dataclass

from genretag.schemas import DeadLetter


@dataclass(frozen=True)
class KeyDoc:
    """One key of the layout as the documentation shows it."""

    pattern: str
    type: str
    content: str


#: Every key genretag writes, in the order a reader meets them.
KEY_TABLE: tuple[KeyDoc, ...] = (
    KeyDoc("P track:<track_id>", "hash",
           "`track_id`, `model_version`, `probabilities` (JSON object label → p), `labels` "
           "(JSON array: over threshold, most probable first), `primary_genre` (the best "
           "genre-kind label whatever the thresholds; empty for records written before it "
           "existed), `kinds` (JSON: kind of each label that is not a genre), `processed_at` "
           "(ISO 8601 UTC), `duration_s` (the whole track's), `uri`, `timeline` (the "
           "per-window timeline, compact JSON of `genretag.core.timeline`; absent if none), "
           "`changed_by` / `changed_from` (the `topic:partition:offset` of the message whose "
           "write last changed the tags, and `[version, labels, primary]` before it; absent "
           "for writes without coordinates; see the tag events page)"),
    KeyDoc("P genre:<label>", "sorted set",
           "track ids tagged with that genre, score = probability"),
    KeyDoc("P genres", "set", "every genre that has a sorted set"),
    KeyDoc("P tag:<label>", "sorted set",
           "the same for a label of another kind (mood, era, instrument, voice, other)"),
    KeyDoc("P kind:<kind>", "set", "every such label of that kind (`kind:mood` → happy, sad…)"),
    KeyDoc("P model:<version>", "set", "track ids whose current tags come from that version"),
    KeyDoc("P models", "set", "every model version seen"),
    KeyDoc("P dlq", "hash",
           "track id → DeadLetter JSON, for messages that parsed (the id is contract-valid; "
           "tagging the track later removes its entry; `dlq replay` re-enqueues these)"),
    KeyDoc("P dlq:msg", "hash",
           "`topic:partition:offset` → DeadLetter JSON, for messages that did not parse (an id "
           "they claim is never trusted as a key)"),
    KeyDoc("P namespaces", "set",
           "the namespaces (manifest names) of a model set's further models "
           "(`GENRETAG_MODELS`); the first model's tags are the keys above"),
    KeyDoc("P ns:<name>:", "prefix",
           "model `<name>`'s tags: every key above from `P track:` to `P models`, under this "
           "prefix (`KeyLayout.for_model`; docs: model sets)"),
    KeyDoc("P emb:<track_id>", "hash",
           "the track's embedding (`GENRETAG_SINKS=tags,embeddings`): `vector` (float16 "
           "little-endian bytes), `space` (`EmbeddingSpec.space`), `model_version`, `seq`"),
    KeyDoc("P emb-seq", "counter", "the sequence number of the last embedding write"),
    KeyDoc("P emb-log", "sorted set",
           "track id → `seq` of its last embedding write (what a vector index syncs from: "
           "members above its mark changed)"),
)


@dataclass(frozen=True)
class DeadLetterSlot:
    """Where one dead letter lives: its hash and the field inside it."""

    hash_key: str
    field: str


@dataclass(frozen=True)
class KeyLayout:
    """The key names under one prefix."""

    prefix: str = "genretag:"
    #: Set for a further model's layout (:meth:`for_model`): its namespace and the root prefix.
    namespace: str = ""
    root_prefix: str = ""

    def for_model(self, namespace: str) -> KeyLayout:
        """The layout of one further model of a model set: the same names under ``P ns:N:``."""
        root = self.root_prefix or self.prefix
        return KeyLayout(f"{root}ns:{namespace}:", namespace=namespace, root_prefix=root)

    @property
    def namespaces(self) -> str:
        """Set of the further models' namespaces (always under the root prefix)."""
        return f"{self.root_prefix or self.prefix}namespaces"

    def track(self, track_id: str) -> str:
        return f"{self.prefix}track:{track_id}"

    def genre(self, label: str) -> str:
        return f"{self.prefix}genre:{label}"

    def tag(self, label: str) -> str:
        """Sorted set of a label that is not a genre (mood, era, instrument, voice, other)."""
        return f"{self.prefix}tag:{label}"

    def label(self, label: str, kind: str) -> str:
        """The sorted set of ``label`` given its kind: genre sets for genres, tag sets else."""
        return self.genre(label) if kind == "genre" else self.tag(label)

    def kind(self, kind: str) -> str:
        return f"{self.prefix}kind:{kind}"

    def model(self, version: str) -> str:
        return f"{self.prefix}model:{version}"

    @property
    def genres(self) -> str:
        return f"{self.prefix}genres"

    @property
    def models(self) -> str:
        return f"{self.prefix}models"

    def embedding(self, track_id: str) -> str:
        """Hash of the track's stored vector (float16) and its space and model version."""
        return f"{self.prefix}emb:{track_id}"

    @property
    def embedding_seq(self) -> str:
        return f"{self.prefix}emb-seq"

    @property
    def embedding_log(self) -> str:
        """Sorted set: track id → sequence number of its last embedding write."""
        return f"{self.prefix}emb-log"

    @property
    def dlq(self) -> str:
        """Hash of dead letters of parsed messages, by track id."""
        return f"{self.prefix}dlq"

    @property
    def dlq_msg(self) -> str:
        """Hash of dead letters of messages that did not parse, by topic:partition:offset."""
        return f"{self.prefix}dlq:msg"

    def dead_letter_slot(self, letter: DeadLetter) -> DeadLetterSlot:
        """The parsed track's id in ``P dlq``, else the message's coordinates in ``P dlq:msg``.

        Both are stable across redelivery. Only a letter carrying its parsed TrackRef is keyed by
        id: the id of a message that failed validation is untrusted and could replace a real
        track's replayable letter.
        """
        if letter.track is not None:
            return DeadLetterSlot(self.dlq, letter.track.track_id)
        return DeadLetterSlot(
            self.dlq_msg,
            f"{letter.source_topic}:{letter.source_partition}:{letter.source_offset}")
