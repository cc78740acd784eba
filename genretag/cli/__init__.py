"""The ``genretag`` command line: the top layer, wiring the services' subcommands together.

Also the local stack (Tansu + redis-server) for demos and tests, and the read-side commands.
``main`` is the console entry point (``genretag = genretag.cli:main``).
"""

from genretag.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
