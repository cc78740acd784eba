"""``genretag stack up|down|status``: the local Tansu + redis-server stack."""

from __future__ import annotations

import argparse
import json

from genretag.core.settings import forget_stack, remember_stack, state_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stack",
        help="Start/stop the local Kafka-protocol broker (Tansu) and redis-server.",
        description="Runs Tansu and redis-server (AOF, appendfsync always) on free loopback ports "
        "and writes their addresses to the stack file STATE_DIR/stack.env, which every other "
        "genretag command reads from any folder. STATE_DIR: $GENRETAG_STATE_DIR, else the "
        "checkout's .genretag/ (inside it) or $XDG_STATE_HOME/genretag (elsewhere); the last "
        "stack started is remembered per user. `status` prints the same JSON shape up or down "
        "and exits 0 only when both servers answer.",
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

    where = state_dir()
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
        if current:
            current.stop()
        forget_stack(where)
        print(json.dumps({"down": True}))
        return 0
    status = status_of(current, where)
    print(json.dumps(status))
    return 0 if status["running"] else 1
