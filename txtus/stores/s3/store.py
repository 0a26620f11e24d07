"""
L{S3Store}: uploads streamed into S3, in tusd's s3store layout, so that an
operator can point either server at a bucket the other wrote.

For an upload C{<id>} (C{<objectid>+<multipartid>}, as tusd makes them),
under the configured prefix:

  - C{<objectid>.info}: the L{UploadInfo} as JSON, tusd's field names;
  - a multipart upload on C{<objectid>} holding the bytes, in parts of at
    least S3's 5 MiB minimum;
  - C{<objectid>.part}: the tail shorter than 5 MiB between two PATCHes;
  - C{<objectid>}: the final object once the multipart upload completed
    (C{filetype} metadata becomes its Content-Type).

A pre-create hook may name the final object (C{ChangeFileInfo.Storage.Key},
L{IUploadPlacer}): a key under the prefix, which the multipart upload and
the final object then use.  The C{.info}, C{.part} and staged objects stay
at C{<objectid>...}, found from the ID alone; the C{.info} records the key
(C{Storage.Key}, tusd's field), and every later request and process reads
it from there.  Another upload may be placed at the same key, so the
C{.info} also records the ETag of the object the upload made
(C{Storage.ETag}), and terminating it deletes the object at its key only
if that is still the one.

The offset is never written down: it is the sum of the multipart upload's
parts (numbered 1, 2, ... without a gap) plus the C{.part} object, read
from S3 on every request, so any process can answer for any upload after
any crash.  A C{.part} records how many parts existed when it was written
(C{x-amz-meta-txtus-parts}); once a later part has taken its bytes it is
stale and ignored, so a crash between uploading that part and deleting the
C{.part} never counts its bytes twice.  A C{.part} may also mark parts S3
lists but holds with other bytes than were sent (C{_VOID_MARKER}): the
offset stops before them, and every later C{.part} repeats the mark until
they are overwritten.

Bodies stream into parts as they arrive (L{S3ChunkWriter}): a part's PUT
starts as soon as it is full, up to C{concurrency} PUTs run at once while
the next part fills, and the body is paused while a full part waits for a
free PUT.  Memory per active upload is at most (C{concurrency} + 1) x
C{part_size}; nothing is spooled to local disk unless a C{spool_dir} is
given, where the parts then wait in nameless files instead
(L{txtus.stores.s3.parts}).  In pipe mode a part the
request's announced length covers is PUT while its bytes arrive, so memory
stays near a socket buffer (see L{S3ChunkWriter} for what that costs).
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, fail, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from txtus.logs import Logger
from twisted.web.client import ResponseDone
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from txtus import errors
from txtus.info import UploadInfo
from txtus.interfaces import (
    IChunkStager,
    IConcater,
    IDataStore,
    IExpiryRenewer,
    ILengthAwareChunkWriter,
    ILengthDeferrer,
    IReader,
    IStagedChunkWriter,
    ITerminater,
    IUpload,
    IUploadIdValidator,
    IUploadLister,
    IUploadPlacer,
)
from txtus.stores.s3.client import Part, S3Client, S3Error, S3Unavailable
from txtus.stores.s3.parts import MemoryPart, SpooledPart

log = Logger()

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 8 * 1024 * 1024
DEFAULT_CONCURRENCY = 2
PART_MODES = ("buffer", "pipe")
DEFAULT_PART_MODE = "buffer"
_PARTS_MARKER = "x-amz-meta-txtus-parts"
# On a .part: "V" or "V-W", the parts S3 may hold with other bytes than
# were sent (from V, a piped part whose ETag is not their MD5, to W, the
# last part that PATCH may have stored).  The offset stops before part V
# while the marker stands; every later write of the .part repeats it
# (narrowed past the parts it overwrote), until all of V..W is rewritten.
_VOID_MARKER = "x-amz-meta-txtus-void-part"
_OBJECT_ID = r"[A-Za-z0-9_-]{1,128}"
_UPLOAD_ID = re.compile(_OBJECT_ID + r"\+[A-Za-z0-9._~=-]{1,1024}")
# What a placed key must not look like: the store's own objects.
_OWN_NAMES = re.compile(r"\.(info|part)$|\.staged\.")
_MAX_KEY = 1024  # bytes, S3's limit


def check_key(key: Any, prefix: str) -> str:
    """
    A placement key (relative to C{prefix}): non-empty, within S3's
    length, no control characters, no empty, C{.} or C{..} segments (some
    S3 servers map keys to paths), nothing like the store's own objects.

    @raise txtus.errors.InvalidStorage: why not.
    """
    if not isinstance(key, str) or not key:
        raise errors.InvalidStorage("Storage.Key must be a non-empty key")
    if len((prefix + key).encode("utf-8", "surrogatepass")) > _MAX_KEY:
        raise errors.InvalidStorage(f"Storage.Key with the prefix is longer than {_MAX_KEY} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7f or 0xd800 <= ord(c) < 0xe000 for c in key):
        raise errors.InvalidStorage("Storage.Key must not contain control characters")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise errors.InvalidStorage("Storage.Key must be relative to the prefix: no leading '/', no empty, '.' or '..' segments")
    if _OWN_NAMES.search(key):
        raise errors.InvalidStorage("Storage.Key must not end in .info or .part, nor contain .staged.")
    return key


Void = tuple[int, int]


def _parse_void(value: str | None) -> Void | None:
    """A C{.part}'s void marker: C{"V"} (what older versions wrote) or C{"V-W"}."""
    if not value:
        return None
    first, _, last = value.partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start, end = int(first), int(last or first)
    return (start, end) if 1 <= start <= end else None


def _void_header(void: Void | None) -> dict[str, str]:
    if void is None:
        return {}
    return {_VOID_MARKER: str(void[0]) if void[0] == void[1] else f"{void[0]}-{void[1]}"}


def _void_left(void: Void | None, rewritten: int) -> Void | None:
    """What stays void once parts 1..C{rewritten} hold the bytes sent (rewritten since the marker was written)."""
    if void is None or rewritten >= void[1]:
        return None
    return (max(void[0], rewritten + 1), void[1])


def _etag_value(etag: str | None) -> str:
    return (etag or "").strip().strip('"')


def _storage_error(error: Exception) -> errors.TusError:
    """An S3 failure as the client sees it: 500, S3's code in the message."""
    if isinstance(error, errors.TusError):
        return error
    if isinstance(error, S3Error):
        return errors.InternalServerError(f"storage error: S3 {error.operation} answered {error.code}")
    if isinstance(error, S3Unavailable):
        return errors.InternalServerError("storage error: S3 is unreachable")
    return errors.InternalServerError("storage error")


def _deferred(coroutine: Any) -> Deferred:
    """A coroutine as a Deferred whose failures are L{TusError}s."""
    def translate(failure: Any) -> Any:
        if failure.check(errors.TusError):
            return failure
        if failure.check(S3Error, S3Unavailable):
            raise _storage_error(failure.value)
        return failure
    return ensureDeferred(coroutine).addErrback(translate)


class _State:
    """What S3 holds for an unfinished upload."""

    def __init__(self, parts: list[Part], tail: int, finished_size: int | None, part_object: bool = False,
                 void: Void | None = None) -> None:
        self.parts = parts
        self.tail = tail
        self.finished_size = finished_size
        # A .part object exists that a new part makes stale: delete it then.
        self.part_object = part_object
        # The parts S3 may hold with other bytes than were sent (_VOID_MARKER).
        self.void = void

    @property
    def offset(self) -> int:
        if self.finished_size is not None:
            return self.finished_size
        return sum(p.size for p in self.parts) + self.tail


@implementer(IDataStore, IUploadIdValidator, IUploadPlacer, IChunkStager, ITerminater, IConcater, ILengthDeferrer, IReader,
             IUploadLister, IExpiryRenewer)
class S3Store:
    """
    @param client: the L{S3Client} for the bucket.
    @param prefix: prepended to every object key (tusd's C{-s3-object-prefix}).
    @param part_size: bytes per part (at least 5 MiB); larger for uploads
        that would otherwise need more than 10 000 parts.
    @param concurrency: part PUTs in flight at once per upload.
    @param part_mode: C{"buffer"} (each part filled in memory, then PUT,
        retried from memory) or C{"pipe"} (a part the request's announced
        length will fill is PUT while its bytes arrive); see
        L{S3ChunkWriter}.
    @param spool_dir: where buffered parts wait, in nameless files
        (L{SpooledPart}), instead of memory; L{None}: in memory.
    """

    def __init__(self, client: S3Client, prefix: str = "", part_size: int = DEFAULT_PART_SIZE,
                 concurrency: int = DEFAULT_CONCURRENCY, part_mode: str = DEFAULT_PART_MODE,
                 spool_dir: str | None = None) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError("part size must be at least 5 MiB (S3's minimum)")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if part_mode not in PART_MODES:
            raise ValueError(f"part mode must be one of {', '.join(PART_MODES)}")
        self.part_mode = part_mode
        self.spool_dir = spool_dir
        self.client = client
        self.prefix = prefix
        self.part_size = part_size
        self.concurrency = concurrency
        # Learnt on the first refusal: some S3 servers (rclone) do not do
        # UploadPartCopy, and concatenation then copies through.
        self.server_side_copy = True

    def use_in(self, composer: Any) -> None:
        composer.use_core(self)
        composer.use_terminater(self)
        composer.use_concater(self)
        composer.use_length_deferrer(self)
        composer.use_reader(self)
        composer.use_lister(self)
        composer.use_expiry_renewer(self)
        composer.use_stager(self)

    def is_valid_upload_id(self, upload_id: str) -> bool:
        """tusd's S3 IDs: C{<objectid>+<multipartid>}, nothing that leaves the prefix."""
        return _UPLOAD_ID.fullmatch(upload_id) is not None

    # Keys ----------------------------------------------------------------

    def key(self, upload_id: str) -> str:
        return self.prefix + upload_id.split("+", 1)[0]

    def info_key(self, upload_id: str) -> str:
        return self.key(upload_id) + ".info"

    def part_key(self, upload_id: str) -> str:
        return self.key(upload_id) + ".part"

    def staged_key(self, upload_id: str, after_parts: int) -> str:
        return f"{self.key(upload_id)}.staged.{after_parts}"

    def object_key(self, info: UploadInfo) -> str:
        """
        The key of C{info}'s multipart upload and final object: the one its
        C{.info} records if a hook placed it, else C{<prefix><objectid>}.

        @raise txtus.errors.UploadInfoCorrupt: a recorded key outside the
            prefix or against the placement rules (a damaged C{.info}).
        """
        default = self.key(info.id)
        recorded = info.storage.get("Key") if info.storage else None
        if not recorded or recorded == default:
            return default
        try:
            if not recorded.startswith(self.prefix):
                raise errors.InvalidStorage("outside the prefix")
            check_key(recorded[len(self.prefix):], self.prefix)
        except errors.InvalidStorage as e:
            log.error("upload {upload_id}: its info object places it at {key!r}, which cannot be used: {reason}",
                      upload_id=info.id, key=str(recorded)[:300], reason=e.message)
            raise errors.UploadInfoCorrupt() from None
        return recorded

    def check_placement(self, storage: dict[str, str]) -> dict[str, str]:
        unknown = set(storage) - {"Key", "Type", "Bucket"}
        if unknown:
            raise errors.InvalidStorage(f"the S3 store places uploads by Storage.Key only, not {sorted(unknown)!r}")
        if storage.get("Type", "s3store") != "s3store":
            raise errors.InvalidStorage(f"Storage.Type {storage['Type'][:40]!r} is not this store's (s3store)")
        if storage.get("Bucket", self.client.bucket) != self.client.bucket:
            raise errors.InvalidStorage("Storage.Bucket must be the configured bucket (or left out)")
        if not storage.get("Key"):
            return {}
        return {"Key": self.prefix + check_key(storage["Key"], self.prefix)}

    def part_size_for(self, size: int | None) -> int:
        """The part size for an upload: larger parts when 10 000 would not hold it."""
        if size is None or size <= self.part_size * MAX_PARTS:
            return self.part_size
        mib = 1024 * 1024
        return math.ceil(size / MAX_PARTS / mib) * mib

    @staticmethod
    def multipart_id(upload_id: str) -> str:
        return upload_id.split("+", 1)[1]

    # Reading S3's state --------------------------------------------------

    async def read_info(self, upload_id: str) -> UploadInfo:
        try:
            raw = await self.client.get_object(self.info_key(upload_id))
        except S3Error as e:
            if e.not_found:
                raise errors.UploadNotFound() from None
            raise
        try:
            info = UploadInfo.from_json(raw)
        except (ValueError, TypeError, AttributeError):
            raise errors.InternalServerError(f"corrupt info object for upload {upload_id}") from None
        info.id = upload_id
        return info

    async def write_info(self, info: UploadInfo) -> None:
        await self.client.put_object(self.info_key(info.id), info.to_json(), {"Content-Type": "application/json"})

    async def state(self, upload_id: str, size: int | None, key: str | None = None) -> _State:
        """
        The parts without a gap from part 1, the valid C{.part}, or the final
        object's size once the multipart upload is completed.  A staged
        chunk whose commit was cut short is appended first.

        @param key: the upload's object key (L{object_key}), if placed.
        """
        return await self.roll_forward(upload_id, size, key)

    async def roll_forward(self, upload_id: str, size: int | None, key: str | None = None) -> _State:
        """
        Append a committed staged chunk (C{<objectid>.staged.<k>}) to the
        upload, from wherever an earlier attempt stopped: the parts after
        the first C{k} that exist already hold its first bytes.  Each step
        is a whole part or the C{.part}, so a crash at any point leaves
        this to be finished by the next reader.
        """
        key = key or self.key(upload_id)
        state = await self._state(upload_id, key)
        if state.finished_size is not None:
            return state  # complete: nothing is appended any more (no listing)
        staged = await self.client.list_objects(self.key(upload_id) + ".staged.")
        for item in staged:
            after = item.key.rsplit(".", 1)[1]
            if not after.isdigit() or int(after) > len(state.parts) or state.finished_size is not None:
                continue
            client, multipart = self.client, self.multipart_id(upload_id)
            after_parts = int(after)
            base = sum(p.size for p in state.parts[:after_parts])
            position = sum(p.size for p in state.parts[after_parts:])
            part_size = self.part_size_for(size)
            complete = size is not None and base + item.size >= size
            number = len(state.parts) + 1
            while position < item.size:
                end = min(item.size, position + part_size)
                if end - position < part_size and not complete and end - position < MIN_PART_SIZE:
                    break
                data = await client.get_object(item.key, position, end)
                await client.upload_part(key, multipart, number, [data])
                number += 1
                position = end
            void = _void_left(state.void, number - 1)
            if position < item.size:
                data = await client.get_object(item.key, position, item.size)
                await client.put_object(self.part_key(upload_id), data,
                                        {_PARTS_MARKER: str(number - 1), **_void_header(void)})
            elif number - 1 > after_parts and void is not None:
                await client.put_object(self.part_key(upload_id), b"",
                                        {_PARTS_MARKER: str(number - 1), **_void_header(void)})
            elif number - 1 > after_parts:
                await client.delete_object(self.part_key(upload_id))
            await client.delete_object(item.key)
            state = await self._state(upload_id, key)
        return state

    async def _state(self, upload_id: str, key: str) -> _State:
        try:
            listed = await self.client.list_parts(key, self.multipart_id(upload_id))
        except S3Error as e:
            if not e.not_found:
                raise
            final = await self.client.head_object(key)
            if final is None:
                raise errors.UploadNotFound() from None
            return _State([], 0, int((final.getRawHeaders("content-length") or ["0"])[0]))
        parts: list[Part] = []
        for part in listed:
            if part.number != len(parts) + 1:
                break
            parts.append(part)
        tail = await self.client.head_object(self.part_key(upload_id))
        size = 0
        void = None
        if tail is not None:
            marker = (tail.getRawHeaders(_PARTS_MARKER) or [None])[0]
            void = _parse_void((tail.getRawHeaders(_VOID_MARKER) or [None])[0])
            if void is not None and void[0] <= len(parts):
                # S3 lists a part with other bytes than were sent: the
                # upload stops before it until it is overwritten.
                parts = parts[:void[0] - 1]
            # Without a marker (tusd wrote it) the .part counts, as in tusd.
            if marker is None or marker == str(len(parts)):
                size = int((tail.getRawHeaders("content-length") or ["0"])[0])
        return _State(parts, size, None, tail is not None, void)

    # IDataStore ----------------------------------------------------------

    def new_upload(self, info: UploadInfo) -> Deferred:
        return _deferred(self._new_upload(info))

    async def _new_upload(self, info: UploadInfo) -> "S3Upload":
        info = info.copy(offset=0)
        object_id = info.id.split("+", 1)[0] if info.id else secrets.token_hex(16)
        if not re.fullmatch(_OBJECT_ID, object_id):
            raise errors.InternalServerError("invalid upload ID")
        key = self.prefix + object_id
        placed = info.storage.get("Key") if info.storage else None
        if placed:
            # What check_placement returned: the full key, under the prefix.
            if not placed.startswith(self.prefix):
                raise errors.InvalidStorage("Storage.Key must be under the store's prefix")
            relative = check_key(placed[len(self.prefix):], self.prefix)
            key = self.prefix + relative
            if key != self.prefix + object_id and re.fullmatch(_OBJECT_ID, relative):
                # Another upload's own key (upload URLs show them): its
                # bytes would be overwritten, and deleted with this one.
                log.info("placement {key!r} refused: it is shaped like an upload's own object key",
                         key=key[:300])
                raise errors.StorageTaken()
            # A finished object is never overwritten.  (Two uploads placed
            # at one key at once are not seen: the last to finish wins, so
            # hooks should make keys unique, as tusd's docs advise.)
            if await self.client.head_object(key) is not None:
                raise errors.StorageTaken()
        multipart = await self.client.create_multipart_upload(key, _content_type(info))
        info.id = f"{object_id}+{multipart}"
        info.storage = {"Type": "s3store", "Bucket": self.client.bucket, "Key": key}
        await self.write_info(info)
        return S3Upload(self, info, key)

    def get_upload(self, upload_id: str) -> Deferred:
        if not self.is_valid_upload_id(upload_id):
            return fail(errors.UploadNotFound())
        return _deferred(self._get_upload(upload_id))

    async def _get_upload(self, upload_id: str) -> "S3Upload":
        info = await self.read_info(upload_id)
        return S3Upload(self, info, self.object_key(info))

    # Extensions ----------------------------------------------------------

    def open_staged_chunk(self, upload: "S3Upload", offset: int) -> Deferred:
        return _deferred(upload._open_chunk(offset, staged=True))

    def terminate(self, upload: "S3Upload") -> Deferred:
        return _deferred(self._terminate(upload))

    async def _terminate(self, upload: "S3Upload") -> None:
        await self.client.abort_multipart_upload(upload.key, self.multipart_id(upload.id))
        staged = [o.key for o in await self.client.list_objects(self.key(upload.id) + ".staged.")]
        own = [upload.key] if await self._owns_object(upload) else []
        await self.client.delete_objects([*own, self.part_key(upload.id), *staged, self.info_key(upload.id)])

    async def _owns_object(self, upload: "S3Upload") -> bool:
        """
        Whether the object at the upload's key is the one it made: always
        at its own key; at a placed key only if its ETag is the one the
        C{.info} recorded at completion (another upload placed at the same
        key may have made it, and a placed upload that never finished made
        none).
        """
        if upload.key == self.key(upload.id):
            return True
        recorded = _etag_value(upload.info.storage.get("ETag"))
        final = await self.client.head_object(upload.key)
        if final is None:
            return False
        if recorded and _etag_value((final.getRawHeaders("etag") or [""])[0]) == recorded:
            return True
        log.info("upload {upload_id}: the object at {key!r} is not the one it made (another upload placed there,"
                 " or it never finished); it stays", upload_id=upload.id, key=upload.key[:300])
        return False

    async def record_final(self, upload: "S3Upload") -> None:
        """
        A placed upload made its object: its C{.info} records the ETag
        (L{_owns_object}).  The one HEAD answers, not CompleteMultipartUpload's,
        which some servers (rclone) answer differently; another upload
        completing at the key between the two is not seen.
        """
        if upload.key == self.key(upload.id):
            return
        final = await self.client.head_object(upload.key)
        etag = (final.getRawHeaders("etag") or [""])[0] if final is not None else ""
        info = await self.read_info(upload.id)
        info.storage = {**info.storage, "ETag": _etag_value(etag)}
        await self.write_info(info)
        upload.info.storage = dict(info.storage)

    def declare_length(self, upload: "S3Upload", length: int) -> Deferred:
        return _deferred(self._declare_length(upload, length))

    async def _declare_length(self, upload: "S3Upload", length: int) -> None:
        info = await self.read_info(upload.id)
        info.size = length
        await self.write_info(info)
        upload.info.size = length

    def renew_expiry(self, upload: "S3Upload", expires: float) -> Deferred:
        return _deferred(self._renew_expiry(upload, expires))

    async def _renew_expiry(self, upload: "S3Upload", expires: float) -> None:
        info = await self.read_info(upload.id)
        info.expires = expires
        await self.write_info(info)
        upload.info.expires = expires

    def list_upload_ids(self) -> Deferred:
        return _deferred(self._list_upload_ids())

    async def _list_upload_ids(self) -> list[str]:
        found = []
        for item in await self.client.list_objects(self.prefix):
            name = item.key[len(self.prefix):]
            if not name.endswith(".info") or "/" in name:
                continue
            try:
                raw = await self.client.get_object(item.key)
                upload_id = str(UploadInfo.from_json(raw).id)
            except (S3Error, ValueError, TypeError, AttributeError):
                continue
            if self.is_valid_upload_id(upload_id) and upload_id.split("+", 1)[0] == name[:-5]:
                found.append(upload_id)
        return sorted(found)

    def send_content(self, upload: "S3Upload", consumer: IConsumer, start: int, length: int) -> Deferred:
        return _deferred(self._send_content(upload, consumer, start, length))

    async def _send_content(self, upload: "S3Upload", consumer: IConsumer, start: int, length: int) -> None:
        state = await self.state(upload.id, upload.info.size, upload.key)
        if state.finished_size is None:
            if length == 0:
                return
            # As tusd's s3store: the bytes are spread over parts until the
            # multipart upload is completed.
            raise errors.IncompleteUpload()
        if length == 0:
            return
        response = await self.client.open_object(upload.key, start, start + length)
        relay = _Relay(consumer)
        response.deliverBody(relay)
        await relay.done

    def concat_uploads(self, final: "S3Upload", partials: list["S3Upload"]) -> Deferred:
        return _deferred(self._concat(final, partials))

    async def _concat(self, final: "S3Upload", partials: list["S3Upload"]) -> None:
        for partial in partials:
            # Complete partials have objects only once finished; finishing
            # is idempotent, so a partial whose finish was cut short is
            # finished now.
            await partial.finish()
        sizes = [(await p.get_info()).offset for p in partials]
        if self.server_side_copy and all(s >= MIN_PART_SIZE for s in sizes[:-1]) and sizes and sizes[-1] > 0:
            if await self._concat_server_side(final, partials, sizes):
                return
        # Copy-through: each partial's object streamed into the final's parts.
        writer = S3ChunkWriter(self, final.id, [], b"", final.info.size, final.key)
        for partial, size in zip(partials, sizes):
            if size:
                response = await self.client.open_object(partial.key, 0, size)
                relay = _Relay(writer)
                response.deliverBody(relay)
                await relay.done
        await writer.commit()

    async def _concat_server_side(self, final: "S3Upload", partials: list["S3Upload"], sizes: list[int]) -> bool:
        """
        UploadPartCopy into a fresh multipart upload on the final's key,
        completed into the final object; the final's own multipart upload is
        then aborted.  A fresh one, because a server that does not really
        copy (rclone answers with an empty part) leaves a part that cannot
        be replaced.  @return: False if the server cannot copy.
        """
        key = final.key
        fresh = await self.client.create_multipart_upload(key, _content_type(final.info))
        parts: list[Part] = []
        try:
            for partial, size in zip(partials, sizes):
                for start in range(0, size, 5 * 1024 ** 3):
                    end = min(size, start + 5 * 1024 ** 3)
                    etag = await self.client.upload_part_copy(key, fresh, len(parts) + 1, partial.key, start, end)
                    parts.append(Part(len(parts) + 1, end - start, etag))
        except S3Error as e:
            await self.client.abort_multipart_upload(key, fresh)
            if e.code in ("MalformedResponse", "NotImplemented"):
                log.info("S3 server does not do UploadPartCopy ({code}); concatenating by copying through",
                         code=e.code)
                self.server_side_copy = False
                return False
            raise
        await self.client.complete_multipart_upload(key, fresh, parts)
        await self.record_final(final)
        await self.client.abort_multipart_upload(key, self.multipart_id(final.id))
        return True


def _content_type(info: UploadInfo) -> dict[str, str]:
    """tusd's rule: the C{filetype} metadata becomes the object's Content-Type (if it is a sane header)."""
    content_type = info.metadata.get("filetype")
    if content_type and re.fullmatch(r"[\x21-\x7e][\x20-\x7e]{0,254}", content_type):
        return {"Content-Type": content_type}
    return {}


@implementer(IUpload)
class S3Upload:
    """
    @ivar key: the key of its multipart upload and final object
        (L{S3Store.object_key}).
    """

    def __init__(self, store: S3Store, info: UploadInfo, key: str | None = None) -> None:
        self.store = store
        self.info = info
        self.id = info.id
        self.key = key or store.object_key(info)

    def get_info(self) -> Deferred:
        return _deferred(self._get_info())

    async def _get_info(self) -> UploadInfo:
        state = await self.store.state(self.id, self.info.size, self.key)
        # Completed multipart upload = finish() done (IUpload.get_info).
        return self.info.copy(offset=state.offset, finished=state.finished_size is not None)

    def open_chunk(self, offset: int) -> Deferred:
        return _deferred(self._open_chunk(offset))

    async def _open_chunk(self, offset: int, staged: bool = False) -> "S3ChunkWriter":
        store = self.store
        state = await store.state(self.id, self.info.size, self.key)
        if state.offset != offset or state.finished_size is not None:
            raise errors.MismatchedOffset(headers={"Upload-Offset": str(state.offset)})
        tail = await store.client.get_object(store.part_key(self.id)) if state.tail else b""
        if len(tail) != state.tail:
            raise errors.MismatchedOffset(headers={"Upload-Offset": str(state.offset - state.tail)})
        kind = S3StagedChunkWriter if staged else S3ChunkWriter
        writer = kind(store, self.id, state.parts, tail, self.info.size, self.key)
        writer._part_object = state.part_object
        writer._old_void = state.void
        return writer

    def finish(self) -> Deferred:
        return _deferred(self._finish())

    async def _finish(self) -> None:
        """
        Complete the multipart upload, idempotently: an upload already
        completed (by this call before a crash, or by another process) is
        left as it is.
        """
        store, client = self.store, self.store.client
        key, multipart = self.key, store.multipart_id(self.id)
        state = await store.state(self.id, self.info.size, key)
        if state.finished_size is not None:
            return
        parts = list(state.parts)
        if state.tail:
            data = await client.get_object(store.part_key(self.id))
            etag = await client.upload_part(key, multipart, len(parts) + 1, [data])
            parts.append(Part(len(parts) + 1, len(data), etag))
        elif not parts:
            # S3 refuses to complete an upload without parts.
            etag = await client.upload_part(key, multipart, 1, [b""])
            parts.append(Part(1, 0, etag))
        try:
            await client.complete_multipart_upload(key, multipart, parts)
        except S3Error as e:
            if not (e.not_found and await client.head_object(key) is not None):
                raise
        else:
            await store.record_final(self)
        await client.delete_object(store.part_key(self.id))


@implementer(IBodyProducer)
class _Pipe:
    """
    The body of a part PUT fed from the client's socket as the bytes arrive
    (pipe mode).  Until the HTTP client starts it, bytes wait here (the
    writer pauses the client meanwhile, so that is at most a socket read or
    two); after that each write goes straight to the connection, and the
    writer passes the connection's pauses on to the client.
    """

    def __init__(self, length: int, prefix: Iterable[bytes], pressure: Callable[[], None]) -> None:
        self.length = length
        self.left = length
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.paused = False
        self.cancelled = False
        self._pending: list[bytes] = []
        self._consumer: IConsumer | None = None
        self._done: Deferred | None = None
        self._pressure = pressure
        for piece in prefix:
            self.feed(piece)

    @property
    def congested(self) -> bool:
        """The client should wait: the PUT has not started, or its connection is full."""
        return self._consumer is None or self.paused

    def feed(self, data: bytes) -> None:
        self.left -= len(data)
        self.md5.update(data)
        if self._consumer is None:
            self._pending.append(data)
        else:
            self._consumer.write(data)
            self._check_done()

    def startProducing(self, consumer: IConsumer) -> Deferred:
        if self.cancelled:
            return fail(ConnectionLost("the request body ended before the part was complete"))
        self._consumer = consumer
        self._done = done = Deferred()
        pending, self._pending = self._pending, []
        for piece in pending:
            consumer.write(piece)
        self._check_done()
        self._pressure()
        return done

    def _check_done(self) -> None:
        if self.left == 0 and self._done is not None:
            done, self._done = self._done, None
            done.callback(None)

    def pauseProducing(self) -> None:
        self.paused = True
        self._pressure()

    def resumeProducing(self) -> None:
        self.paused = False
        self._pressure()

    def stopProducing(self) -> None:
        # The connection went away; the PUT fails on its own.
        self._done = None
        self._pending = []

    def cancel(self) -> None:
        """The body ended before this part was whole: abort its PUT, so S3 keeps nothing of it."""
        self.cancelled = True
        self._pending = []
        if self._done is not None:
            done, self._done = self._done, None
            done.errback(ConnectionLost("the request body ended before the part was complete"))


_MD5_ETAG = re.compile(r'"?([0-9a-fA-F]{32})"?')


class _VoidPart(S3Error):
    """A piped part's ETag is not the MD5 of the bytes sent: S3 holds other bytes."""

    def __init__(self, number: int) -> None:
        super().__init__(500, "BadDigest", f"the ETag of part {number} is not the MD5 of the bytes sent", "UploadPart")
        self.number = number


@implementer(ILengthAwareChunkWriter)
class S3ChunkWriter:
    """
    Streams a chunk into the upload's parts, in one of two ways (the
    store's C{part_mode}):

      - buffer: bytes accumulate in the part being filled (which starts
        with the old C{.part}'s bytes); a full part is PUT at once, up to
        C{concurrency} at a time, and the producer is paused while a full
        part waits for a free PUT.  Each PUT is retried from memory.
      - pipe: when the announced length (L{expect_length}) says the part
        being filled will be completed by this body, its PUT starts at once
        with the part's length and the bytes go straight into it; the
        producer is paused while that connection cannot take more.  A body
        that ends inside a piped part aborts that PUT: S3 keeps nothing of
        it, and the offset stops at the last whole part.  Piped PUTs are
        sent once (their bytes are not kept), and the ETag S3 answers is
        checked against the MD5 of the bytes sent.  Bytes after the last
        whole part of the body are buffered as in buffer mode.

    C{commit} waits for the PUTs, then stores what is left: as the last
    part if the upload is now complete or the rest is at least 5 MiB, else
    as the new C{.part}.

    A PUT that fails (after the client's retries, for buffered parts) stops
    the body; C{commit} then reports the error, and the upload keeps
    exactly the parts S3 confirmed without a gap.
    """

    def __init__(self, store: S3Store, upload_id: str, parts: list[Part], tail: bytes, size: int | None,
                 key: str | None = None) -> None:
        self._store = store
        self._client = store.client
        self._id = upload_id
        # The upload's object key (a staged writer's own key replaces it).
        self._object_key = self._key = key or store.key(upload_id)
        self._multipart = store.multipart_id(upload_id)
        self._part_size = store.part_size_for(size)
        self._size = size
        self._confirmed: dict[int, Part] = {p.number: p for p in parts}
        self._base = len(parts)
        self._next_number = len(parts) + 1
        self._had_tail = bool(tail)
        self._part_object = bool(tail)
        # A part of this chunk S3 answered with other bytes (the first).
        self._void: int | None = None
        # What the upload's .part marked void when the chunk began.
        self._old_void: Void | None = None
        self._tail_size = len(tail)
        self._tail_piped = False
        self._pieces = self._new_part()
        if tail:
            self._pieces.append(tail)
        self._filled = len(tail)
        self._start = sum(p.size for p in parts) + len(tail)
        self._written = self._start
        self._end: int | None = None
        self._pipe: _Pipe | None = None
        self._waiting: list[tuple[int, MemoryPart | SpooledPart | _Pipe]] = []
        self._running: dict[int, Deferred] = {}
        self._producer: Any = None
        self._paused = False
        self._error: Exception | None = None
        self._closed = False

    # IConsumer -----------------------------------------------------------

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def expect_length(self, length: int) -> None:
        if self._store.part_mode == "pipe":
            self._end = self._written + length

    def _new_part(self) -> MemoryPart | SpooledPart:
        spool = self._store.spool_dir
        return MemoryPart() if spool is None else SpooledPart(spool)

    def write(self, data: bytes) -> None:
        if self._closed or self._error is not None or not data:
            return
        try:
            self._write(data)
        except OSError as e:
            # The spool directory failed (a full disk): stop as a failed PUT does.
            log.error("upload {upload_id}: cannot spool a part to {directory}: {error}", upload_id=self._id,
                      directory=self._store.spool_dir, error=e)
            self._fail(e)

    def _write(self, data: bytes) -> None:
        self._written += len(data)
        view = data
        while view:
            if self._pipe is None and self._end is not None \
                    and self._filled + self._end - (self._written - len(view)) >= self._part_size:
                self._open_pipe()
            pipe = self._pipe
            if pipe is not None:
                piece, view = view[:pipe.left], view[pipe.left:]
                pipe.feed(piece)
                if not pipe.left:
                    self._pipe = None
                continue
            room = self._part_size - self._filled
            piece, view = view[:room], view[room:]
            self._pieces.append(piece)
            self._filled += len(piece)
            if self._filled == self._part_size:
                self._cut()
        self._update_pause()

    def _cut(self) -> None:
        """The part being filled is full: queue it for a PUT."""
        self._waiting.append((self._next_number, self._pieces))
        self._next_number += 1
        self._pieces, self._filled = self._new_part(), 0
        self._launch()

    def _open_pipe(self) -> None:
        """The body will fill the part being filled: start its PUT now, with what it holds so far."""
        number = self._next_number
        self._next_number += 1
        if number == self._base + 1 and self._had_tail:
            self._tail_piped = True
        prefix, self._pieces, self._filled = self._pieces, self._new_part(), 0
        try:
            self._pipe = _Pipe(self._part_size, prefix.chunks(), self._update_pause)
        finally:
            prefix.close()
        self._waiting.append((number, self._pipe))
        self._launch()

    def _cancel_pipe(self) -> None:
        """The body ended inside a piped part: abort its PUT."""
        pipe, self._pipe = self._pipe, None
        if pipe is None:
            return
        self._waiting = [(n, body) for n, body in self._waiting if body is not pipe]
        log.info("upload {upload_id}: the body ended inside a piped S3 part; its {count} bytes were not stored"
                 " (the client resends them from the offset HEAD reports)", upload_id=self._id,
                 count=pipe.length - pipe.left)
        pipe.cancel()

    def _update_pause(self) -> None:
        """Pause the body while a full part waits for a PUT, or the piped part's PUT cannot take more."""
        if self._error is not None or self._producer is None:
            return
        wanted = any(not isinstance(body, _Pipe) for _, body in self._waiting) or (
            self._pipe is not None and self._pipe.congested)
        if wanted and not self._paused:
            self._paused = True
            self._producer.pauseProducing()
        elif not wanted and self._paused:
            self._paused = False
            self._producer.resumeProducing()

    def _launch(self) -> None:
        while self._waiting and len(self._running) < self._store.concurrency and self._error is None:
            number, body = self._waiting.pop(0)
            if isinstance(body, _Pipe):
                d = ensureDeferred(self._put_piped(number, body))
            else:
                d = ensureDeferred(self._put(number, body))
            self._running[number] = d
            d.addCallbacks(self._put_done, self._put_failed, callbackArgs=(number, body), errbackArgs=(number, body))
        self._update_pause()

    async def _multipart_id(self) -> str:
        """The multipart upload the parts go to."""
        return self._multipart

    async def _put(self, number: int, pieces: MemoryPart | SpooledPart) -> str:
        multipart = await self._multipart_id()
        return await self._client.upload_part(self._key, multipart, number, pieces)

    async def _put_piped(self, number: int, pipe: _Pipe) -> str:
        multipart = await self._multipart_id()
        etag, is_md5 = await self._client.upload_part_streamed(self._key, multipart, number, pipe)
        # No Content-MD5 could be sent ahead of the bytes; S3's ETag of a
        # part is their MD5 (unless S3 encrypted it with a KMS key or the
        # client's: then there is nothing to compare).
        match = _MD5_ETAG.fullmatch(etag)
        if is_md5 and match and match.group(1).lower() != pipe.md5.hexdigest():
            raise _VoidPart(number)
        return etag

    def _put_done(self, etag: str, number: int, body: MemoryPart | SpooledPart | _Pipe) -> None:
        del self._running[number]
        self._confirmed[number] = Part(number, body.length, etag)
        if not isinstance(body, _Pipe):
            body.close()
        self._launch()

    def _put_failed(self, failure: Any, number: int, body: MemoryPart | SpooledPart | _Pipe) -> None:
        del self._running[number]
        if isinstance(body, _Pipe) and body.cancelled:
            self._launch()
            return
        if not isinstance(body, _Pipe):
            body.close()
        if failure.check(_VoidPart):
            self._void = number if self._void is None else min(self._void, number)
        if self._error is None:
            log.error("S3 part {number} of upload {upload_id} failed: {error}", number=number,
                      upload_id=self._id, error=failure.value)
            self._fail(failure.value)

    def _fail(self, error: Exception) -> None:
        """Stop the body: keep the parts S3 confirmed, drop the ones waiting."""
        if self._error is not None:
            return
        self._error = error
        for _, body in self._waiting:
            if not isinstance(body, _Pipe):
                body.close()
        self._waiting = []
        if self._producer is not None:
            self._producer.stopProducing()

    # Ending the chunk ----------------------------------------------------

    async def _settle(self) -> None:
        while self._running:
            await DeferredList(list(self._running.values()), consumeErrors=True)

    def _contiguous(self) -> list[Part]:
        parts = []
        while len(parts) + 1 in self._confirmed:
            parts.append(self._confirmed[len(parts) + 1])
        return parts

    async def _close(self) -> int:
        self._cancel_pipe()
        await self._settle()
        client = self._client
        parts = self._contiguous()
        uploaded = len(parts) > self._base
        if self._error is not None:
            void = self._void_after(len(parts))
            if void is not None and (uploaded or self._void is not None):
                await self._mark_void(void, len(parts), uploaded)
            elif uploaded:
                await client.delete_object(self._store.part_key(self._id))
            raise _storage_error(self._error)
        return await self._store_rest(parts, uploaded)

    def _void_after(self, rewritten: int) -> Void | None:
        """
        The parts S3 may hold with other bytes than were sent, once this
        chunk's parts 1..C{rewritten} are S3's: what the C{.part} marked
        void and this chunk did not overwrite, and any part of this chunk
        S3 answered with other bytes, up to the last part it may have
        stored (a part after it, even one S3 confirmed, stays void: with
        concurrent PUTs, more than one may be).
        """
        void = _void_left(self._old_void, rewritten)
        if self._void is not None:
            new = (self._void, max(self._void, self._next_number - 1))
            void = new if void is None else (min(void[0], new[0]), max(void[1], new[1]))
        return void

    async def _mark_void(self, void: Void, count: int, uploaded: bool) -> None:
        """
        S3 holds parts C{void} (C{V}..C{W}) that may carry other bytes than
        were sent (and ListParts lists them): write a C{.part} that says so,
        so the offset stops before part C{V} and a later PATCH overwrites
        them.  The C{.part} follows C{count} parts, and keeps the old one's
        bytes if no part took them.
        """
        client, key = self._client, self._store.part_key(self._id)
        tail = b""
        if not uploaded and self._had_tail:
            tail = await client.get_object(key)
            if len(tail) != self._tail_size:
                raise errors.InternalServerError("storage error: the upload's .part changed during the PATCH")
        try:
            await client.put_object(key, tail, {_PARTS_MARKER: str(count), **_void_header(void)})
        except Exception:
            log.critical("upload {upload_id}: S3 holds parts {void} with other bytes than were sent, and they could"
                         " not be marked void: the offset counts them until they are overwritten",
                         upload_id=self._id, void=_void_header(void)[_VOID_MARKER])
            raise
        if self._void is not None:
            log.error("upload {upload_id}: S3 answered part {number} with an ETag that is not the MD5 of the bytes"
                      " sent; parts {void} are void (not counted) until a later PATCH overwrites them",
                      upload_id=self._id, number=self._void, void=_void_header(void)[_VOID_MARKER])

    async def _store_rest(self, parts: list[Part], uploaded: bool) -> int:
        """
        Store the bytes after the last full part, each step atomic: as the
        last part, or as the new C{.part} (whose marker makes an old one
        stale).  @return: the new offset.
        """
        client, store = self._client, self._store
        rest, size = self._pieces, self._filled
        offset = sum(p.size for p in parts)
        complete = self._size is not None and offset + size >= self._size
        if size and (complete or size >= MIN_PART_SIZE):
            await client.upload_part(self._object_key, store.multipart_id(self._id), len(parts) + 1, rest)
            await self._drop_part_object(len(parts) + 1)
            return offset + size
        if size and (uploaded or self._written > self._start):
            # A void part S3 still lists stays void (_VOID_MARKER).
            await client.put_object(store.part_key(self._id), rest,
                                    {_PARTS_MARKER: str(len(parts)), **_void_header(self._void_after(len(parts)))})
            return offset + size
        if uploaded and self._part_object:
            await self._drop_part_object(len(parts))
        if not uploaded and self._tail_piped:
            # The old .part went into a piped part that was aborted: it stays.
            return offset + self._tail_size
        return offset + size

    async def _drop_part_object(self, count: int) -> None:
        """Parts took the old C{.part}'s bytes: delete it, or empty it if it must still mark parts void."""
        client, key = self._client, self._store.part_key(self._id)
        void = self._void_after(count)
        if void is None:
            await client.delete_object(key)
        else:
            await client.put_object(key, b"", {_PARTS_MARKER: str(count), **_void_header(void)})

    def _release(self, result: Any) -> Any:
        """The chunk is over: the bytes waiting in the part being filled (memory or spool file) go."""
        self._pieces.close()
        return result

    def commit(self) -> Deferred:
        if self._closed:
            return fail(RuntimeError("chunk already committed or rolled back"))
        self._closed = True
        return _deferred(self._close()).addBoth(self._release)

    def abort(self) -> Deferred:
        """Keep what can be kept (a prefix of the chunk); never fail."""
        if self._closed:
            return succeed(None)
        self._closed = True
        d = _deferred(self._close()).addBoth(self._release)
        d.addErrback(lambda f: log.failure("abandoning chunk of upload {upload_id}", f, upload_id=self._id))
        return d.addCallback(lambda _: None)



@implementer(IStagedChunkWriter)
class S3StagedChunkWriter(S3ChunkWriter):
    """
    A checksummed chunk, kept apart until its digest matched.  Its bytes
    (after the old C{.part}'s) fill parts of a multipart upload of their
    own on C{<objectid>.staged.<k>}, C{k} being the number of the upload's
    parts they follow; nothing of it counts in the upload's offset.

    C{commit} completes that staging upload into an object (the intent,
    recorded atomically by S3) and then appends it to the upload
    (L{S3Store.roll_forward}); a crash in between is finished by whoever
    next reads the upload's state.  A chunk that never filled a part is
    appended straight from memory, in one atomic step.  C{rollback} and
    C{abort} abort the staging upload.
    """

    def __init__(self, store: S3Store, upload_id: str, parts: list[Part], tail: bytes, size: int | None,
                 key: str | None = None) -> None:
        super().__init__(store, upload_id, [], tail, size, key)
        self._main_parts = parts
        self._start = sum(p.size for p in parts) + len(tail)
        self._written = self._start
        self._key = store.staged_key(upload_id, len(parts))
        self._creating: Deferred | None = None

    async def _multipart_id(self) -> str:
        if self._creating is None:
            self._creating = ensureDeferred(self._client.create_multipart_upload(self._key))
        self._multipart = await _shared(self._creating)
        return self._multipart

    async def _close(self) -> int:
        self._cancel_pipe()
        await self._settle()
        if self._error is not None:
            await self._discard()
            raise _storage_error(self._error)
        if self._creating is None:
            return await self._store_rest(self._main_parts, False)
        parts = self._contiguous()
        if self._filled:
            etag = await self._put(len(parts) + 1, self._pieces)
            parts.append(Part(len(parts) + 1, self._filled, etag))
        await self._client.complete_multipart_upload(self._key, self._multipart, parts)
        return (await self._store.roll_forward(self._id, self._size, self._object_key)).offset

    async def _discard(self) -> None:
        self._cancel_pipe()
        await self._settle()
        if self._creating is not None:
            multipart = await _shared(self._creating)
            await self._client.abort_multipart_upload(self._key, multipart)

    def rollback(self) -> Deferred:
        if self._closed:
            return fail(RuntimeError("chunk already committed or rolled back"))
        self._closed = True
        return _deferred(self._discard()).addBoth(self._release).addCallback(lambda _: self._start)

    def abort(self) -> Deferred:
        if self._closed:
            return succeed(None)
        self._closed = True
        d = _deferred(self._discard()).addBoth(self._release)
        d.addErrback(lambda f: log.failure("discarding staged chunk of upload {upload_id}", f, upload_id=self._id))
        return d.addCallback(lambda _: None)


def _shared(d: Deferred) -> Deferred:
    """A Deferred of its own on C{d}'s result, which C{d} keeps."""
    mine: Deferred = Deferred()

    def both(result: Any) -> Any:
        mine.callback(result) if not isinstance(result, Failure) else mine.errback(result)
        return result

    d.addBoth(both)
    return mine


@implementer(IPushProducer)
class _Relay(Protocol):
    """
    A GetObject body handed to a consumer as it arrives, as a push producer:
    a slow consumer pauses the S3 connection.
    """

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self.done: Deferred = Deferred()

    def connectionMade(self) -> None:
        self._consumer.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        self._consumer.write(data)

    def connectionLost(self, reason: Any) -> None:
        self._consumer.unregisterProducer()
        if reason.check(ResponseDone):
            self.done.callback(None)
        else:
            self.done.errback(ConnectionLost("S3 download ended early"))

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.stopProducing()
