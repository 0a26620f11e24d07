"""
The expiration cleaner: a timer service that removes unfinished uploads
whose C{Upload-Expires} has passed, through the store's terminater.

Expiry lives in each upload's info (C{Expires} in a file store's C{.info}),
so it survives restarts, and slides: the handler pushes it back at the end
of every PATCH (with a store that provides
L{txtus.interfaces.IExpiryRenewer}).  The cleaner takes each upload's lock
before removing it, so it never pulls an upload out from under a request;
taking the lock asks an in-flight PATCH of an expired upload to stop, which
it does once its client is silent (an upload whose bytes still flow is in
use, and is left alone).  No failure,
not even of the listing itself, ends the sweeps: each is logged and the
next sweep tries again.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.internet.defer import Deferred, ensureDeferred
from txtus.logs import Logger

from txtus import errors
from txtus.config import TusConfig

log = Logger()


class ExpirationCleaner(TimerService):
    """
    Sweeps the store every C{config.cleanup_interval} seconds.  Needs a
    composer with a lister and a terminater.
    """

    def __init__(self, config: TusConfig) -> None:
        if not config.expires_uploads:
            raise ValueError("the cleaner needs expire_after, an upload lister and a terminater")
        self.config = config
        self._sweeping: Deferred | None = None
        super().__init__(config.cleanup_interval, self.sweep)
        self.clock = config.clock

    def sweep(self) -> Deferred:
        """
        Remove every expired unfinished upload once.

        @return: a Deferred firing with the list of removed upload IDs.
        """
        if self._sweeping is not None:
            return self._sweeping  # a slow sweep is still running
        self._sweeping = ensureDeferred(self._sweep())

        def done(result: Any) -> Any:
            self._sweeping = None
            return result

        return self._sweeping.addBoth(done)

    async def _sweep(self) -> list[str]:
        composer = self.config.composer
        removed: list[str] = []
        try:
            upload_ids = await composer.lister.list_upload_ids()
        except Exception:
            # A failed sweep must not fail the timer: TimerService stops
            # looping after a failure, which would end cleaning for good.
            log.failure("expiration: could not list uploads; trying again next sweep")
            return removed
        for upload_id in upload_ids:
            try:
                if await self._remove_if_expired(upload_id):
                    removed.append(upload_id)
            except errors.UploadNotFound:
                pass
            except errors.TusError as e:
                # E.g. a damaged .info, which the store logged: skip it.
                log.warn("expiration: skipped upload {upload_id}: {code}", upload_id=upload_id, code=e.code)
            except Exception:
                log.failure("expiration: could not check upload {upload_id}", upload_id=upload_id)
        return removed

    async def _remove_if_expired(self, upload_id: str) -> bool:
        composer = self.config.composer
        if not await self._expired(upload_id):
            return False
        lock = None
        if composer.locker is not None:
            # A PATCH whose client went silent lets go within about
            # lock_release_after; one whose bytes still flow is in use, so
            # not expired: its expiry is pushed back when it ends.  Waiting
            # longer would only hold up the sweep.
            waiting = composer.locker.lock(upload_id, lambda: None)
            waiting.addTimeout(self.config.lock_release_after + 1.0, self.config.reactor)
            try:
                lock = await waiting
            except defer.TimeoutError:
                log.info("expiration: upload {upload_id} is in use; not removed", upload_id=upload_id)
                return False
        try:
            if not await self._expired(upload_id):
                return False
            upload = await composer.core.get_upload(upload_id)
            await composer.terminater.terminate(upload)
        finally:
            if lock is not None:
                await lock.unlock()
        log.info("upload {upload_id} expired and was removed", upload_id=upload_id)
        return True

    async def _expired(self, upload_id: str) -> bool:
        upload = await self.config.composer.core.get_upload(upload_id)
        info = await upload.get_info()
        return info.expires is not None and not info.is_complete and self.clock.seconds() >= info.expires
