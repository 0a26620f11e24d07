"""
The concatenation and concatenation-unfinished extensions: final uploads
built from partial ones.

A final upload may be created while its partials are still uploading
(concatenation-unfinished).  It is then completed when the last of its
partials finishes (this process remembers which finals wait on which
partial) or, after a restart, the next time the final is looked at (HEAD or
GET).  Until then it has no offset to show.

The copy is made while holding the locks of the final and of every partial,
taken in a fixed order (the final's, then the partials' sorted by ID), so it
can neither race a request on a partial nor deadlock with one: a request
holding a partial's lock never waits for a final's (finals waiting on a
partial are completed after its lock is released).  Partials are first
checked without their locks, so a final looked at while its partials still
upload does not interrupt them.  A final whose partial was removed can never
complete: it answers 410 from then on.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from twisted.internet.defer import ensureDeferred

from txtus.logs import Logger

from txtus import errors
from txtus.info import UploadInfo

log = Logger()


class Concatenation:
    """Creates and completes final uploads for one handler."""

    def __init__(self, composer: Any, locker_scope: Any) -> None:
        self._composer = composer
        self._lock = locker_scope  # callable(upload_id, body) -> async context manager
        self._waiting: dict[str, set[str]] = {}  # partial ID -> final IDs

    async def check_partials(self, partials: list[Any], live_info: Any) -> int | None:
        """
        Check the partials a final upload names.

        @return: the final's length, the sum of the partials' lengths.
        @raise InvalidConcat: one is not a partial upload, or its length is
            not known yet.
        """
        total = 0
        for upload in partials:
            info = await live_info(upload)
            if not info.is_partial:
                raise errors.InvalidConcat(f"upload {info.id} is not a partial upload")
            if info.size is None:
                raise errors.InvalidConcat(f"the length of partial upload {info.id} is not known yet")
            total += info.size
        return total

    async def start(self, final: Any, info: UploadInfo, partials: list[Any], finished: Any) -> None:
        """
        Fill a new final upload now if every partial is complete; else
        remember to do it when they are.
        """
        if await self.complete(final, info, finished) is None:
            for partial in partials:
                self._waiting.setdefault(partial.id, set()).add(final.id)

    async def complete(self, final: Any, info: UploadInfo, finished: Any) -> UploadInfo | None:
        """
        Concatenate C{final} if all its partials are complete (the caller
        holds the final's lock).

        @return: the final's info once complete, or L{None} while a partial
            is still uploading.
        @raise PartialUploadGone: a partial was removed; the final can
            never complete.
        """
        if info.is_complete:
            return info
        if not await self._partials_complete(info):
            return None
        async with AsyncExitStack() as held:
            for partial_id in sorted(set(info.partial_uploads)):
                await held.enter_async_context(self._lock(partial_id, None))
            # Again, under the locks: what is copied is exactly what is
            # committed, and stays so until the copy is done.
            partials = await self._partials_complete(info)
            if not partials:
                return None
            await self._composer.concater.concat_uploads(final, partials)
        self._forget(info.id)
        await finished(final, info.id)
        return await final.get_info()

    async def _partials_complete(self, info: UploadInfo) -> list[Any] | None:
        """The final's partials, in order, if all are complete, else L{None}."""
        core = self._composer.core
        partials = []
        for partial_id in info.partial_uploads:
            try:
                partial = await core.get_upload(partial_id)
                partial_info = await partial.get_info()
            except errors.UploadNotFound:
                self._forget(info.id)
                raise errors.PartialUploadGone() from None
            if not partial_info.is_complete:
                return None
            partials.append(partial)
        return partials

    def _forget(self, final_id: str) -> None:
        """Remove C{final_id} from every waiting list."""
        for partial_id in list(self._waiting):
            finals = self._waiting[partial_id]
            finals.discard(final_id)
            if not finals:
                del self._waiting[partial_id]

    def partial_finished(self, partial_id: str, finished: Any) -> None:
        """
        Complete the finals that were waiting for C{partial_id}, once the
        caller has released the partial's lock (see the module docstring):
        this runs on its own, its errors logged.
        """
        for final_id in sorted(self._waiting.get(partial_id, ())):
            ensureDeferred(self._complete_waiting(final_id, finished)).addErrback(
                lambda failure, final_id=final_id: log.failure(
                    "could not complete final upload {upload_id}", failure, upload_id=final_id))

    async def _complete_waiting(self, final_id: str, finished: Any) -> None:
        try:
            async with self._lock(final_id, None):
                final = await self._composer.core.get_upload(final_id)
                await self.complete(final, await final.get_info(), finished)
        except errors.UploadNotFound:
            self._forget(final_id)
        except errors.PartialUploadGone:
            log.info("final upload {upload_id} can never complete: a partial upload was removed",
                     upload_id=final_id)

    def partial_removed(self, partial_id: str) -> None:
        """A terminated partial: its waiting finals are told when next looked at."""
        self._waiting.pop(partial_id, None)
