"""genretag application layer: CLI, settings, local stack, Redis tag store, Kafka helpers."""

__version__ = "0.1.0"
