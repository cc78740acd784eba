"""A decoder process's reply always belongs to its request, whatever fails in the exchange.

Real decoder processes, real files of distinct lengths (a result of the wrong length is another
file's); faults injected at each step of the exchange (tests/faults/exchange_faults.py wraps the
pool's child I/O) and a real open-files limit. Also: every exception inside a decoder process
becomes a reply, never its death, and the process runs this checkout's code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from genretag.core.audio.decoders import DecodeOptions, open_decoder
from genretag.core.audio.libav.exchange import PACKAGE_ROOT
from genretag.core.audio.libav.pool import DecoderPool
from genretag.core.audio.placement import Placement
from genretag.core.audio.uri import AudioSource, resolve_source
from genretag.core.errors import PermanentError
from genretag.schemas import ReasonCode
from tests.faults import exchange_faults

SR = 8000
OPTS = DecodeOptions(SR, 30.0, timeout_s=20.0)
REPO = Path(__file__).resolve().parents[3]


def tone_wav(path: Path, seconds: float, freq: float) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:duration={seconds}:sample_rate={SR}",
                    "-c:a", "pcm_s16le", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """12 WAVs of distinct lengths (1.25 s to 6.75 s) and pitches."""
    root = tmp_path_factory.mktemp("exchange")
    return [tone_wav(root / f"d{k:02d}.wav", 1.25 + 0.5 * k, 200 + 60 * k) for k in range(12)]


@pytest.fixture(scope="module")
def truth(files: list[Path]) -> dict[Path, np.ndarray]:
    """Each file's samples from a clean decoder (no faults)."""
    ffmpeg = open_decoder("ffmpeg")
    return {p: ffmpeg.decode_audio(_src(p), OPTS) for p in files}


def _src(path: Path) -> AudioSource:
    return resolve_source(str(path), [str(path.parent)])


@pytest.fixture
def faults():
    exchange_faults.install(exchange_faults.FAULTS)
    yield exchange_faults.injected
    exchange_faults.uninstall()


def test_every_fault_of_the_exchange_costs_a_process_never_a_wrong_result(files, truth,
                                                                          faults) -> None:
    """Each file's first exchange meets a fault (each kind in turn); then files already seen
    are asked again at once, on whatever process is idle: a process that kept an unread reply
    would hand it to them. Every result must be its own file's, bit for bit."""
    libav = open_decoder("libav", 2)
    try:
        order = [p for k, p in enumerate(files) for p in (p, files[max(0, k - 1)], files[0])]
        results = [(p, libav.decode_audio(_src(p), OPTS, track_id=p.stem)) for p in order]
        restarts = libav.pool.restarts  # type: ignore[attr-defined]
    finally:
        libav.close()
    wrong = [p.name for p, got in results if not np.array_equal(got, truth[p])]
    assert not wrong, wrong
    assert set(faults) == set(exchange_faults.FAULTS) and sum(faults.values()) == len(files)
    assert restarts == len(files)  # each fault killed its process; none was reused


def test_faults_under_concurrency_and_in_window_decodes(files, truth, faults) -> None:
    """Four threads on two processes, whole tracks' windows: still each file's own."""
    libav = open_decoder("libav", 2)
    placement = Placement(clip_seconds=10.0, max_windows=1)  # one window: the whole file
    try:
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda p: libav.decode_tracks([_src(p)], SR, placement)[0],
                                files * 2))
    finally:
        libav.close()
    for path, audio in zip(files * 2, got, strict=True):
        assert not isinstance(audio, Exception), (path.name, audio)
        n = len(truth[path])
        assert audio.lengths == [n] and audio.duration_s == pytest.approx(n / SR), path.name
        assert np.array_equal(audio.windows[0, :n], truth[path]), path.name
    assert sum(faults.values()) == len(files)


def test_a_file_whose_every_exchange_fails_gets_a_clear_reason(files, faults) -> None:
    """Two failed exchanges: the file's reason says what happened; the next file is fine."""
    for fault, reason in (("wait_timeout", ReasonCode.DECODE_TIMEOUT),
                          ("wait_emfile", ReasonCode.INTERNAL),
                          ("garbage", ReasonCode.UNDECODABLE),
                          ("dies_mid_reply", ReasonCode.UNDECODABLE)):
        exchange_faults.install([fault], every_exchange=True)
        pool = DecoderPool(1)
        try:
            with pytest.raises(PermanentError) as info:
                pool.decode_audio(_src(files[3]), OPTS, track_id="t")
            err = info.value
            assert err.reason == reason and "tried twice" in str(err), (fault, str(err))
            assert err.track_id == "t" and pool.restarts == 2
            if reason == ReasonCode.INTERNAL:
                assert "not judged" in str(err) and "ulimit -n" in str(err)
            exchange_faults.uninstall()
            assert len(pool.decode_audio(_src(files[5]), OPTS)) == round(3.75 * SR)
        finally:
            exchange_faults.uninstall()
            pool.close()


_OUT_OF_FDS = r"""
import json, os, resource, sys
from genretag.core.audio.decoders import DecodeOptions
from genretag.core.audio.libav.pool import DecoderPool
from genretag.core.audio.uri import resolve_source
from genretag.core.errors import PermanentError

a, b, spare = sys.argv[1], sys.argv[2], int(sys.argv[3])
src = {p: resolve_source(p, [os.path.dirname(p)]) for p in (a, b)}
opts = DecodeOptions(8000, 30.0, timeout_s=20.0)
pool = DecoderPool(1)
pool.decode_audio(src[b], opts)  # started and warm
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
hogs = []
try:
    while True:
        hogs.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
for _ in range(spare):
    os.close(hogs.pop())
out = []
def decode(path):
    try:
        out.append([path, len(pool.decode_audio(src[path], opts))])
    except PermanentError as exc:
        out.append([path, str(exc.reason)])
    except Exception as exc:
        out.append([path, type(exc).__name__])
decode(a)  # one descriptor left: the file's; nothing else may need one
for fd in hogs:
    os.close(fd)
decode(b)
decode(a)
pool.close()
print(json.dumps(out))
"""


@pytest.mark.parametrize("spare", [1, 0])
def test_a_worker_out_of_descriptors_never_mixes_up_replies(files, truth, spare: int) -> None:
    """A real open-files limit, no injection: with one descriptor left (the file's) the
    exchange needs none of its own and the file decodes; with none left the file is parked
    ``internal``. Either way the files after it get their own samples (the reply reader once
    needed an epoll descriptor: a file failed with EMFILE, its reply stayed in the pipe, and the
    next file was given it)."""
    a, b = files[2], files[7]
    proc = subprocess.run([sys.executable, "-c", _OUT_OF_FDS, str(a), str(b), str(spare)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    first = len(truth[a]) if spare else "internal"
    assert got == [[str(a), first], [str(b), len(truth[b])], [str(a), len(truth[a])]], got


#: A decoder process whose track decode raises a bug's exception (the real child otherwise).
_RAISES = ("import sys; import genretag.core.audio.libav.track as t\n"
           "def boom(*a, **k):\n    raise {exc}\n"
           "t.decode_track = boom\n"
           "from genretag.core.audio.libav.child import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("exc", ["KeyError('boom')", "ValueError('Frame does not match')",
                                 "ZeroDivisionError()", "RecursionError()"])
def test_every_exception_in_a_decoder_process_is_a_reply_not_a_death(files, truth,
                                                                     exc: str) -> None:
    with DecoderPool(1, cmd=[sys.executable, "-c", _RAISES.format(exc=exc)]) as pool:
        pid = pool.pids()
        with pytest.raises(PermanentError) as err:
            pool.decode_track(_src(files[1]), SR, Placement(3.0), track_id="t-bug")
        assert err.value.reason == ReasonCode.INTERNAL and err.value.track_id == "t-bug"
        assert exc.split("(")[0] in str(err.value)
        assert "decoder process error" in str(err.value)
        assert pool.restarts == 0 and pool.pids() == pid  # the same process goes on
        assert np.array_equal(pool.decode_audio(_src(files[1]), OPTS), truth[files[1]])


def test_the_decoder_process_runs_this_checkouts_code() -> None:
    """The process's PYTHONPATH starts at this repository, whatever is installed."""
    assert (Path(PACKAGE_ROOT) / "genretag" / "core" / "audio" / "libav" / "child.py").is_file()
    assert Path(PACKAGE_ROOT) == REPO
