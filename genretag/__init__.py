"""The ``genretag`` command line: the top layer, wiring the services' subcommands together.

Also the local stack (Tansu + redis-server) for demos and tests, and the read-side commands.
"""

__version__ = "0.1.0"
