"""``genretag work``: run a tagging worker, or ``--replicas N`` of them under one supervisor."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict

from genretag.core.cli_settings import add_settings_arguments, flag_name, settings_from_args
from genretag.core.errors import GET_A_MODEL, ModelNotFound, UsageError
from genretag.core.exits import Exit
from genretag.core.logs import get_logger
from genretag.worker.settings import WorkerSettings

log = get_logger(__name__)

#: Set in each replica's environment: the supervisor's pid (a replica stops if it goes away).
SUPERVISOR_ENV = "GENRETAG_SUPERVISOR_PID"

#: Exit status of `work --until-idle` when tracks came and every one was dead-lettered
#: (e.g. all outside the allowed roots): scripts notice, `genretag dlq list` says why.
ALL_DEAD_LETTERED = Exit.ALL_DEAD_LETTERED


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "work",
        help="Consume track references, tag them, write tags to Redis.",
        description="Joins the consumer group, decodes windows spread over each whole track "
        "(libav decoder processes; the FFmpeg command line with --decoder ffmpeg and for "
        "http(s)), runs the TorchScript model in batches (CUDA when available), writes tags to "
        "Redis and then "
        "commits offsets. Bad input goes to the dead-letter topic with a reason code. "
        "SIGTERM/SIGINT finish the in-flight batches, commit and leave the group; a second "
        "signal exits at once. With --metrics-port, /metrics, /healthz and /readyz are served "
        "on that port. With --until-idle, an unreachable broker or Redis at start is an error "
        "(a service retries). Exit status: 0 done, 2 bad settings, 3 broker/Redis unreachable or "
        f"refusing (credentials, ACL), {ALL_DEAD_LETTERED} with --until-idle when every track "
        "was dead-lettered.",
    )
    parser.add_argument("--until-idle", action="store_true",
                        help="Exit once no message arrived for --idle-exit-s (drained topic).")
    parser.add_argument("--replicas", type=int, default=1, metavar="N",
                        help="Start N worker processes on this host, all in the same group; "
                        "signals are forwarded, replica i serves metrics on --metrics-port + i, "
                        "and the exit code is non-zero if any replica failed (default 1).")
    parser.add_argument("--replica-index", type=int, default=None, help=argparse.SUPPRESS)
    add_settings_arguments(parser, WorkerSettings)
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    if args.replicas < 1:
        raise UsageError("--replicas must be at least 1")
    settings = settings_from_args(WorkerSettings, args)  # validated once, before any fork
    if args.replicas > 1:
        return supervise(args, settings)
    if not settings.model.path.is_file():
        raise ModelNotFound(f"model file not found: {settings.model.path} (--model PATH or "
                            f"GENRETAG_MODEL_PATH): {GET_A_MODEL}")

    from genretag.core.descriptors import (
        BASE_DESCRIPTORS, PER_DECODE_WORKER, ensure_open_files,
    )
    from genretag.core.errors import FATAL_ERRORS
    from genretag.core.reach import reaching
    from genretag.worker.loop import StopFlag, run

    # Before any connection: a few descriptors short, kafka-python loops instead of failing.
    ensure_open_files(BASE_DESCRIPTORS + PER_DECODE_WORKER * settings.decode.workers,
                      "genretag work")

    stop = StopFlag()
    _watch_supervisor(stop)
    try:
        with reaching(redis_url=settings.redis.url, kafka=settings.kafka.bootstrap_servers):
            if args.until_idle:  # a batch run: fail fast; a service keeps retrying instead
                _preflight(settings)
            stats = run(settings, until_idle=args.until_idle, stop=stop)
    except FATAL_ERRORS as exc:  # wrong credentials or ACL: retrying cannot help
        log.error("worker.fatal", extra={"error": f"{type(exc).__name__}: {exc}"})
        print(f"genretag work: fatal: {type(exc).__name__}: {exc}", file=sys.stderr)
        return Exit.UNREACHABLE
    summary = {"worker_id": settings.worker_id, **asdict(stats)}
    if args.replica_index is not None:
        summary = {"replica": args.replica_index, **summary}
    # One write per line: replicas share stdout, and print() may split a line in two writes.
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.flush()
    if args.until_idle and stats.dead_lettered and not stats.tagged:
        print(f"genretag work: every track ({stats.dead_lettered}) was dead-lettered: "
              "`genretag dlq list` says why", file=sys.stderr)
        return ALL_DEAD_LETTERED
    return 0


def _preflight(settings: WorkerSettings) -> None:
    """Broker and Redis answer (else UnreachableError naming the address, exit 3)."""
    from genretag.core.reach import check_kafka
    from genretag.core.store import connect

    check_kafka(settings.kafka.bootstrap_servers)
    client = connect(settings.redis)
    try:
        client.ping()
    finally:
        client.close()


def replica_argv(args: argparse.Namespace, settings: WorkerSettings, index: int) -> list[str]:
    """The command line of replica ``index``: the same flags, its own worker id and port."""
    argv = [sys.executable, "-m", "genretag.cli", "--log-level", args.log_level,
            "--log-format", args.log_format, "work", "--replicas", "1"]
    if args.until_idle:
        argv.append("--until-idle")
    for key, value in vars(args).items():
        if key.startswith("secretfile_") and value is not None:  # a path, never the secret
            argv += ["--" + key.removeprefix("secretfile_").replace("_", "-") + "-file", value]
            continue
        name = key.removeprefix("setting_")
        if not key.startswith("setting_") or value is None or name in ("worker_id", "metrics_port"):
            continue
        flag = flag_name(name, WorkerSettings.field_info(name))
        if value is True or value is False:
            argv.append(flag if value else "--no-" + flag.removeprefix("--"))
        else:
            argv += [flag, str(value)]
    argv += ["--worker-id", f"{settings.worker_id}-{index}", "--replica-index", str(index)]
    if settings.health.metrics_port:
        argv += ["--metrics-port", str(settings.health.metrics_port + index)]
    return argv


def supervise(args: argparse.Namespace, settings: WorkerSettings) -> int:
    """Run ``args.replicas`` worker processes; forward SIGTERM/SIGINT; fail if any replica fails.

    Replicas run in their own sessions so a terminal's Ctrl-C reaches them once, through
    here. When one replica fails, the others are asked to stop (gracefully), so an
    orchestrator restarts the whole unit instead of running it degraded.
    """
    env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
    procs = [subprocess.Popen(replica_argv(args, settings, i), env=env, start_new_session=True)
             for i in range(args.replicas)]
    log.info("worker.replicas_started", extra={"replicas": args.replicas,
                                               "pids": [p.pid for p in procs]})

    def forward(signum: int, _frame: object) -> None:
        log.info("worker.replicas_signal", extra={"signal": signum})
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes: dict[int, int] = {}
    stopping = False
    while len(codes) < len(procs):
        for i, p in enumerate(procs):
            if i in codes or p.poll() is None:
                continue
            codes[i] = p.returncode
            log.info("worker.replica_exited", extra={"replica": i, "pid": p.pid,
                                                     "exit_code": p.returncode})
            if p.returncode not in (0, ALL_DEAD_LETTERED) and not stopping:
                stopping = True
                for other in procs:
                    if other.poll() is None:
                        other.send_signal(signal.SIGTERM)
        time.sleep(0.2)
    failed = {i: c for i, c in codes.items() if c not in (0, ALL_DEAD_LETTERED)}
    if not failed and all(c == ALL_DEAD_LETTERED for c in codes.values()):
        return ALL_DEAD_LETTERED  # no replica tagged anything
    if failed:
        log.error("worker.replicas_failed", extra={"exit_codes": failed})
        code = next(iter(failed.values())) if len(failed) == 1 else 1
        return code if code > 0 else 128 - code  # killed by signal N: 128 + N, as a shell says
    return 0


def _watch_supervisor(stop) -> None:
    """In a replica: stop gracefully if the supervisor dies (we are not in its session)."""
    parent = os.environ.get(SUPERVISOR_ENV)
    if not parent or not parent.isdigit():
        return

    def watch() -> None:
        while not stop.is_set():
            if os.getppid() != int(parent):
                log.warning("worker.supervisor_gone", extra={"supervisor_pid": int(parent)})
                stop.set()
                return
            time.sleep(1.0)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()
