"""``genretag stack up|down|status``: the local Tansu + redis-server stack of one state folder."""

from __future__ import annotations

import argparse
import json
import sys

from genretag.core.settings import (
    STATE_DIR_ENV, announce, forget_stack, remember_stack, resolve_state_dir, user_state_dir,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stack",
        help="Start/stop the local Kafka-protocol broker (Tansu) and redis-server.",
        description="Runs Tansu and redis-server (AOF, appendfsync always) on free loopback ports "
        "and writes their addresses to STATE_DIR/stack.env, which the other genretag commands "
        "read. A stack belongs to its STATE_DIR: --state-dir DIR (before or after the "
        f"subcommand) or ${STATE_DIR_ENV}; else, inside a genretag checkout, the checkout's own "
        ".genretag/; else the stack this user started last (announced on stderr when used), or "
        f"{user_state_dir()}. `up` starts the stack of that folder (never attaches to another "
        "folder's), `down` stops only that folder's stack and says which; `status` prints the "
        "same JSON shape up or down and exits 0 only when both servers answer.",
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.set_defaults(func=run_cli)


def status_of(stack, where) -> dict[str, object]:
    """``{"running", "state_dir", "kafka": {bootstrap, up}, "redis": {url, up}}``, up or down."""
    if stack is None:
        services = {"kafka": {"bootstrap": None, "up": False}, "redis": {"url": None, "up": False}}
    else:
        services = stack.status()
    running = all(s["up"] for s in services.values())
    return {"running": running, "state_dir": str(where), **services}


def run_cli(args: argparse.Namespace) -> int:
    from genretag.cli.stack import LocalStack

    # `up` starts the stack of its own folder: the remembered one is only for finding a stack.
    chosen = resolve_state_dir(fallback=args.action != "up")
    announce(chosen)
    where = chosen.path
    current = LocalStack.from_state(where)
    if args.action == "up":
        if current and all(s["up"] for s in current.status().values()):
            print(json.dumps({"already_up": True, **status_of(current, where)}))
            remember_stack(where)
            return 0
        if current:
            current.stop()
        stack = LocalStack(where).start(detached=True)
        remember_stack(where)
        print(json.dumps({"up": True, "state_dir": str(where), **stack.env()}))
        return 0
    if args.action == "down":
        running = current is not None
        if current:
            current.stop()
        forget_stack(where)
        print(json.dumps({"down": True, "state_dir": str(where), "stopped": running}))
        print(f"genretag stack down: {'stopped the stack of' if running else 'no stack runs in'} "
              f"{where}", file=sys.stderr)
        return 0
    status = status_of(current, where)
    print(json.dumps(status))
    return 0 if status["running"] else 1
