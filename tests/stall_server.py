"""A real loopback HTTP server that sends the start of a WAV and then stalls (a hanging input)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def wav_head(rate: int = 8000, seconds_sent: float = 0.5) -> bytes:
    """A mono 16-bit WAV header claiming 60 s, followed by ``seconds_sent`` of a square wave."""
    n = int(rate * seconds_sent)
    data = b"".join(struct.pack("<h", 8000 if (i // 20) % 2 else -8000) for i in range(n))
    total = rate * 2 * 60
    header = (b"RIFF" + struct.pack("<I", 36 + total) + b"WAVEfmt " +
              struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) +
              b"data" + struct.pack("<I", total))
    return header + data


@contextmanager
def stalling_server(body: bytes | None = None, *, stall: bool = True,
                    name: str = "hang.wav") -> Iterator[tuple[str, list[str]]]:
    """Yields (url, request paths seen); each connection gets ``body``, then nothing until exit
    (``stall``) or a close (a plain server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    stop = threading.Event()
    seen: list[str] = []
    conns: list[socket.socket] = []
    payload = wav_head() if body is None else body

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conns.append(conn)
            try:
                conn.settimeout(2)
                request = conn.recv(4096).decode("latin-1")
                seen.append(request.split(" ")[1] if " " in request else request)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: audio/wav\r\n\r\n" + payload)
                if not stall:
                    conn.close()
            except OSError:
                pass  # keep the connection open and silent: the client hangs on it

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/{name}", seen
    finally:
        stop.set()
        thread.join(5)
        for conn in conns:
            conn.close()
        sock.close()
