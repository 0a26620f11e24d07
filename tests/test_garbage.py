"""
Requests leave no reference cycles behind: what a request used is freed by
reference counting when it ends, not by the garbage collector, which on a
busy server cost about a tenth of a small upload's CPU (a cycle per request
kept some thirty objects each for it: the request, its exchange, body,
headers and addresses).
"""

import gc

import pytest_twisted

from tushttp import create, head, patch

from txtus.protocol.handler import _Pump
from txtus.web.body import StreamingBody
from txtus.web.resource import _Exchange
from txtus.web.streaming import TusRequest

PER_REQUEST = (TusRequest, _Exchange, StreamingBody, _Pump)


@pytest_twisted.ensureDeferred
async def test_requests_leave_no_cycles(server):
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(3):
            location = await create(server, 10, body=b"hello")  # creation-with-upload
            assert (await patch(location, 5, b"world")).code == 204
            assert (await head(location)).code == 200
            assert (await patch(location, 3, b"x")).code == 409  # an error answer too
        gc.collect()
        cyclic = [type(o).__name__ for o in gc.garbage if isinstance(o, PER_REQUEST)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert cyclic == []
