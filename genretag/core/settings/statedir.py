"""Where the local stack keeps its state (pid files, logs, the connection file ``stack.env``).

Not a setting: the folder is found from ``GENRETAG_STATE_DIR``, the checkout the command runs
in, or the per-user record of the last stack started.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_PREFIX = "GENRETAG_"


def user_state_dir() -> Path:
    """The per-user state folder: ``$XDG_STATE_HOME/genretag`` (default ``~/.local/state``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "genretag"


def _project_root(start: Path) -> Path | None:
    """The genretag checkout holding ``start`` (a folder with ``.genretag/`` or the sources)."""
    for folder in (start, *start.parents):
        if (folder / ".genretag").is_dir() or (folder / "genretag" / "cli" / "main.py").is_file():
            return folder
    return None


def state_dir() -> Path:
    """Where the local stack keeps its pid files, logs and connection file, wherever we run.

    ``GENRETAG_STATE_DIR`` if set; else the checkout's ``.genretag/`` when the current folder
    is inside it and a stack runs there; else the stack this user started last (its folder is
    remembered in the per-user state dir); else the checkout's ``.genretag/``, or the per-user
    folder outside any checkout.
    """
    explicit = os.environ.get(f"{ENV_PREFIX}STATE_DIR")
    if explicit:
        return Path(explicit).resolve()
    root = _project_root(Path.cwd().resolve())
    local = root / ".genretag" if root else None
    if local is not None and (local / "stack.json").exists():
        return local
    pointer = user_state_dir() / "current"
    if pointer.is_file():
        remembered = Path(pointer.read_text(encoding="utf-8").strip())
        if (remembered / "stack.json").exists():
            return remembered
    return local or user_state_dir()


def remember_stack(folder: Path) -> None:
    """Record ``folder`` as this user's running stack, so commands find it from any folder."""
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
    return state_dir() / "stack.env"
