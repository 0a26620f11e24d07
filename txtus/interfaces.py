"""
Every zope interface txtus defines, written as contracts.

Storage is split the way tusd v2 splits it: a core data store hands out
upload objects, and optional extensions (termination, concatenation,
deferred length, downloads, locking) are separate objects that a
L{txtus.composer.StoreComposer} detects with C{providedBy}.  The server only
ever talks to storage through these interfaces, so a new store (S3, a
database) plugs in without touching the HTTP code.

Twisted pushes bytes, so instead of tusd's C{WriteChunk(io.Reader)} an
upload hands back an L{IChunkWriter}: an C{IConsumer} the server writes the
request body into.  The writer may pause the body (backpressure), commit
what it received, or roll the whole chunk back (checksum mismatch).
"""

from __future__ import annotations

from twisted.internet.interfaces import IConsumer
from zope.interface import Attribute, Interface


class IChunkWriter(IConsumer):
    """
    Receives the bytes of one chunk (the body of one PATCH or of a
    creation-with-upload POST) for an upload, starting at the offset the
    writer was opened at.

    The server registers a streaming producer (the request body) before the
    first C{write}.  A writer that buffers must call the producer's
    C{pauseProducing} once its buffer is above its high-water mark and
    C{resumeProducing} once it drains, so a slow disk or a slow remote store
    slows the client down instead of growing memory.
    """

    def write(data: bytes) -> None:
        """
        Accept the next bytes of the chunk.

        Must not block beyond a bounded local-disk write, and must not
        raise: a writer that can no longer store data remembers the error,
        calls C{stopProducing} on the registered producer, and reports the
        error from L{commit}.
        """

    def commit():
        """
        Make every byte accepted so far part of the upload.

        @return: a Deferred that fires with the upload's new offset.  It
            fails with a L{txtus.errors.TusError} (for example
            C{StorageFull}) when storing failed part-way; even then the
            upload's offset afterwards is the number of bytes really
            stored, never more.
        """

    def rollback():
        """
        Discard every byte accepted by this writer, as if the chunk had
        never been sent.  Used when a checksum does not match.

        @return: a Deferred that fires with the offset the writer was opened
            at.
        """


class IUpload(Interface):
    """
    One upload, as handed out by an L{IDataStore}.  Cheap to create: the
    server gets a fresh one per request.
    """

    id = Attribute("The upload's ID, a L{str}.")

    def get_info():
        """
        @return: a Deferred firing with the upload's current
            L{txtus.info.UploadInfo}; its C{offset} is the number of bytes
            durably stored.  Fails with C{UploadNotFound} if the upload was
            removed meanwhile.
        """

    def open_chunk(offset: int):
        """
        Start writing a chunk at C{offset}, which the server has checked
        equals the current offset (the caller holds the upload's lock).

        @return: a Deferred firing with an L{IChunkWriter}.
        """

    def finish():
        """
        Called once, when the offset reaches the upload's length.  Stores
        that assemble data (multipart uploads) complete it here.

        @return: a Deferred firing with L{None}.
        """


class IDataStore(Interface):
    """
    The core of every store: create uploads and look them up.
    """

    def new_upload(info):
        """
        Create an upload described by C{info} (a L{txtus.info.UploadInfo}
        whose C{id} may be empty, in which case the store generates one).

        @return: a Deferred firing with the new L{IUpload}.
        """

    def get_upload(upload_id: str):
        """
        @return: a Deferred firing with the L{IUpload} for C{upload_id}, or
            failing with C{UploadNotFound}.  C{upload_id} has already been
            checked to be well formed by the server.
        """


class ITerminater(Interface):
    """
    The termination extension: remove an upload and free its storage.
    """

    def terminate(upload: IUpload):
        """
        Remove C{upload}, finished or not.

        @return: a Deferred firing with L{None}.
        """


class IConcater(Interface):
    """
    The concatenation extension: build a final upload from partial ones.
    """

    def concat_uploads(final: IUpload, partials: list[IUpload]):
        """
        Fill C{final} (already created with the summed length) with the
        bytes of C{partials}, in order.  Every partial is complete.

        @return: a Deferred firing with L{None} once C{final}'s offset
            equals its length.
        """


class ILengthDeferrer(Interface):
    """
    The creation-defer-length extension: an upload's length may be set
    after creation, once.
    """

    def declare_length(upload: IUpload, length: int):
        """
        Record C{length} as C{upload}'s final length.

        @return: a Deferred firing with L{None}.
        """


class IReader(Interface):
    """
    Downloads: stream an upload's stored bytes to an HTTP response.
    """

    def send_content(upload: IUpload, consumer: IConsumer, start: int, length: int):
        """
        Write bytes C{start} to C{start + length} of C{upload} into
        C{consumer}, through a producer registered on it, so a slow client
        pauses the reads.  Never reads the whole upload into memory.

        @return: a Deferred firing with L{None} once the producer has been
            unregistered.  Cancelling it stops the transfer.
        """


class ILock(Interface):
    """
    A held lock on one upload.
    """

    def unlock():
        """
        Release the lock.  Safe to call more than once.

        @return: a Deferred firing with L{None}.
        """


class ILocker(Interface):
    """
    Serialises the requests that touch one upload, with tusd v2's
    lock-release requests: whoever waits for a held lock asks its holder to
    let go, so a stalled PATCH cannot keep an upload locked until TCP
    notices the client is gone.
    """

    def lock(upload_id: str, release_requested):
        """
        Acquire the lock for C{upload_id}.

        @param release_requested: a no-argument callable.  The locker calls
            it, at most once, while this lock is held and another request
            wants it; the holder should then stop its work promptly, keep
            what it stored, and unlock.

        @return: a Deferred firing with an L{ILock} once held, or failing
            with C{LockTimeout} if it could not be had in time.  Cancelling
            the Deferred gives up waiting.
        """


class IUploadLister(Interface):
    """
    Lets housekeeping (the expiration cleaner) walk every stored upload.
    """

    def list_upload_ids():
        """
        @return: a Deferred firing with a list of every upload ID in the
            store.
        """


class IStreamingBodyResource(Interface):
    """
    A resource that wants request bodies as they arrive rather than after
    twisted.web has buffered them whole.  L{txtus.web.streaming.TusRequest}
    looks for it when a request's headers are complete.
    """

    def begin_body(request):
        """
        Called with a request whose headers (but not body) have arrived and
        whose C{method}, C{uri}, C{path}, C{prepath} and C{postpath} are set.

        @return: an object with C{chunk(data)}, C{ended(trailers)} and
            C{lost(reason)} methods that receives the body, or L{None} to
            let twisted.web buffer the body as usual.
        """
