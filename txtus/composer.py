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
    IUploadPlacer,
)
from txtus import errors
from txtus.logs import Logger
from txtus.protocol.headers import is_valid_upload_id

log = Logger()


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

    def check_placement(self, storage: dict[str, str]) -> dict[str, str]:
        """
        A pre-create hook's C{ChangeFileInfo.Storage}, checked by the core
        store if it provides L{IUploadPlacer}: the placement to hand to
        C{new_upload} in C{info.storage} (empty: nothing to place).

        @raise txtus.errors.InvalidStorage: the store places no uploads, or
            refuses this placement (logged here, with what was asked).
        """
        if not storage:
            return {}
        if not IUploadPlacer.providedBy(self.core):
            log.error("a pre-create hook asked for storage {storage!r}, but {store} cannot place uploads",
                      storage=_shown(storage), store=type(self.core).__name__)
            raise errors.InvalidStorage(f"{type(self.core).__name__} cannot place uploads (ChangeFileInfo.Storage)")
        try:
            return dict(self.core.check_placement(storage))
        except errors.InvalidStorage as e:
            log.error("a pre-create hook asked for storage {storage!r}, refused: {reason}",
                      storage=_shown(storage), reason=e.message)
            raise

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


def _shown(storage: dict[str, str]) -> dict[str, str]:
    """A hook's storage request, bounded for a log line."""
    return {str(k)[:64]: str(v)[:256] for k, v in list(storage.items())[:8]}


_SLOTS = ("core", "terminater", "concater", "length_deferrer", "reader", "locker", "lister", "stager",
          "expiry_renewer")
