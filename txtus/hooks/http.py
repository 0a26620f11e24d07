"""
HTTP hooks (C{--hooks-http URL}), as tusd's: each event is POSTed to one
URL as JSON in tusd's request shape, and a 2xx answer with
C{Content-Type: application/json} in tusd's response shape is the hook's
answer.  A 5xx or a network failure (including no answer within the
per-attempt timeout) is retried a bounded number of times, waiting
C{backoff} seconds before the first retry and twice as long before each
next one; an answer larger than the size limit is refused unread.
"""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from treq.content import collect
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, ensureDeferred
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.task import deferLater
from txtus.logs import Logger
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed, ResponseNeverReceived
from zope.interface import implementer

from txtus import errors
from txtus.hooks.events import HookRequest, HookResponse, canonical_header
from txtus.interfaces import IHookHandler

log = Logger()

_NETWORK_ERRORS = (ConnectError, DNSLookupError, ResponseFailed, ResponseNeverReceived, TimeoutError)


class _TooLarge(Exception):
    pass


@implementer(IHookHandler)
class HttpHooks:
    """
    @param timeout: seconds one attempt may take (until the whole answer
        is read).
    @param retries: further attempts after a 5xx or a network failure.
    @param backoff: seconds before the first retry; doubled for each next.
    @param size_limit: largest answer body accepted, in bytes.
    @param forward_headers: names of the client request's headers to send
        along with the hook request (e.g. C{Authorization}).
    """

    def __init__(self, url: str, reactor: Any, timeout: float = 15.0, retries: int = 3,
                 backoff: float = 1.0, size_limit: int = 5120,
                 forward_headers: tuple[str, ...] = ()) -> None:
        self.url = url
        self._reactor = reactor
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.size_limit = size_limit
        self.forward_headers = tuple(canonical_header(h.strip()) for h in forward_headers if h.strip())
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._client = HTTPClient(Agent(reactor, pool=self._pool))

    def invoke_hook(self, request: HookRequest) -> Deferred:
        # Cancelling an attempt surfaces as whatever the agent makes of it
        # (ResponseNeverReceived...), which must not be taken for a network
        # failure to retry: the flag says the caller gave up.
        cancelled: list[bool] = []
        call = ensureDeferred(self._invoke(request, cancelled))

        def cancel(outer: Deferred) -> None:
            cancelled.append(True)
            call.cancel()
        outer: Deferred = Deferred(cancel)
        call.chainDeferred(outer)
        return outer

    async def _invoke(self, request: HookRequest, cancelled: list[bool]) -> HookResponse:
        body = request.to_json()
        headers = {"Content-Type": ["application/json"]}
        for name in self.forward_headers:
            values = request.http_request.header.get(name)
            if values:
                headers[name] = values
        attempt = 0
        while True:
            try:
                status, content_type, answer = await self._attempt(body, headers)
            except _TooLarge:
                raise errors.HookInvalidResponse(
                    f"the {request.type} hook endpoint answered with more than {self.size_limit} bytes") from None
            except _NETWORK_ERRORS as e:
                if cancelled:
                    raise CancelledError() from None
                timed_out = isinstance(e, TimeoutError)
                problem = (f"did not answer within {self.timeout:g} s" if timed_out
                           else f"could not be reached ({type(e).__name__})")
            else:
                if 200 <= status < 300:
                    return self._parse(request, content_type, answer)
                problem = f"answered {status}"
                timed_out = False
                if status < 500:
                    break
            if attempt >= self.retries:
                break
            delay = self.backoff * 2 ** attempt
            attempt += 1
            log.info("{event} hook endpoint {problem}; retry {attempt} in {delay:g} s", event=request.type,
                     problem=problem, attempt=attempt, delay=delay)
            await deferLater(self._reactor, delay, lambda: None)
            if cancelled:
                raise CancelledError()
        failed = errors.HookTimeout if timed_out else errors.HookFailed
        raise failed(f"the {request.type} hook endpoint {problem}")

    async def _attempt(self, body: bytes, headers: dict[str, list[str]]) -> tuple[int, bytes, bytes]:
        attempt = ensureDeferred(self._exchange(body, headers))
        if not self.timeout:
            return await attempt
        expired: list[bool] = []
        call = self._reactor.callLater(self.timeout, lambda: (expired.append(True), attempt.cancel()))
        try:
            return await attempt
        except Exception:
            if expired:
                raise TimeoutError() from None
            raise
        finally:
            if call.active():
                call.cancel()

    async def _exchange(self, body: bytes, headers: dict[str, list[str]]) -> tuple[int, bytes, bytes]:
        response = await self._client.post(self.url, data=body, headers=headers)
        chunks: list[bytes] = []
        size = 0

        def bounded(data: bytes) -> None:
            nonlocal size
            size += len(data)
            if size > self.size_limit:
                raise _TooLarge()
            chunks.append(data)

        # Raising in the collector drops the connection: no more is read.
        await collect(response, bounded)
        content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        return response.code, content_type, b"".join(chunks)

    def _parse(self, request: HookRequest, content_type: bytes, answer: bytes) -> HookResponse:
        media = content_type.split(b";", 1)[0].strip().lower()
        if media != b"application/json":
            raise errors.HookInvalidResponse(
                f"the {request.type} hook endpoint answered without Content-Type: application/json")
        return HookResponse.from_json(answer)

    def close(self) -> Deferred:
        """Close pooled connections (for a clean shutdown or test)."""
        return self._pool.closeCachedConnections()

