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
what it received, or be aborted.  A store that can also hold a chunk apart
until it is verified provides L{IChunkStager}; only then does the server
offer checksums, whose chunks it commits or rolls back whole.
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

    The server ends every writer it opened with L{commit},
    L{IStagedChunkWriter.rollback} or L{abort}.  Calling C{commit} or
    C{rollback} a second time fails.  When one of them fails, the server
    still calls L{abort}, which then releases whatever the failure left
    held (but never undoes what a commit already made durable, such as a
    staged commit's recorded intent); after a successful one, and after an
    earlier C{abort}, C{abort} does nothing.

    A plain writer (from L{IUpload.open_chunk}) makes bytes part of the
    upload as it stores them: tus keeps every byte of a cut request, and the
    offset reported by L{IUpload.get_info} is the number of bytes really
    stored at any moment, including after a crash (never more, never a
    byte the store cannot return).
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
        Make every byte accepted so far part of the upload, durably as far
        as the store's own durability policy promises.

        @return: a Deferred that fires with the upload's new offset.  It
            fails with a L{txtus.errors.TusError} (for example
            C{StorageFull}) when storing failed part-way; even then the
            upload's offset afterwards is the number of bytes really
            stored, never more.
        """

    def abort():
        """
        Give up the chunk without a verdict: an unexpected error happened
        between opening the writer and committing or rolling it back, or
        the server is going away.  Release everything the writer holds
        (descriptors, buffers, parts uploaded to a remote store, staging
        files).

        What the upload keeps: nothing of a staged chunk
        (L{IStagedChunkWriter}); for a plain chunk, a prefix (possibly
        empty, possibly whole) of the accepted bytes, and its offset counts
        exactly that prefix.

        @return: a Deferred firing with L{None}.  It never fails, and
            C{abort} never raises: the server calls it while handling
            another error, and a store that cannot clean up logs that
            itself (leftovers are swept later, see L{IStagedChunkWriter}).
        """


class ILengthAwareChunkWriter(IChunkWriter):
    """
    A writer that can use the number of bytes the request announced
    (its C{Content-Length}) before they arrive: for example to stream them
    straight into storage that only takes a piece whole and needs its
    length up front (an S3 part PUT), instead of buffering the piece.

    The price of that, and the one way such a writer may depart from
    L{IChunkWriter}: when the body ends before the announced length (the
    client went away), L{IChunkWriter.commit} keeps a prefix of the accepted
    bytes, possibly not all of them, and its offset counts exactly that
    prefix.  The client resends the rest from the offset HEAD reports.
    """

    def expect_length(length: int) -> None:
        """
        Called at most once, before the first C{write}, when the request
        announced its body's length.  The body never brings more bytes than
        that; it may bring fewer.
        """


class IStagedChunkWriter(IChunkWriter):
    """
    A chunk kept apart from its upload until it is accepted: used for
    chunks that carry a checksum, which must not become part of the upload
    before their digest matched.

    Until L{commit} has fired, no byte written to a staged writer is
    visible by any path: not in the offset of L{IUpload.get_info}, not in
    L{IReader.send_content}, not in what L{IConcater.concat_uploads} copies,
    and not after a crash (C{kill -9}, power loss) and restart.  Staging
    storage a crash leaves behind (files, parts) is never counted as upload
    data, and the store removes it eventually on its own (at start-up or
    during housekeeping such as L{IUploadLister.list_upload_ids}).

    L{commit} is atomic with respect to crashes: after a crash at any
    moment during it, the upload holds either none of the chunk or all of
    it, never a part.  A store that needs several steps to append (copy a
    staged file, complete a part) records its intent first and finishes an
    interrupted commit before it next answers L{IUpload.get_info} or opens
    a chunk for that upload.  L{abort} behaves like L{rollback} but never
    fails.
    """

    def rollback():
        """
        Discard every byte accepted by this writer, as if the chunk had
        never been sent.  Used when a checksum does not match, or when the
        body ended before it was complete (a chunk that cannot be verified
        is discarded whole).

        @return: a Deferred that fires with the offset the writer was
            opened at.
        """


class IChunkStager(Interface):
    """
    The capability to hold a chunk apart until it is verified.  The
    checksum and checksum-trailer extensions are advertised only when the
    composer has one; without it, requests carrying a checksum are refused
    (400, unsupported checksum algorithm) before any byte is stored.
    """

    def open_staged_chunk(upload: "IUpload", offset: int):
        """
        Like L{IUpload.open_chunk}, but the bytes stay apart from the
        upload until the writer commits.

        @return: a Deferred firing with an L{IStagedChunkWriter}, or failing
            like L{IUpload.open_chunk}.
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
            durably stored (never counting a staged chunk that has not been
            committed), and its C{finished} says whether L{finish}
            succeeded.  Fails with C{UploadNotFound} if the upload was
            removed meanwhile.
        """

    def open_chunk(offset: int):
        """
        Start writing a plain chunk at C{offset}, which the server has
        checked equals the current offset (the caller holds the upload's
        lock).

        @return: a Deferred firing with an L{IChunkWriter}, or failing with
            C{MismatchedOffset} if the stored offset is not C{offset}
            (something wrote behind the lock's back) or C{UploadNotFound}.
        """

    def finish():
        """
        Finish a complete upload: stores that assemble data complete it
        here (an S3 store's C{CompleteMultipartUpload}), others make it
        durable.

        The server calls it when the offset reaches the upload's length,
        and again, lazily (on the next HEAD, PATCH or GET), for as long as
        L{get_info} reports the upload complete but not C{finished}: after
        C{finish} failed, or the process died before or during it.  It must
        therefore be idempotent: called on an upload that is already
        finished, or whose earlier C{finish} was cut short at any point, it
        completes what is left and succeeds without harm (an S3 store
        checks whether the multipart upload was already completed).

        @return: a Deferred firing with L{None} once the upload is finished
            and that fact is recorded durably: from then on L{get_info}
            reports C{finished} true, also after a restart.  On failure
            nothing is recorded, so the next request tries again.
        """


class IDataStore(Interface):
    """
    The core of every store: create uploads and look them up.
    """

    def new_upload(info):
        """
        Create an upload described by C{info} (a L{txtus.info.UploadInfo}
        whose C{id} may be empty, in which case the store generates one).
        Its C{storage} is empty, unless the store provides
        L{IUploadPlacer}: then it may hold what C{check_placement}
        returned, and the upload must be placed there.

        @return: a Deferred firing with the new L{IUpload}.
        """

    def get_upload(upload_id: str):
        """
        @return: a Deferred firing with the L{IUpload} for C{upload_id}, or
            failing with C{UploadNotFound}.  C{upload_id} has already been
            checked to be well formed by the server (with the store's own
            rule if it provides L{IUploadIdValidator}).
        """


class IUploadIdValidator(Interface):
    """
    Optional, on the core store: the store's own rule for which strings
    may name an upload (tusd's S3 store makes IDs with a C{+} in them).
    Without it the server uses
    L{txtus.protocol.headers.is_valid_upload_id}.
    """

    def is_valid_upload_id(upload_id: str) -> bool:
        """
        Whether C{upload_id}, taken from a request URL, may name an upload
        of this store.  Called before the ID reaches any other store
        method, so it must refuse anything that could step outside the
        store's namespace (path separators, dots, NULs).  Must be fast and
        must not raise.
        """


class IUploadPlacer(Interface):
    """
    Optional, on the core store: the capability to put a new upload where
    a pre-create hook asks (tusd's C{ChangeFileInfo.Storage}: the file
    store's C{Path}, the S3 store's C{Key}).  Without it, a hook asking
    for a placement makes the creation fail (C{500 ERR_INVALID_STORAGE}),
    never a silently ignored request.

    The store records the placement in the upload's C{.info}
    (C{UploadInfo.storage}) and finds the upload's bytes through it from
    then on, in this process or another, after a restart.
    """

    def check_placement(storage: dict[str, str]) -> dict[str, str]:
        """
        Check a placement a hook asked for, before anything is created.
        Synchronous and side-effect free: a location already taken is
        found by C{new_upload}, which fails with C{StorageTaken}.

        @return: the placement in the store's own form, which the server
            puts in C{info.storage} for C{new_upload}; an empty dict if
            C{storage} asks for nothing this store places.
        @raise txtus.errors.InvalidStorage: a key the store does not know,
            or a location outside the store's namespace (an absolute
            path, C{..}, a name the store uses for itself).
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
        bytes of C{partials}, in order.  Every partial is complete, and the
        server holds the locks of C{final} and of every partial, so only
        committed bytes are copied.  May be called again for the same final
        after a failure or crash part-way: it must then start over, never
        append after an earlier attempt's prefix.

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


class IExpiryRenewer(Interface):
    """
    Sliding expiry: lets the server push an unfinished upload's expiry
    (C{UploadInfo.expires}) back while the upload is in use.  Without it,
    an upload expires a fixed time after its creation.
    """

    def renew_expiry(upload: IUpload, expires: float):
        """
        Record C{expires} (POSIX seconds) as C{upload}'s expiry, durably
        enough to survive a restart.

        @return: a Deferred firing with L{None}; failing with
            C{UploadNotFound} if the upload is gone.
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


class ILeasedLock(ILock):
    """
    A lock that can stop being held before it is unlocked: a lease that
    ran out (another process may hold the upload now), or a locker shutting
    down.  Unlike a release request, which the holder honours when its work
    allows (see L{ILocker.lock}), this must stop the holder's writes at
    once.
    """

    def when_lost(callback):
        """
        Call C{callback} (no arguments) at most once, if this lock is lost
        or must be given up before it is unlocked.  A lock with no callback
        falls back to its holder's C{release_requested}.
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
            wants it; the holder should then let go as soon as its work
            allows (the server: a PATCH once its client has been silent for
            C{lock_release_after}), keep what it stored, and unlock.  A lock
            the locker may lose while held provides L{ILeasedLock}.

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

        @return: an object with C{chunk(data)}, C{chunk_announced(size)}
            (a chunked body's next chunk-size line, before its bytes),
            C{ended(trailers)} and C{lost(reason)} methods that receives
            the body, or L{None} to
            let twisted.web buffer the body as usual.
        """


class IHookHandler(Interface):
    """
    Receives hook events (L{txtus.hooks.events}): the upload lifecycle of
    tusd v2 (C{pre-create}, C{post-create}, C{post-receive}, C{pre-finish},
    C{post-finish}, C{pre-terminate}, C{post-terminate}) and C{pre-request},
    sent before every request but OPTIONS.  Only the events enabled in the
    configuration are sent.

    The server waits for the answer to the C{pre-*} events (within the
    configured hook timeout, after which it cancels the Deferred and
    answers 500 C{ERR_HOOK_TIMEOUT}), and for none of the C{post-*} events,
    whose answers and failures are only logged (but a C{post-receive}
    answer may stop the upload).  Several calls may be under way at once.
    """

    def invoke_hook(request):
        """
        Handle one event.

        @param request: a L{txtus.hooks.events.HookRequest}.  Treat it as
            read-only: the events of one HTTP request share its
            C{http_request}.

        @return: a L{txtus.hooks.events.HookResponse}, a dict in tusd's
            JSON response shape, or L{None} (change nothing); or a Deferred
            or a coroutine producing one of those.  Under the asyncio
            reactor a coroutine runs as an asyncio task, so it may await
            asyncio libraries.  Failing (raising) answers the client 500
            C{ERR_HOOK_FAILED} for a blocking event, and leaves the upload's
            stored data as it was.
        """


class IHookPlugin(Interface):
    """
    A hook handler that C{twist tus --hooks-plugin NAME} finds with
    C{twisted.plugin.getPlugins}: a module-level object in a
    C{twisted/plugins/} module on C{sys.path}, providing this interface and
    C{twisted.plugin.IPlugin}.
    """

    name = Attribute("The L{str} given to C{--hooks-plugin}.")

    def hook_handler(reactor):
        """
        @return: the L{IHookHandler} to use with C{reactor}.
        """


class IMetrics(Interface):
    """
    Where the server reports what it does, for monitoring.  Every method is
    called on the reactor thread, on the hot path: it must be cheap and
    must not raise.  L{txtus.metrics.PrometheusMetrics} is the Prometheus
    implementation; L{txtus.metrics.NullMetrics} drops everything.
    """

    def request_done(method: bytes, status: int, seconds: float) -> None:
        """
        A tus request's response was decided: C{method} (after
        C{X-HTTP-Method-Override}), the HTTP C{status}, and the C{seconds}
        from the end of its headers until then.
        """

    def error(code: str) -> None:
        """An error response with this stable tus error C{code} was decided."""

    def hook_called(event: str) -> None:
        """A hook for C{event} (e.g. C{"pre-create"}) was called."""

    def hook_failed(event: str) -> None:
        """
        A hook for C{event} failed: it raised, timed out or answered
        something unusable (not: it rejected the request as designed).
        """

    def watch_connections(count) -> None:
        """
        C{count()} tells how many HTTP connections are open; called by the
        site at start-up, read whenever the metrics are collected.
        """

    def upload_created() -> None:
        """An upload was created."""

    def upload_finished() -> None:
        """An upload received its last byte and was finished by its store."""

    def upload_terminated() -> None:
        """An upload was terminated by a client (C{DELETE})."""

    def chunk_began() -> None:
        """A request body began streaming into a chunk writer."""

    def chunk_ended(stored: int) -> None:
        """
        A chunk writer that L{chunk_began} was committed, rolled back or
        aborted, having added C{stored} bytes to its upload.
        """

    def store_operation(operation: str, seconds: float) -> None:
        """
        A store or locker C{operation} (C{"commit"}, C{"get_info"}, ...)
        took C{seconds}.
        """

    def instrument(composer):
        """
        @return: a L{txtus.composer.StoreComposer} to use instead of
            C{composer}: the same stores, possibly wrapped to time their
            operations (L{store_operation}).  The wrappers provide the same
            interfaces as what they wrap.
        """
