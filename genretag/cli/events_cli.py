"""``genretag events``: print the tag events topic; a small consumer, and an example of one.

It reads every partition with no consumer group (nothing is committed, other readers are not
disturbed). "From now" and "caught up" are taken from the high-water mark that each fetch
response carries, never from ``end_offsets``/``seek_to_end``/``auto_offset_reset='latest'``
(ListOffsets answers that some brokers, Tansu among them, do not give reliably).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass

from pydantic import Field, ValidationError

from genretag.cli.display import printable
from genretag.cli.read_cli import limit_argument
from genretag.core.cli_settings import add_settings_arguments, settings_from_args
from genretag.core.errors import GenretagError
from genretag.core.reach import check_kafka, reaching
from genretag.core.settings import KafkaSection, Settings
from genretag.schemas import TagEvent, describe_errors

#: Each poll waits at most this long (ms) for records: also how often --follow checks a stop.
POLL_MS = 500
#: Without --follow: give up when a partition's fetches have not answered for this long.
CATCH_UP_TIMEOUT_S = 60.0
#: With --follow: how often to look again for a topic that does not exist yet.
TOPIC_WAIT_S = 1.0


class EventReaderSettings(Settings):
    """`genretag events`: the broker and the events topic (``kafka_events_topic``)."""

    kafka: KafkaSection = Field(default_factory=KafkaSection)


class NoEventsTopic(GenretagError):
    """The events topic does not exist: no worker has run with the events sink."""

    exit_code = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``events``."""
    events = subparsers.add_parser(
        "events", help="Print tag events: which tracks' tags appeared or changed.",
        description="Read the tag events topic (kafka_events_topic; workers publish to it with "
        "--sinks tags,events). Without --from-beginning: the events published from now on, "
        "until interrupted. With --from-beginning: every event the topic holds (after "
        "compaction, the last one per track), then exit, or go on with --follow. No consumer "
        "group: nothing is committed. Exit 0; 1 no events topic or an event that is not a "
        "TagEvent (named on stderr); 3 broker unreachable; 130 interrupted.")
    events.add_argument("--from-beginning", action="store_true",
                        help="Start at the oldest event kept, not at the end.")
    events.add_argument("--follow", action="store_true",
                        help="With --from-beginning: keep printing new events once caught up "
                        "(without --from-beginning it always follows).")
    events.add_argument("--json", action="store_true",
                        help="One TagEvent JSON object per line (JSON Lines).")
    events.add_argument("--limit", type=limit_argument, default=None,
                        help="Stop after this many events.")
    add_settings_arguments(events, EventReaderSettings)
    events.set_defaults(func=run_events)


@dataclass
class Position:
    """Where reading starts and when it stops."""

    from_beginning: bool
    follow: bool


def read_events(kafka: KafkaSection, where: Position,
                ready: Callable[[], None] = lambda: None) -> Iterator[tuple[str, bytes | None]]:
    """``(partition:offset, value)`` of each event in each partition's order; stops once caught
    up (unless following). ``ready`` is called once every partition is positioned. Raises
    :class:`NoEventsTopic` when the topic is missing (a follower waits for it instead)."""
    from kafka import KafkaConsumer, TopicPartition

    from genretag.core.kafka import fetch_limits

    topic = kafka.events_topic
    consumer = KafkaConsumer(**kafka.client_config(), **fetch_limits(kafka), group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             allow_auto_create_topics=False)  # a reader never makes the topic
    try:
        waited = False
        while not (parts := consumer.partitions_for_topic(topic)):
            if not where.follow and where.from_beginning:
                raise NoEventsTopic(f"no topic {topic}: no worker has published tag events yet "
                                    "(`genretag work --sinks tags,events`)")
            waited = True  # every event of a topic made after we started is "from now"
            time.sleep(TOPIC_WAIT_S)
            consumer.topics()  # refresh the metadata
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        if not (where.from_beginning or waited):
            _skip_to_highwater(consumer, tps)
        ready()
        progress = time.monotonic()
        while True:
            for tp, records in sorted(consumer.poll(timeout_ms=POLL_MS).items()):
                progress = time.monotonic()
                for r in records:
                    yield f"{tp.partition}:{r.offset}", r.value
            if where.follow:
                continue
            behind = [tp.partition for tp in tps if consumer.highwater(tp) is None
                      or consumer.position(tp) < consumer.highwater(tp)]
            if not behind:
                return
            if time.monotonic() - progress > CATCH_UP_TIMEOUT_S:
                raise GenretagError(f"{topic} partitions {behind} did not answer for "
                                    f"{CATCH_UP_TIMEOUT_S:g} s")
    finally:
        consumer.close()


def _skip_to_highwater(consumer, tps: list) -> None:
    """Move each partition to its high-water mark, learnt from a first fetch (whose records
    are dropped): events published from now on are read, older ones are not."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    while any(consumer.highwater(tp) is None for tp in tps):
        if time.monotonic() > deadline:
            raise GenretagError(f"{tps[0].topic}: no fetch answer within {CATCH_UP_TIMEOUT_S:g} s")
        consumer.poll(timeout_ms=POLL_MS)
    for tp in tps:
        consumer.seek(tp, consumer.highwater(tp))


def format_event(event: TagEvent) -> str:
    """One line: time, track, change, version, labels (primary), and what it was before."""
    labels = printable(",".join(event.labels)) or "-"
    line = (f"{event.time.isoformat(timespec='seconds')} {printable(event.track_id)} "
            f"{event.change.value:<9} {printable(event.model_version)} {labels} "
            f"(primary {printable(event.primary_genre or '-')})")
    if event.previous_model_version is not None and event.change.value != "unchanged":
        was = printable(",".join(event.previous_labels or [])) or "-"
        line += f" was {printable(event.previous_model_version)} {was}"
    return line


def run_events(args: argparse.Namespace) -> int:
    settings = settings_from_args(EventReaderSettings, args)
    kafka = settings.kafka
    where = Position(from_beginning=args.from_beginning,
                     follow=args.follow or not args.from_beginning)
    shown = bad = 0
    with reaching(kafka=kafka.bootstrap_servers):
        check_kafka(kafka.bootstrap_servers)
        def ready() -> None:
            if where.follow:
                start = "the oldest event" if where.from_beginning else "now"
                print(f"genretag events: following {kafka.events_topic} from {start}; Ctrl-C "
                      "stops", file=sys.stderr, flush=True)

        with closing(read_events(kafka, where, ready)) as records:
            for at, value in records:
                try:
                    event = TagEvent.model_validate_json(value or b"")
                except ValidationError as exc:
                    bad += 1
                    print(f"genretag events: {kafka.events_topic} {at}: not a tag event: "
                          f"{printable(describe_errors(exc, 'value'))[:300]}", file=sys.stderr)
                    continue
                print(event.model_dump_json() if args.json else format_event(event), flush=True)
                shown += 1
                if args.limit is not None and shown >= args.limit:
                    break
    return 1 if bad else 0
