"""``genretag stack up|down|status``: the local Tansu + redis-server stack."""

from __future__ import annotations

import argparse
import json

from core.settings import state_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stack",
        help="Start/stop the local Kafka-protocol broker (Tansu) and redis-server.",
        description="Runs Tansu and redis-server (AOF, appendfsync always) on free loopback ports "
        "and writes their addresses to $GENRETAG_STATE_DIR/stack.env (default .genretag/), "
        "which every other genretag command reads.",
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    from genretag.stack import LocalStack

    where = state_dir()
    current = LocalStack.from_state(where)
    if args.action == "up":
        if current and all(s["up"] for s in current.status().values()):
            print(json.dumps({"already_up": True, **current.status()}))
            return 0
        if current:
            current.stop()
        stack = LocalStack(where).start(detached=True)
        print(json.dumps({"up": True, **stack.env()}))
        return 0
    if args.action == "down":
        if current:
            current.stop()
        print(json.dumps({"down": True}))
        return 0
    if not current:
        print(json.dumps({"running": False}))
        return 1
    status = current.status()
    print(json.dumps(status))
    return 0 if all(s["up"] for s in status.values()) else 1
