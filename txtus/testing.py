"""
Helpers for testing code that embeds txtus: a real tus server on a loopback
port, in the running reactor, backed by a file store in a directory you
choose.  txtus's own tests use the same helpers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint

from txtus.composer import StoreComposer
from txtus.config import TusConfig
from txtus.stores.file import FileStore
from txtus.lockers.memory import MemoryLocker
from txtus.service import make_site


@dataclass
class RunningServer:
    """A listening tus server: C{url} is the creation URL."""

    url: str
    config: TusConfig
    store: Any
    port: Any
    site: Any
    host: str = "127.0.0.1"
    port_number: int = 0
    extra: dict = field(default_factory=dict)

    def stop(self) -> Deferred:
        """Stop listening; safe to call more than once."""
        return maybeDeferred(self.port.stopListening)


@inlineCallbacks
def start_server(path: str, reactor: Any = None, store: Any = None, locker: Any = "memory",
                 **config: Any) -> Any:
    """
    Listen on an ephemeral loopback port.  C{config} are L{TusConfig}
    fields; by default a L{FileStore} in C{path} and a L{MemoryLocker}.

    @return: a Deferred firing with a L{RunningServer}; call its C{stop}.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor
        reactor = global_reactor
    composer = StoreComposer()
    store = store if store is not None else FileStore(path)
    store.use_in(composer)
    if locker == "memory":
        locker = MemoryLocker(reactor=reactor)
    if locker is not None:
        locker.use_in(composer)
    tus_config = TusConfig(composer=composer, reactor=reactor, **config)
    site = make_site(tus_config)
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    number = port.getHost().port
    base = tus_config.base_path if not tus_config.absolute_base else "/files/"
    return (RunningServer(url=f"http://127.0.0.1:{number}{base}", config=tus_config, store=store,
                              port=port, site=site, port_number=number))
