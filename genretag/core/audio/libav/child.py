"""A long-lived decoder process: reads requests on stdin, writes samples into shared memory.

Started by :mod:`genretag.core.audio.libav.exchange` as ``python -m genretag.core.audio.libav.child
FD BYTES`` where FD is a memfd of BYTES bytes shared with the parent. Protocol, one JSON line each
way: a request (an ``id``, the fields of :class:`genretag.core.audio.libav.decode.Request`; for a
whole track's windows a ``track`` object: the :class:`genretag.core.audio.placement.Placement`
fields and ``max_track_s``; for its duration alone a ``duration`` object with ``max_track_s``)
in, then either ``{"id": ..., "ok": true, "lengths": [...]}`` (the spans lie back to back from
offset 0 of the memfd; a track's reply adds ``starts``, ``duration_s`` and ``duration_from``, a
duration's reply has ``duration_s`` and ``duration_from``) or ``{"id": ..., "ok": false,
"reason": ..., "detail": ...}``. Every reply echoes its request's ``id``.

Every exception a request raises becomes its reply, never this process's death: the file's
reason (:class:`genretag.core.audio.libav.decode.LibavError`), ``undecodable`` for libav's own
errors and for running out of memory, and ``internal`` (with the exception and where it was
raised) for anything else, a bug the parent logs. A crash or hang (a fault in libav itself)
still costs only this process: the parent kills it, starts another and retries the file once.
"""

from __future__ import annotations

import json
import mmap
import resource
import sys
import traceback

#: Address space this process may add after start-up: bounds memory whatever a file claims.
HEADROOM_BYTES = 1 << 30
#: Longest ``detail`` in a reply (the parent caps dead-letter details at 4000 characters).
DETAIL_CHARS = 2000


def _limit_memory() -> None:
    """Cap the address space at today's size + headroom (a hostile file cannot balloon it)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        pages = int(f.read().split()[0])
    limit = pages * mmap.PAGESIZE + HEADROOM_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(argv: list[str]) -> int:
    import av
    import numpy as np

    from genretag.core.audio.libav.decode import UNDECODABLE, LibavError

    av.logging.set_level(av.logging.PANIC)  # errors come back as replies, not on stderr
    fd, size = int(argv[0]), int(argv[1])
    shared = mmap.mmap(fd, size)
    out = np.frombuffer(shared, dtype=np.float32)
    _limit_memory()
    reply = sys.stdout
    reply.write('{"ready": true}\n')
    reply.flush()
    for line in sys.stdin:
        request_id = None
        try:
            fields = json.loads(line)
            request_id = fields.pop("id", None)
            answer = handle(fields, out)
        except LibavError as exc:
            answer = {"ok": False, "reason": exc.reason, "detail": str(exc)}
        except MemoryError:
            answer = {"ok": False, "reason": UNDECODABLE,
                      "detail": f"decoding needs more than {HEADROOM_BYTES >> 20} MiB"}
        except av.FFmpegError as exc:  # libav refused the file where no check expected it
            answer = {"ok": False, "reason": UNDECODABLE, "detail": f"libav: {exc}"}
        except Exception as exc:  # noqa: BLE001 - a bug: this request's reply, not our death
            answer = {"ok": False, "reason": "internal", "detail": _bug(exc)}
        answer["id"] = request_id
        if "detail" in answer:
            answer["detail"] = str(answer["detail"])[:DETAIL_CHARS]
        reply.write(json.dumps(answer) + "\n")
        reply.flush()
    return 0


def handle(fields: dict, out) -> dict:
    """One request's answer (samples written to ``out``); raises what the decode raises."""
    from genretag.core.audio.libav.decode import Request, decode_file
    from genretag.core.audio.libav.track import TrackRequest, decode_track, track_duration
    from genretag.core.audio.placement import Placement

    fields["windows"] = tuple(tuple(w) for w in fields.get("windows", ()))
    if fields.get("identity") is not None:
        fields["identity"] = tuple(fields["identity"])
    track = fields.pop("track", None)
    duration = fields.pop("duration", None)
    req = Request(**fields)
    if req.max_samples > len(out):
        raise ValueError(f"{req.max_samples} samples asked, buffer holds {len(out)}")
    if duration is not None:
        seconds, how = track_duration(TrackRequest(req, Placement(1.0), duration["max_track_s"]))
        return {"ok": True, "lengths": [], "duration_s": seconds, "duration_from": how}
    if track is not None:
        cap = track.pop("max_track_s")
        got = decode_track(TrackRequest(req, Placement(**track), cap), out[: req.max_samples])
        return {"ok": True, "lengths": got.lengths, "starts": got.starts,
                "duration_s": got.duration_s, "duration_from": got.duration_from}
    spans = decode_file(req, out)
    return {"ok": True, "lengths": [len(s) for s in spans]}


def _bug(exc: BaseException) -> str:
    """``Type: message (at file:line in function)`` of the innermost frame, for the log."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno} in " \
            f"{frames[-1].name})" if frames else ""
    return f"decoder process error: {type(exc).__name__}: {exc}{where}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
