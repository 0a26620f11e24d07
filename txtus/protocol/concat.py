"""
The concatenation and concatenation-unfinished extensions: final uploads
built from partial ones.

A final upload may be created while its partials are still uploading
(concatenation-unfinished).  It is then completed when the last of its
partials finishes (this process remembers which finals wait on which
partial) or, after a restart, the next time the final is looked at (HEAD or
GET).  Until then it has no offset to show.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

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
            is still uploading (or was removed).
        """
        if info.is_complete:
            return info
        core = self._composer.core
        partials = []
        for partial_id in info.partial_uploads:
            try:
                partial = await core.get_upload(partial_id)
                partial_info = await partial.get_info()
            except errors.UploadNotFound:
                return None
            if not partial_info.is_complete:
                return None
            partials.append(partial)
        await self._composer.concater.concat_uploads(final, partials)
        await finished(final, info.id)
        for partial_id in info.partial_uploads:
            finals = self._waiting.get(partial_id)
            if finals is not None:
                finals.discard(info.id)
                if not finals:
                    del self._waiting[partial_id]
        return await final.get_info()

    async def partial_finished(self, partial_id: str, finished: Any) -> None:
        """Complete the finals that were waiting for C{partial_id}."""
        for final_id in sorted(self._waiting.get(partial_id, ())):
            try:
                async with self._lock(final_id, None):
                    final = await self._composer.core.get_upload(final_id)
                    await self.complete(final, await final.get_info(), finished)
            except errors.UploadNotFound:
                self._waiting.get(partial_id, set()).discard(final_id)
            except Exception:
                log.failure("could not complete final upload {upload_id}", upload_id=final_id)
