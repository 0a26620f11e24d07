"""
In-process hooks, for embedders: L{call_hook} turns whatever an
L{IHookHandler} returns (a plain value, a Deferred, a coroutine) into a
Deferred of a L{HookResponse}, and L{HookFunctions} makes a handler out of
one callable per event.

txaio is not used for this: under Twisted its C{as_future} is
C{maybeDeferred}, which cannot run a coroutine written for asyncio.  What
does is C{Deferred.fromFuture(asyncio.ensure_future(coroutine))} when the
reactor is the asyncio one, and C{Deferred.fromCoroutine} otherwise.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from txtus.hooks.events import ALL_EVENTS, HookRequest, HookResponse
from txtus.interfaces import IHookHandler


def call_hook(handler: IHookHandler, request: HookRequest, reactor: Any) -> Deferred:
    """
    Call C{handler.invoke_hook(request)}.

    @return: a Deferred firing with a L{HookResponse}, or failing with what
        the handler raised (L{txtus.errors.HookInvalidResponse} for an
        answer that is not a response).
    """
    # Not maybeDeferred: most hooks answer at once, and this runs several
    # times per request.
    try:
        result = handler.invoke_hook(request)
        if isinstance(result, Deferred):
            return result.addCallback(_as_response)
        if inspect.iscoroutine(result):
            if _is_asyncio(reactor):
                return Deferred.fromFuture(asyncio.ensure_future(result)).addCallback(_as_response)
            return Deferred.fromCoroutine(result).addCallback(_as_response)
        return succeed(_as_response(result))
    except BaseException:
        return fail()


def _is_asyncio(reactor: Any) -> bool:
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor
    return isinstance(reactor, AsyncioSelectorReactor)


_NO_CHANGE = HookResponse()


def _as_response(result: Any) -> HookResponse:
    if result is None:
        return _NO_CHANGE  # never modified: the dispatcher only reads answers
    if isinstance(result, HookResponse):
        return result
    return HookResponse.from_dict(result)


@implementer(IHookHandler)
class HookFunctions:
    """
    A hook handler from plain callables, one per event, keyed by the event
    name with C{_} for C{-}::

        HookFunctions(pre_create=check_quota, post_finish=enqueue)

    Each is called with the L{HookRequest} and may return what
    L{IHookHandler.invoke_hook} may.  Events without a callable get the
    empty answer.
    """

    def __init__(self, **functions: Callable[[HookRequest], Any]) -> None:
        known = {name.replace("-", "_") for name in ALL_EVENTS}
        unknown = set(functions) - known
        if unknown:
            raise TypeError(f"no hook event named {sorted(unknown)[0]!r}")
        self._functions = {name.replace("_", "-"): function for name, function in functions.items()}

    @property
    def events(self) -> frozenset[str]:
        """The events that have a callable (to enable exactly those)."""
        return frozenset(self._functions)

    def invoke_hook(self, request: HookRequest) -> Any:
        function = self._functions.get(request.type)
        return None if function is None else function(request)
