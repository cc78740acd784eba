"""Where the local stack keeps its state (pid files, logs, the connection file ``stack.env``).

Not a setting: a stack belongs to its folder. The folder is, in this order: ``--state-dir``
(which sets ``GENRETAG_STATE_DIR``) or ``GENRETAG_STATE_DIR``; inside a genretag checkout, that
checkout's own ``.genretag/`` (whatever runs elsewhere); outside any checkout, the stack this
user started last (a fallback the CLI announces when it uses it), else the per-user folder.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from genretag.core.settings.base import ENV_PREFIX, expand_path

STATE_DIR_ENV = f"{ENV_PREFIX}STATE_DIR"

#: How a state folder was chosen: named (flag or env), the checkout's own, the per-user record
#: of the last stack started (outside any checkout), or the per-user folder.
Source = Literal["named", "checkout", "remembered", "user"]


@dataclass(frozen=True)
class StateDir:
    """The state folder a command uses, and how it was chosen."""

    path: Path
    source: Source


def user_state_dir() -> Path:
    """The per-user state folder: ``$XDG_STATE_HOME/genretag`` (default ``~/.local/state``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "genretag"


MODELS_DIR_ENV = f"{ENV_PREFIX}MODELS_DIR"


def user_models_dir() -> Path:
    """Where ``genretag models pull NAME`` writes without ``--out``: ``$GENRETAG_MODELS_DIR``,
    else ``$XDG_DATA_HOME/genretag/models`` (default ``~/.local/share/genretag/models``)."""
    explicit = os.environ.get(MODELS_DIR_ENV)
    if explicit:
        return Path(expand_path(explicit))
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "genretag" / "models"


def project_root(start: Path) -> Path | None:
    """The genretag checkout holding ``start`` (a folder with ``.genretag/`` or the sources)."""
    for folder in (start, *start.parents):
        if (folder / ".genretag").is_dir() or (folder / "genretag" / "cli" / "main.py").is_file():
            return folder
    return None


def _remembered() -> Path | None:
    """The folder of the last stack this user started, if it is still recorded as running."""
    pointer = user_state_dir() / "current"
    if not pointer.is_file():
        return None
    remembered = Path(pointer.read_text(encoding="utf-8").strip())
    return remembered if (remembered / "stack.json").exists() else None


def resolve_state_dir(*, fallback: bool = True) -> StateDir:
    """The state folder of this process (see the module docstring); ``fallback=False`` never
    takes the remembered stack (``stack up`` starts its own instead of attaching to it)."""
    explicit = os.environ.get(STATE_DIR_ENV)
    if explicit:
        return StateDir(Path(expand_path(explicit)).resolve(), "named")
    root = project_root(Path.cwd().resolve())
    if root is not None:
        return StateDir(root / ".genretag", "checkout")
    remembered = _remembered() if fallback else None
    if remembered is not None:
        return StateDir(remembered, "remembered")
    return StateDir(user_state_dir(), "user")


_announced: set[Path] = set()


def announce(chosen: StateDir) -> None:
    """Say on stderr, once per process, that the remembered stack is used: it is a fallback
    outside any checkout, never silent."""
    if chosen.source == "remembered" and chosen.path not in _announced:
        _announced.add(chosen.path)
        print(f"genretag: using the stack of {chosen.path} (the last one `genretag stack up` "
              f"started; --state-dir or {STATE_DIR_ENV} chooses another)", file=sys.stderr)


def state_dir() -> Path:
    """Where the local stack keeps its pid files, logs and connection file, wherever we run."""
    return resolve_state_dir().path


def remember_stack(folder: Path) -> None:
    """Record ``folder`` as this user's last stack, the fallback outside any checkout."""
    pointer = user_state_dir() / "current"
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(str(Path(folder).resolve()) + "\n", encoding="utf-8")


def forget_stack(folder: Path) -> None:
    """Drop the per-user record of ``folder``'s stack (after ``stack down``)."""
    pointer = user_state_dir() / "current"
    if pointer.is_file() and pointer.read_text(encoding="utf-8").strip() == str(
        Path(folder).resolve()
    ):
        pointer.unlink(missing_ok=True)


def stack_env_file() -> Path:
    """The connection file of the stack this process uses (announced if it is the fallback)."""
    chosen = resolve_state_dir()
    announce(chosen)
    return chosen.path / "stack.env"
