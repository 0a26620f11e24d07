"""
L{StoreComposer}: assembles a core store and optional extensions, possibly
from different objects (a file store with a memory locker, an S3 store with a
distributed locker).  Each slot is filled only with an object that provides
the slot's interface, and what the composer holds is the single source of
what the server advertises in C{Tus-Extension}.
"""

from __future__ import annotations

from typing import Any

from zope.interface.interface import InterfaceClass

from txtus.interfaces import (
    IChunkStager,
    IConcater,
    IDataStore,
    IExpiryRenewer,
    ILengthDeferrer,
    ILocker,
    IReader,
    ITerminater,
    IUploadIdValidator,
    IUploadLister,
)
from txtus.protocol.headers import is_valid_upload_id


def _require(interface: InterfaceClass, provider: Any) -> Any:
    if not interface.providedBy(provider):
        raise TypeError(f"{provider!r} does not provide {interface.__module__}.{interface.__name__}")
    return provider


class StoreComposer:
    """
    Slots for the core store and each optional extension; all start empty.
    Stores fill the slots they can with C{store.use_in(composer)}.
    """

    def __init__(self) -> None:
        self.core: Any = None
        self.terminater: Any = None
        self.concater: Any = None
        self.length_deferrer: Any = None
        self.reader: Any = None
        self.locker: Any = None
        self.lister: Any = None
        self.stager: Any = None
        self.expiry_renewer: Any = None

    def use_core(self, store: Any) -> None:
        self.core = _require(IDataStore, store)

    def use_terminater(self, terminater: Any) -> None:
        self.terminater = _require(ITerminater, terminater)

    def use_concater(self, concater: Any) -> None:
        self.concater = _require(IConcater, concater)

    def use_length_deferrer(self, deferrer: Any) -> None:
        self.length_deferrer = _require(ILengthDeferrer, deferrer)

    def use_reader(self, reader: Any) -> None:
        self.reader = _require(IReader, reader)

    def use_locker(self, locker: Any) -> None:
        self.locker = _require(ILocker, locker)

    def use_lister(self, lister: Any) -> None:
        self.lister = _require(IUploadLister, lister)

    def use_stager(self, stager: Any) -> None:
        self.stager = _require(IChunkStager, stager)

    def use_expiry_renewer(self, renewer: Any) -> None:
        self.expiry_renewer = _require(IExpiryRenewer, renewer)

    def is_valid_upload_id(self, upload_id: str) -> bool:
        """
        Whether C{upload_id} may name an upload: the core store's own rule
        when it provides L{IUploadIdValidator}, else the default one.
        """
        if IUploadIdValidator.providedBy(self.core):
            return bool(self.core.is_valid_upload_id(upload_id))
        return is_valid_upload_id(upload_id)

    def capabilities(self) -> str:
        """A one-line description for logs: which slots are filled, by what."""
        return ", ".join(f"{slot}={type(getattr(self, slot)).__name__}"
                         for slot in _SLOTS if getattr(self, slot) is not None)

    def parts(self) -> list[Any]:
        """Each distinct object filling a slot, in slot order (a store fills several)."""
        found: list[Any] = []
        for slot in _SLOTS:
            part = getattr(self, slot)
            if part is not None and not any(part is seen for seen in found):
                found.append(part)
        return found


_SLOTS = ("core", "terminater", "concater", "length_deferrer", "reader", "locker", "lister", "stager",
          "expiry_renewer")
