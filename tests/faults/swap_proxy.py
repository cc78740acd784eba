"""Compressed record batches on the fetch path, in front of a real Tansu broker.

Tansu stores every produced batch uncompressed (it inflates gzip/snappy/lz4/zstd on produce,
and a gzip batch it cannot inflate is stored with its compression bits cleared), so a consumer
of Tansu never receives a compressed batch, as it would from Apache Kafka. To test the worker
against real compressed (and hostile) batches this module runs:

- :class:`ProxiedTansu`: a Tansu of its own whose advertised address is a loopback TCP proxy,
  so every client connection (metadata, group coordination, fetches) goes through the proxy;
- :class:`SwapProxy`: forwards bytes both ways; in the broker's replies it looks for marker
  bytes and swaps the stored *sentinel* batch that holds them for a prepared batch of exactly
  the same size and record count (base offset and leader epoch copied from the stored one, both
  outside the CRC), so no length or offset in the reply changes. Given ``topic_limits``, it
  also answers DescribeConfigs itself (Tansu closes the connection on it) with each topic's
  ``max.message.bytes``, as Apache Kafka would.

Group membership, offsets and commits stay real Tansu's; only the batch bytes are swapped.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.util import calc_crc32c

from genretag.cli.stack import free_port, tansu_binary

HEADER_BYTES = 61  # v2 record batch header
CRC_POS, ATTRIBUTES_POS, LENGTH_POS, EPOCH_POS, MAGIC_POS = 17, 21, 8, 12, 16
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
DESCRIBE_CONFIGS = 32  # api key


def build_batch(values: list[bytes], codec: str | int = "none") -> bytes:
    """A v2 record batch of ``values`` (no keys, no headers), compressed with ``codec``."""
    code = CODECS[codec] if isinstance(codec, str) else codec
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=code, is_transactional=False, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=2**31 - 1)
    for i, value in enumerate(values):
        builder.append(i, timestamp=None, key=None, value=value, headers=[])
    return bytes(builder.build())


def with_payload(batch: bytes, payload: bytes, attributes: int | None = None) -> bytes:
    """``batch`` with its records section replaced by ``payload`` (and optionally other
    attributes); length and CRC made valid again, so only the payload is wrong."""
    out = bytearray(batch[:HEADER_BYTES] + payload)
    struct.pack_into(">i", out, LENGTH_POS, len(out) - 12)
    if attributes is not None:
        struct.pack_into(">h", out, ATTRIBUTES_POS, attributes)
    struct.pack_into(">I", out, CRC_POS, calc_crc32c(bytes(out[ATTRIBUTES_POS:])))
    return bytes(out)


def with_bad_crc(batch: bytes) -> bytes:
    out = bytearray(batch)
    struct.pack_into(">I", out, CRC_POS, (struct.unpack_from(">I", out, CRC_POS)[0] + 1) % 2**32)
    return bytes(out)


def records_of(batch: bytes) -> int:
    return struct.unpack_from(">i", batch, 57)[0]


@dataclass
class Swap:
    """A prepared batch and the uncompressed sentinel of the same size that stands for it."""

    replacement: bytes
    sentinel: bytes
    marker: bytes
    value_pos: int  # where the marker starts inside the sentinel batch
    swapped: int = 0


def make_swap(replacement: bytes) -> Swap:
    """A sentinel batch (as many records as ``replacement``, a marker in the first) whose
    encoded size equals ``replacement``'s."""
    n = records_of(replacement)
    marker = b"~SW" + uuid.uuid4().hex[:10].encode()
    target = len(replacement)
    if target < len(build_batch([marker] + [b""] * (n - 1))):
        raise ValueError(f"a {target}-byte batch is too small to stand in for")
    lo, hi = 0, target
    while lo <= hi:  # the batch grows with the padding: find the padding that fits exactly
        pad = (lo + hi) // 2
        sentinel = build_batch([marker + b"." * pad] + [b""] * (n - 1))
        if len(sentinel) == target:
            return Swap(replacement, sentinel, marker, sentinel.index(marker))
        lo, hi = (pad + 1, hi) if len(sentinel) < target else (lo, pad - 1)
    # a varint length boundary skipped the exact size: the caller picks another payload
    raise ValueError(f"no sentinel of exactly {target} bytes (try another payload size)")


@dataclass
class SwapProxy:
    """A loopback TCP proxy to ``upstream`` that swaps sentinel batches in broker replies."""

    upstream: int
    port: int = field(default_factory=free_port)
    swaps: list[Swap] = field(default_factory=list)
    topic_limits: dict[str, int] = field(default_factory=dict)  # DescribeConfigs answers

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="swap-proxy").start()

    def add(self, swap: Swap) -> Swap:
        with self._lock:
            self.swaps.append(swap)
        return swap

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                broker = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
            except OSError:
                client.close()
                continue
            broker.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._conns += [client, broker]
            to_client = threading.Lock()  # replies and our own answers share the client socket
            threading.Thread(target=self._requests, args=(client, broker, to_client),
                             daemon=True).start()
            threading.Thread(target=self._replies, args=(broker, client, to_client),
                             daemon=True).start()

    def _requests(self, src: socket.socket, dst: socket.socket, to_client: threading.Lock) -> None:
        """Client → broker, one framed request at a time; DescribeConfigs answered here."""
        try:
            while True:
                head = _recv_exact(src, 4)
                if head is None:
                    return
                body = _recv_exact(src, struct.unpack(">i", head)[0])
                if body is None:
                    return
                api_key, version, correlation = struct.unpack_from(">hhi", body)
                if api_key == DESCRIBE_CONFIGS and self.topic_limits:
                    answer = self._describe_configs(body, version, correlation)
                    with to_client:
                        src.sendall(answer)
                    continue
                dst.sendall(head + body)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _describe_configs(self, body: bytes, version: int, correlation: int) -> bytes:
        from kafka.protocol.admin import DescribeConfigsRequest, DescribeConfigsResponse

        request = DescribeConfigsRequest.decode(body, version=version, header=True)
        result = DescribeConfigsResponse.DescribeConfigsResult
        entry = result.DescribeConfigsResourceResult
        results = []
        for resource in request.resources:
            limit = self.topic_limits.get(resource.resource_name)
            configs = [] if limit is None else [entry(
                name="max.message.bytes", value=str(limit), read_only=False, config_source=1,
                is_default=False, is_sensitive=False, synonyms=[], config_type=3,
                documentation=None)]
            results.append(result(error_code=0, error_message=None,
                                  resource_type=resource.resource_type,
                                  resource_name=resource.resource_name, configs=configs))
        response = DescribeConfigsResponse(throttle_time_ms=0, results=results)
        response.API_VERSION = version  # before the header: a response header has no version
        response.with_header(correlation_id=correlation)
        return bytes(response.encode(header=True, framed=True))

    def _replies(self, src: socket.socket, dst: socket.socket, to_client: threading.Lock) -> None:
        """Broker → client, one framed reply at a time, sentinels swapped."""
        try:
            while True:
                head = _recv_exact(src, 4)
                if head is None:
                    return
                (size,) = struct.unpack(">i", head)
                body = _recv_exact(src, size)
                if body is None:
                    return
                reply = head + self._swap(bytearray(body))
                with to_client:
                    dst.sendall(reply)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _swap(self, body: bytearray) -> bytes:
        with self._lock:
            swaps = list(self.swaps)
        for swap in swaps:
            at = body.find(swap.marker)
            while at >= 0:
                start = at - swap.value_pos
                end = start + len(swap.replacement)
                if (start >= 0 and end <= len(body) and body[start + MAGIC_POS] == 2
                        and struct.unpack_from(">i", body, start + LENGTH_POS)[0]
                        == len(swap.replacement) - 12):
                    stored = bytes(body[start:start + 16])
                    body[start:end] = swap.replacement
                    body[start:start + 8] = stored[:8]  # base offset Tansu gave it
                    body[start + EPOCH_POS:start + 16] = stored[EPOCH_POS:16]
                    swap.swapped += 1
                at = body.find(swap.marker, at + 1)
        return bytes(body)

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        with self._lock:
            for s in self._conns:
                try:
                    s.close()
                except OSError:
                    pass


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class ProxiedTansu:
    """A Tansu broker reachable (and advertised) only through a :class:`SwapProxy`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.broker_port = free_port()
        self.proxy = SwapProxy(self.broker_port)
        advertised = f"tcp://127.0.0.1:{self.proxy.port}"
        self.log = open(state_dir / "tansu-proxied.log", "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url",
             f"tcp://127.0.0.1:{self.broker_port}", "--advertised-listener-url", advertised,
             "--storage-engine", "memory://tansu/"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=state_dir)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.broker_port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the proxied Tansu did not start") from None
                time.sleep(0.2)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.proxy.port}"

    def close(self) -> None:
        self.proxy.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def produce_raw(bootstrap: str, topic: str, partition: int, batch: bytes) -> int:
    """Send one record batch as it is (a raw ProduceRequest); returns its base offset."""
    from kafka.net.compat import KafkaNetClient
    from kafka.protocol.producer import ProduceRequest

    topic_data = ProduceRequest.TopicProduceData
    part = topic_data.PartitionProduceData
    client = KafkaNetClient(bootstrap_servers=bootstrap)
    try:
        node = None
        deadline = time.monotonic() + 30
        while node is None:
            client.poll(timeout_ms=200)
            node = client.least_loaded_node(bootstrap_fallback=True)
            if time.monotonic() > deadline:
                raise RuntimeError("no broker to produce to")
        client.await_ready(node)
        request = ProduceRequest(
            transactional_id=None, acks=-1, timeout_ms=10000, max_version=9,
            topic_data=[topic_data(name=topic, partition_data=[part(index=partition,
                                                                    records=batch)])])
        response = client.send_and_receive(node, request, timeout_ms=30000)
        [answer] = response.responses[0].partition_responses
        if answer.error_code:
            raise RuntimeError(f"produce refused: error {answer.error_code}")
        return answer.base_offset
    finally:
        client.close()
