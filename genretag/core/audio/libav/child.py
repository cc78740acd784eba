"""A long-lived decoder process: reads requests on stdin, writes samples into shared memory.

Started by :mod:`genretag.core.audio.libav.pool` as ``python -m genretag.core.audio.libav.child FD
BYTES`` where FD is a memfd of BYTES bytes shared with the parent. Protocol, one JSON line each
way: a request (the fields of :class:`genretag.core.audio.libav.decode.Request`; for a whole
track's windows a ``track`` object: the :class:`genretag.core.audio.placement.Placement` fields and
``max_track_s``; for its duration alone a ``duration`` object with ``max_track_s``) in, then
either ``{"ok": true, "lengths": [...]}`` (the spans lie back to back from offset 0 of the memfd;
a track's reply adds ``starts``, ``duration_s`` and ``duration_from``, a duration's reply has
``duration_s`` and ``duration_from``) or
``{"ok": false, "reason": ..., "detail": ...}``. A crash or hang here costs only this process:
the parent kills it, starts another and retries the file once.
"""

from __future__ import annotations

import json
import mmap
import resource
import sys

#: Address space this process may add after start-up: bounds memory whatever a file claims.
HEADROOM_BYTES = 1 << 30


def _limit_memory() -> None:
    """Cap the address space at today's size + headroom (a hostile file cannot balloon it)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        pages = int(f.read().split()[0])
    limit = pages * mmap.PAGESIZE + HEADROOM_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(argv: list[str]) -> int:
    import av
    import numpy as np

    from genretag.core.audio.libav.decode import LibavError, Request, decode_file
    from genretag.core.audio.libav.track import TrackRequest, decode_track, track_duration
    from genretag.core.audio.placement import Placement

    av.logging.set_level(av.logging.PANIC)  # errors come back as replies, not on stderr
    fd, size = int(argv[0]), int(argv[1])
    shared = mmap.mmap(fd, size)
    out = np.frombuffer(shared, dtype=np.float32)
    _limit_memory()
    reply = sys.stdout
    reply.write('{"ready": true}\n')
    reply.flush()
    for line in sys.stdin:
        fields = json.loads(line)
        fields["windows"] = tuple(tuple(w) for w in fields.get("windows", ()))
        if fields.get("identity") is not None:
            fields["identity"] = tuple(fields["identity"])
        track = fields.pop("track", None)
        duration = fields.pop("duration", None)
        req = Request(**fields)
        try:
            if req.max_samples > len(out):
                raise ValueError(f"{req.max_samples} samples asked, buffer holds {len(out)}")
            if duration is not None:
                seconds, how = track_duration(TrackRequest(req, Placement(1.0),
                                                           duration["max_track_s"]))
                answer = {"ok": True, "lengths": [], "duration_s": seconds, "duration_from": how}
            elif track is not None:
                cap = track.pop("max_track_s")
                got = decode_track(TrackRequest(req, Placement(**track), cap),
                                   out[: req.max_samples])
                answer = {"ok": True, "lengths": got.lengths, "starts": got.starts,
                          "duration_s": got.duration_s, "duration_from": got.duration_from}
            else:
                spans = decode_file(req, out)
                answer = {"ok": True, "lengths": [len(s) for s in spans]}
        except LibavError as exc:
            answer = {"ok": False, "reason": exc.reason, "detail": str(exc)}
        except MemoryError:
            answer = {"ok": False, "reason": "undecodable",
                      "detail": f"decoding needs more than {HEADROOM_BYTES >> 20} MiB"}
        reply.write(json.dumps(answer) + "\n")
        reply.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
