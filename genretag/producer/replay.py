"""Replay dead letters: re-enqueue their original TrackRef, then drop them from the dlq hash.

A dead letter leaves Redis only after the broker acknowledged its replayed message, and only if
it is still the entry that was read (a worker that already failed the replay again has written
a newer one, which stays). Letters without a parsed TrackRef (not JSON, wrong schema) cannot be
replayed and are reported, never removed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from genretag.core.kafka import ensure_topics
from genretag.core.logs import get_logger
from genretag.core.settings import ReaderSettings
from genretag.core.store import DeadLetterStore, StoredDeadLetter
from genretag.producer.send import AckingSender, BrokerUnavailable
from genretag.schemas import TrackRef

log = get_logger(__name__)

#: Letters sent between two waits for acknowledgements (and removals from Redis).
_CHUNK = 200


@dataclass
class ReplayReport:
    """What a replay did: re-enqueued and removed, left alone (and why), failed to send."""

    replayed: int = 0
    removed: int = 0
    kept_changed: int = 0
    failed: int = 0
    dry_run: bool = False
    by_reason: Counter = field(default_factory=Counter)
    not_replayable: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    aborted: str | None = None

    @property
    def ok(self) -> bool:
        return not (self.failed or self.aborted)

    def as_dict(self) -> dict[str, object]:
        return {
            "replayed": self.replayed, "removed": self.removed, "kept_changed": self.kept_changed,
            "failed": self.failed, "dry_run": self.dry_run, "by_reason": dict(self.by_reason),
            "not_replayable": self.not_replayable, "errors": self.errors[:100],
            "aborted": self.aborted,
        }

    def summary(self) -> str:
        """Human-readable lines for the end of a replay."""
        if self.dry_run:
            lines = [f"dry run: {self.replayed} dead letter(s) would be replayed; nothing sent"]
        else:
            lines = [f"replayed {self.replayed} dead letter(s), "
                     f"removed {self.removed} from the dlq"]
            if self.kept_changed:
                lines.append(f"{self.kept_changed} kept: the track failed again meanwhile")
            if self.failed:
                lines.append(f"{self.failed} NOT acknowledged by the broker (kept in the dlq)")
        if self.by_reason:
            lines.append("by reason: " + ", ".join(
                f"{r} {n}" for r, n in sorted(self.by_reason.items())))
        if self.not_replayable:
            lines.append(f"{len(self.not_replayable)} not replayable (no TrackRef):")
            lines += [f"  {e['key']}: {e['reason']}" for e in self.not_replayable[:50]]
        if self.aborted:
            lines.append(f"aborted: {self.aborted}")
        return "\n".join(lines)


def replay_ref(letter_track: TrackRef) -> TrackRef:
    """The original reference, with ``enqueued_at`` set to now (it is enqueued again)."""
    return letter_track.model_copy(update={"enqueued_at": datetime.now(UTC)})


def replay_dead_letters(
    store: DeadLetterStore, settings: ReaderSettings, reason: str | None = None,
    dry_run: bool = False
) -> ReplayReport:
    """Re-enqueue every dead letter (of ``reason``) that has a TrackRef onto the tracks topic."""
    report = ReplayReport(dry_run=dry_run)
    seen: set[tuple[str, str]] = set()  # HSCAN may repeat a key; replay each letter once
    acked: list[StoredDeadLetter] = []  # appended by the sender thread (list.append is atomic)
    sender: AckingSender | None = None
    if not dry_run:
        ensure_topics(settings.kafka)
        sender = AckingSender(settings.kafka, settings.kafka.topic, on_ack=acked.append,
                              on_error=report.errors.append)
    in_chunk = 0
    try:
        for entry in store.scan(reason):
            if (entry.slot.hash_key, entry.key) in seen:
                continue
            seen.add((entry.slot.hash_key, entry.key))
            track = entry.letter.track if entry.letter is not None else None
            if track is None:
                report.not_replayable.append({"key": entry.key, "reason": entry.reason})
                continue
            report.by_reason[entry.reason] += 1
            if sender is None:
                report.replayed += 1
                continue
            ref = replay_ref(track)
            sender.send(ref.track_id, ref.model_dump_json().encode(), token=entry)
            in_chunk += 1
            if in_chunk >= _CHUNK:
                sender.flush(settings.replay.ack_timeout_s)
                _remove_acknowledged(store, acked, report)
                in_chunk = 0
    except BrokerUnavailable as exc:
        report.aborted = str(exc)
    finally:
        if sender is not None:
            sender.close(settings.replay.ack_timeout_s)
            _remove_acknowledged(store, acked, report)
            report.failed = sender.failed
    log.info("dlq.replay_done", extra=report.as_dict())
    return report


def _remove_acknowledged(
    store: DeadLetterStore, acked: list[StoredDeadLetter], report: ReplayReport
) -> None:
    """Drop the letters whose replay was acknowledged, unless a newer failure replaced them."""
    while acked:
        entry = acked.pop()
        report.replayed += 1
        if store.remove_if_unchanged(entry):
            report.removed += 1
        else:
            report.kept_changed += 1
