"""
The benchmark's load generator: one process, one asyncio loop, plain
HTTP/1.1 on keep-alive connections (no pipelining), raw sockets through
C{asyncio.Protocol}.  Per request it formats one header block, writes
zero-copy slices of the upload's content (L{content.views}) and parses only
the status line and the few response headers it needs, so a request costs
the client a few microseconds of CPU.

Requests are shaped like tus-js-client's on Node (captured from version
4.3.1): the same header fields in the same order, C{Upload-Metadata} with a
filename and a filetype on every creation, C{Connection: keep-alive}, and a
small body sent in the same write as its header block (Node's
C{request.end(body)} does that), so the server sees one segment per small
request, as it does from a real client.  Connections are reused like an
HTTP agent's: one per upload in flight, kept open between requests.

Run by C{run.py} as C{python loadgen.py '<json spec>'}.  Protocol on the
standard streams: the generator prints C{ready} once connected, waits for a
C{go} line, runs, and prints one line of JSON with its results.  The
trickle mode (scenario d) also prints C{holding} once every upload is open
and C{releasing} when uploads start to complete; the probe mode HEADs its
own uploads from C{go} until a C{stop} line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import sys
import time
from typing import Any, Iterable

import content

OFFSET_OCTET_STREAM = b"application/offset+octet-stream"
REQUEST_TIMEOUT = 120.0
# Bodies up to this size go out in the same write as their header block.
SMALL_BODY = 64 * 1024


def metadata(upload: int) -> bytes:
    """The C{Upload-Metadata} tus-js-client sends for a file: its name and type, base64."""
    name = base64.b64encode(b"upload-%08d.bin" % upload)
    return b"Upload-Metadata: filename " + name + b",filetype " + base64.b64encode(b"application/octet-stream")


class HTTPError(Exception):
    pass


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 client connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.head_request = False
        self.closed = False
        self._paused = False
        self._drained: asyncio.Future | None = None

    # asyncio.Protocol ------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None:
            self._parse()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HTTPError("connection closed by the server"))
        self._wake()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def _wake(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    # requests ----------------------------------------------------------
    def expect_response(self, head_request: bool = False, timeout: float = REQUEST_TIMEOUT) -> asyncio.Future:
        """A future for the next response, failed after C{timeout} seconds (cheaper than C{wait_for})."""
        self.head_request = head_request
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        timer = loop.call_later(timeout, self._time_out, waiter)
        waiter.add_done_callback(lambda _: timer.cancel())
        if self.buffer:
            self._parse()
        return waiter

    def _time_out(self, waiter: asyncio.Future) -> None:
        if not waiter.done():
            waiter.set_exception(asyncio.TimeoutError())
            self.close()

    async def send(self, chunks: Iterable[Any]) -> None:
        write = self.transport.write
        for chunk in chunks:
            if self.closed:
                raise HTTPError("connection closed while sending")
            write(chunk)
            if self._paused:
                self._drained = asyncio.get_running_loop().create_future()
                await self._drained

    def _parse(self) -> None:
        buffer = self.buffer
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(buffer[:end]).split(b"\r\n")
            status = int(lines[0][9:12])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            start = end + 4
            if self.head_request or status in (204, 304) or status < 200:
                stop = start
            elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                last = buffer.find(b"0\r\n\r\n", start)
                if last < 0:
                    return
                stop = last + 5
            else:
                stop = start + int(headers.get(b"content-length", b"0"))
                if len(buffer) < stop:
                    return
            body = bytes(buffer[start:stop])
            del buffer[:stop]
            if status < 200:
                continue  # 100 Continue
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result((status, headers, body))
            return

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Client:
    """What one worker knows about the server and records while it runs."""

    def __init__(self, spec: dict) -> None:
        self.host: str = spec["host"]
        self.port: int = spec["port"]
        self.base: bytes = spec["base_path"].encode("ascii")
        self.host_header = f"{self.host}:{self.port}".encode("ascii")
        self.latencies: dict[str, list[float]] = {}
        self.uploads: list[list] = []
        self.errors: list[str] = []
        self.error_count = 0
        self.bytes_sent = 0

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(Connection, self.host, self.port)
        return protocol

    def error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < 20:
            self.errors.append(message)

    def record(self, kind: str, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(round(seconds * 1000.0, 4))

    async def request(self, conn: Connection, kind: str, head: bytes, body: list[Any] | tuple = (),
                      head_request: bool = False) -> tuple[int, dict, bytes]:
        started = time.perf_counter()
        response = conn.expect_response(head_request)
        if len(body) == 1 and len(body[0]) <= SMALL_BODY:
            await conn.send([head + body[0]])  # one write, one segment, as Node sends it
        else:
            await conn.send([head, *body])
        status, headers, payload = await response
        self.record(kind, time.perf_counter() - started)
        if headers.get(b"connection", b"").lower() == b"close":
            conn.closed = True
            conn.close()
        return status, headers, payload

    def upload_path(self, location: bytes) -> bytes:
        # Servers answer with an absolute URL, a scheme-relative one or a path.
        if location.startswith((b"http://", b"https://", b"//")):
            location = b"/" + location.split(b"//", 1)[1].split(b"/", 1)[1]
        return location

    def head(self, method: bytes, path: bytes, *fields: bytes) -> bytes:
        # tus-js-client's fields first, then what Node's http module adds.
        return b"%s %s HTTP/1.1\r\nTus-Resumable: 1.0.0\r\n%sHost: %s\r\nConnection: keep-alive\r\n\r\n" % (
            method, path, b"".join(f + b"\r\n" for f in fields), self.host_header)

    async def create(self, conn: Connection, upload: int, size: int, with_body: bool) -> bytes:
        fields = [b"Upload-Length: %d" % size, metadata(upload)]
        body: list = []
        if with_body:
            fields += [b"Content-Type: " + OFFSET_OCTET_STREAM, b"Content-Length: %d" % size]
            body = list(content.views(upload, 0, size))
        head = self.head(b"POST", self.base, *fields)
        if not with_body:
            head = head[:-2] + b"Content-Length: 0\r\n\r\n"  # Node puts it last
        status, headers, payload = await self.request(conn, "POST", head, body)
        if status != 201 or b"location" not in headers:
            raise HTTPError(f"POST answered {status}: {payload[:200]!r}")
        if with_body:
            self.bytes_sent += size
            if headers.get(b"upload-offset") != b"%d" % size:
                raise HTTPError(f"POST with body: Upload-Offset {headers.get(b'upload-offset')!r}, sent {size}")
        return self.upload_path(headers[b"location"])

    async def patch(self, conn: Connection, path: bytes, upload: int, start: int, end: int) -> None:
        head = self.head(b"PATCH", path, b"Upload-Offset: %d" % start, b"Content-Type: " + OFFSET_OCTET_STREAM,
                         b"Content-Length: %d" % (end - start))
        status, headers, payload = await self.request(conn, "PATCH", head, list(content.views(upload, start, end)))
        if status != 204 or headers.get(b"upload-offset") != b"%d" % end:
            raise HTTPError(f"PATCH answered {status}, Upload-Offset {headers.get(b'upload-offset')!r}"
                            f" (expected {end}): {payload[:200]!r}")
        self.bytes_sent += end - start

    async def head_offset(self, conn: Connection, path: bytes, expected: int) -> None:
        status, headers, _ = await self.request(conn, "HEAD", self.head(b"HEAD", path), (), head_request=True)
        if status != 200 or headers.get(b"upload-offset") != b"%d" % expected:
            raise HTTPError(f"HEAD answered {status}, Upload-Offset {headers.get(b'upload-offset')!r}"
                            f" (expected {expected})")

    def done(self, upload: int, path: bytes, size: int) -> None:
        self.uploads.append([upload, path.rsplit(b"/", 1)[1].decode("ascii"), size])


# Modes -----------------------------------------------------------------

async def _with_connection(client: Client, conns: list[Connection | None], slot: int) -> Connection:
    conn = conns[slot]
    if conn is None or conn.closed:
        conn = conns[slot] = await client.connect()
    return conn


async def run_uploads(client: Client, spec: dict, lines: asyncio.Queue) -> dict:
    """Scenarios a-c: C{concurrency} connections working through a queue of uploads."""
    size, chunk, with_body = spec["size"], spec.get("chunk") or spec["size"], spec["creation_with_upload"]
    queue = list(range(spec["first"], spec["first"] + spec["count"]))
    queue.reverse()
    conns: list[Connection | None] = [await client.connect() for _ in range(spec["concurrency"])]
    print("ready", flush=True)
    await lines.get()  # go

    async def lane(slot: int) -> None:
        while queue:
            upload = queue.pop()
            try:
                conn = await _with_connection(client, conns, slot)
                path = await client.create(conn, upload, size, with_body)
                if with_body:
                    conn = await _with_connection(client, conns, slot)
                    await client.head_offset(conn, path, size)
                else:
                    for start in range(0, size, chunk):
                        conn = await _with_connection(client, conns, slot)
                        await client.patch(conn, path, upload, start, min(size, start + chunk))
                client.done(upload, path, size)
            except (HTTPError, OSError, asyncio.TimeoutError, ValueError) as e:
                client.error(f"upload {upload}: {type(e).__name__}: {e}")
                if conns[slot] is not None:
                    conns[slot].close()  # type: ignore[union-attr]
                conns[slot] = None

    started = time.monotonic()
    await asyncio.gather(*(lane(i) for i in range(spec["concurrency"])))
    ended = time.monotonic()
    for conn in conns:
        if conn is not None:
            conn.close()
    return {"started": started, "ended": ended}


async def run_trickle(client: Client, spec: dict, lines: asyncio.Queue) -> dict:
    """Scenario d: C{count} uploads open at once, one byte every C{interval} seconds each."""
    count, interval, length = spec["count"], spec["interval"], spec["length"]
    first = spec["first"]
    print("ready", flush=True)
    await lines.get()  # go
    started = time.monotonic()
    setup_gate = asyncio.Semaphore(spec.get("setup_concurrency", 100))
    opened: list[tuple[int, bytes, Connection, asyncio.Future]] = []

    async def open_one(upload: int) -> None:
        async with setup_gate:
            try:
                conn = await client.connect()
                path = await client.create(conn, upload, length, False)
                head = client.head(b"PATCH", path, b"Upload-Offset: 0", b"Content-Type: " + OFFSET_OCTET_STREAM,
                                   b"Content-Length: %d" % length)
                response = conn.expect_response(timeout=interval * (length + 1) + REQUEST_TIMEOUT)
                await conn.send([head])
                opened.append((upload, path, conn, response))
            except (HTTPError, OSError, asyncio.TimeoutError, ValueError) as e:
                client.error(f"opening upload {upload}: {type(e).__name__}: {e}")

    await asyncio.gather(*(open_one(u) for u in range(first, first + count)))
    held_at = time.monotonic()
    print("holding", flush=True)
    rng = random.Random(first)

    async def trickle(upload: int, path: bytes, conn: Connection, response: asyncio.Future) -> None:
        try:
            await asyncio.sleep(rng.random() * interval)
            for position in range(length):
                if position:
                    await asyncio.sleep(interval)
                if response.done():
                    raise HTTPError(f"answered before the body was complete: {response.result()[0]}")
                await conn.send(content.views(upload, position, position + 1))
            last_byte = time.perf_counter()
            status, headers, payload = await response
            client.record("PATCH", time.perf_counter() - last_byte)
            if status != 204 or headers.get(b"upload-offset") != b"%d" % length:
                raise HTTPError(f"PATCH answered {status}, Upload-Offset {headers.get(b'upload-offset')!r}")
            client.bytes_sent += length
            client.done(upload, path, length)
        except (HTTPError, OSError, asyncio.TimeoutError, ValueError) as e:
            client.error(f"trickling upload {upload}: {type(e).__name__}: {e}")
        finally:
            conn.close()

    async def announce_release() -> None:
        await asyncio.sleep(max(0.0, (length - 1) * interval))
        print("releasing", flush=True)

    announcer = asyncio.ensure_future(announce_release())
    await asyncio.gather(*(trickle(*entry) for entry in opened))
    await announcer
    return {"started": started, "ended": time.monotonic(), "held_at": held_at,
            "setup_seconds": held_at - started, "opened": len(opened)}


async def run_probe(client: Client, spec: dict, lines: asyncio.Queue) -> dict:
    """HEAD a few uploads of its own, one at a time, from C{go} until C{stop}."""
    conn = await client.connect()
    paths = []
    for upload in range(spec["first"], spec["first"] + spec["count"]):
        paths.append(await client.create(conn, upload, 64, True))
        client.done(upload, paths[-1], 64)
    client.latencies.clear()
    print("ready", flush=True)
    await lines.get()  # go
    started = time.monotonic()
    stop = asyncio.ensure_future(lines.get())
    index = 0
    while not stop.done():
        try:
            conn = conn if not conn.closed else await client.connect()
            await client.head_offset(conn, paths[index % len(paths)], 64)
        except (HTTPError, OSError, asyncio.TimeoutError) as e:
            client.error(f"probe HEAD: {type(e).__name__}: {e}")
            conn.close()
            conn = await client.connect()
        index += 1
        await asyncio.sleep(spec["pause"])
    conn.close()
    return {"started": started, "ended": time.monotonic()}


MODES = {"uploads": run_uploads, "trickle": run_trickle, "probe": run_probe}


async def main(spec: dict) -> None:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue = asyncio.Queue()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def read_lines() -> None:
        while True:
            line = await reader.readline()
            await lines.put(line.strip().decode())
            if not line:
                return

    pump = asyncio.ensure_future(read_lines())
    client = Client(spec)
    content.pool()  # built before the clock starts
    cpu = time.process_time()
    timing = await MODES[spec["mode"]](client, spec, lines)
    pump.cancel()
    result = {**timing, "latencies": client.latencies, "uploads": client.uploads, "errors": client.errors,
              "error_count": client.error_count, "bytes": client.bytes_sent,
              "cpu_seconds": time.process_time() - cpu}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
