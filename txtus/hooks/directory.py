"""
File hooks (C{--hooks-dir}), as tusd's: for each event, the executable
named after it in the directory is run with the event's JSON on stdin and
C{TUS_ID}, C{TUS_SIZE}, C{TUS_OFFSET} in its environment; what it prints
on stdout (nothing, or tusd's JSON response) is its answer, and a non-zero
exit status is a failure.  An event without an executable is ignored.

Processes run through C{reactor.spawnProcess}, so a slow hook never blocks
the reactor; cancelling the call (the hook timeout) kills the process.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from txtus.logs import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txtus import errors
from txtus.hooks.events import HookRequest, HookResponse
from txtus.interfaces import IHookHandler

log = Logger()

# A hook's answer is a small JSON document; more than this is a broken hook.
OUTPUT_LIMIT = 1 << 20


@implementer(IHookHandler)
class DirectoryHooks:
    def __init__(self, directory: str, reactor: Any) -> None:
        self.directory = os.path.abspath(directory)
        self._reactor = reactor

    def invoke_hook(self, request: HookRequest) -> Deferred | None:
        path = os.path.join(self.directory, request.type)
        if not os.path.exists(path):
            return None
        info = request.upload
        env = dict(os.environ, TUS_ID=info.id, TUS_SIZE=str(info.size or 0), TUS_OFFSET=str(info.offset))
        protocol = _HookProcess(request, request.to_json())
        done = Deferred(protocol.cancel)
        protocol.done = done
        try:
            protocol.process = self._reactor.spawnProcess(protocol, path, [path], env=env, path=self.directory)
        except OSError as e:
            raise errors.HookFailed(f"the {request.type} hook could not be run: {e.strerror or e}")
        return done


class _HookProcess(ProcessProtocol):
    def __init__(self, request: HookRequest, stdin: bytes) -> None:
        self._request = request
        self._stdin = stdin
        self._stdout: list[bytes] = []
        self._size = 0
        self._problem: errors.TusError | None = None
        self.done: Deferred | None = None
        self.process: Any = None

    def connectionMade(self) -> None:
        self.transport.write(self._stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > OUTPUT_LIMIT:
            if self._problem is None:
                self._problem = errors.HookInvalidResponse(
                    f"the {self._request.type} hook printed more than {OUTPUT_LIMIT} bytes")
                self._kill()
            return
        self._stdout.append(data)

    def errReceived(self, data: bytes) -> None:
        # tusd passes the hook's stderr through; here it goes to the log.
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                log.info("{event} hook for upload {upload_id}: {line}", event=self._request.type,
                         upload_id=self._request.upload.id or "-", line=line[:1000])

    def processEnded(self, reason: Failure) -> None:
        done, self.done = self.done, None
        if done is None:
            return  # cancelled
        if self._problem is not None:
            done.errback(self._problem)
        elif reason.check(ProcessDone):
            try:
                output = b"".join(self._stdout)
                done.callback(HookResponse.from_json(output) if output.strip() else HookResponse())
            except errors.TusError as e:
                done.errback(e)
        else:
            status = reason.value.exitCode if reason.check(ProcessTerminated) else None
            how = f"exited with status {status}" if status is not None else f"died ({reason.value})"
            done.errback(errors.HookFailed(f"the {self._request.type} hook {how}"))

    def cancel(self, deferred: Deferred) -> None:
        # The Deferred fails with CancelledError; the process must not outlive it.
        self.done = None
        self._kill()

    def _kill(self) -> None:
        try:
            if self.process is not None:
                self.process.signalProcess("KILL")
        except ProcessExitedAlready:
            pass
