"""
A hook receiver for C{twist tus --hooks-http} (and for tusd's C{-hooks-http}:
it speaks tusd v2's JSON), written with twisted.web.

- pre-request: every request must carry C{Authorization: Bearer <token>}
  (txtus only; tusd never sends this event).
- pre-create: an upload needs a C{filename} in its metadata; only that
  key is stored, and uploads are limited to C{--max-size} bytes.
- post-receive / post-finish / post-terminate: logged.

Run it, then point txtus at it::

    python docs/examples/hook_receiver.py --port tcp:8000:interface=127.0.0.1 --token s3cret
    twist tus --hooks-http http://127.0.0.1:8000/hooks \\
        --hooks-enabled-events pre-request,pre-create,post-receive,post-finish,post-terminate
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import endpoints, task
from twisted.internet.defer import Deferred
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.python import usage
from twisted.web.resource import Resource
from twisted.web.server import Site

log = Logger()


class Options(usage.Options):
    optParameters = [
        ["port", None, "tcp:8000:interface=127.0.0.1", "Endpoint to listen on."],
        ["token", None, "s3cret", "The bearer token clients must send."],
        ["max-size", None, "104857600", "Largest upload allowed, in bytes."],
    ]


def reject(status: int, message: str, **fields: bool) -> dict:
    return {"HTTPResponse": {"StatusCode": status, "Body": json.dumps({"error": message}),
                             "Header": {"Content-Type": "application/json"}}, **fields}


class Hooks(Resource):
    isLeaf = True

    def __init__(self, token: str, max_size: int) -> None:
        super().__init__()
        self.token = token
        self.max_size = max_size

    def render_POST(self, request: Any) -> bytes:
        hook = json.loads(request.content.read())
        upload = hook["Event"]["Upload"]
        http = hook["Event"]["HTTPRequest"]
        answer = getattr(self, hook["Type"].replace("-", "_"), lambda upload, http: {})(upload, http)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(answer).encode()

    def pre_request(self, upload: dict, http: dict) -> dict:
        if http["Header"].get("Authorization") != [f"Bearer {self.token}"]:
            return reject(401, "missing or wrong token", RejectRequest=True)
        return {}

    def pre_create(self, upload: dict, http: dict) -> dict:
        filename = (upload["MetaData"] or {}).get("filename")
        if not filename:
            return reject(400, "an upload needs a filename", RejectUpload=True)
        if not upload["SizeIsDeferred"] and upload["Size"] > self.max_size:
            return reject(413, "too large", RejectUpload=True)
        return {"ChangeFileInfo": {"MetaData": {"filename": filename}, "MaxSize": self.max_size}}

    def post_receive(self, upload: dict, http: dict) -> dict:
        log.info("upload {id}: {offset} of {size} bytes", id=upload["ID"], offset=upload["Offset"],
                 size="?" if upload["SizeIsDeferred"] else upload["Size"])
        return {}

    def post_finish(self, upload: dict, http: dict) -> dict:
        log.info("upload {id} finished: {name} ({size} bytes)", id=upload["ID"],
                 name=upload["MetaData"].get("filename"), size=upload["Size"])
        return {}

    def post_terminate(self, upload: dict, http: dict) -> dict:
        log.info("upload {id} terminated", id=upload["ID"])
        return {}


async def main(reactor: Any, *argv: str) -> None:
    options = Options()
    options.parseOptions(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    site = Site(Hooks(options["token"], int(options["max-size"])))
    port = await endpoints.serverFromString(reactor, options["port"]).listen(site)
    log.info("hook receiver listening on port {port}", port=port.getHost().port)
    await Deferred()  # serve until stopped


if __name__ == "__main__":
    task.react(lambda reactor: Deferred.fromCoroutine(main(reactor, *sys.argv[1:])))
