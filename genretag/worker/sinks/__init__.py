"""Outputs of the worker, by name: ``GENRETAG_SINKS`` lists them in the order they are written.

A new output is a module here with a ``build(settings, context)`` factory, one entry in
:data:`FACTORIES`, its settings section and its tests; the loop and the settle stay as they
are. :func:`register` adds one at run time (tests, extensions).
"""

from __future__ import annotations

from genretag.core.errors import UsageError
from genretag.worker.settings import WorkerSettings
from genretag.worker.sinks import embeddings, events, tags
from genretag.worker.sinks.base import Sink, SinkContext, SinkFactory

FACTORIES: dict[str, SinkFactory] = {"tags": tags.build, "embeddings": embeddings.build,
                                     "events": events.build}


def register(name: str, factory: SinkFactory) -> None:
    """Make ``name`` usable in ``GENRETAG_SINKS``."""
    FACTORIES[name] = factory


def build_sinks(settings: WorkerSettings, context: SinkContext) -> list[Sink]:
    """The configured sinks, in order; an unknown name is a one-line usage error."""
    unknown = [n for n in settings.outputs.sinks if n not in FACTORIES]
    if unknown:
        raise UsageError(f"unknown sink(s) {', '.join(unknown)} in sinks: known are "
                         f"{', '.join(sorted(FACTORIES))}")
    return [FACTORIES[name](settings, context) for name in settings.outputs.sinks]


__all__ = ["FACTORIES", "Sink", "SinkContext", "SinkFactory", "build_sinks", "register"]
