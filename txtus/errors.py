"""
The error catalogue: every failure the server answers with, each a class with
a stable code and an HTTP status, in tusd's wire format
(C{ERR_UPLOAD_NOT_FOUND: upload not found}).

Handlers and stores raise these; one place (L{txtus.web.resource}) turns them
into responses.  Anything that is not a L{TusError} is logged with its
traceback and answered as C{ERR_INTERNAL_SERVER_ERROR}.
"""

from __future__ import annotations

import json


class TusError(Exception):
    """
    A failure with a stable code, an HTTP status and a message safe to show
    the client.

    @ivar headers: extra response headers, as C{{name: value}} (L{str}).
    """

    code: str = "ERR_INTERNAL_SERVER_ERROR"
    status: int = 500
    message: str = "internal server error"
    content_type: bytes = b"text/plain; charset=utf-8"

    def __init__(self, message: str | None = None, headers: dict[str, str] | None = None):
        if message is not None:
            self.message = message
        self.headers = dict(headers or {})
        super().__init__(f"{self.code}: {self.message}")

    def body(self) -> bytes:
        if self.body_override is not None:
            return self.body_override
        return f"{self.code}: {self.message}\n".encode("utf-8", "replace")

    # A hook's HTTPResponse may replace the status and body (tusd's
    # MergeWith); the code stays what it was, for logs and metrics.
    body_override: bytes | None = None

    def override(self, status: int = 0, body: str = "", headers: dict[str, str] | None = None) -> "TusError":
        """
        Apply a hook's C{HTTPResponse}: a non-zero status and a non-empty
        body replace this error's, headers are added.  Returns C{self}.
        """
        if status:
            self.status = status
        if body:
            self.body_override = body.encode("utf-8")
        self.headers.update(headers or {})
        return self


def _error(name: str, code: str, status: int, message: str) -> type[TusError]:
    return type(name, (TusError,), {"code": code, "status": status, "message": message,
                                    "__doc__": f"{status} {code}: {message}"})


UnsupportedVersion = _error("UnsupportedVersion", "ERR_UNSUPPORTED_VERSION", 412, "missing, invalid or unsupported Tus-Resumable header")
MaxSizeExceeded = _error("MaxSizeExceeded", "ERR_MAX_SIZE_EXCEEDED", 413, "maximum size exceeded")
InvalidContentType = _error("InvalidContentType", "ERR_INVALID_CONTENT_TYPE", 415, "missing or invalid Content-Type header")
InvalidUploadLength = _error("InvalidUploadLength", "ERR_INVALID_UPLOAD_LENGTH", 400, "missing or invalid Upload-Length header")
InvalidOffset = _error("InvalidOffset", "ERR_INVALID_OFFSET", 400, "missing or invalid Upload-Offset header")
InvalidMetadata = _error("InvalidMetadata", "ERR_INVALID_METADATA", 400, "invalid Upload-Metadata header")
UploadNotFound = _error("UploadNotFound", "ERR_UPLOAD_NOT_FOUND", 404, "upload not found")
UploadGone = _error("UploadGone", "ERR_UPLOAD_EXPIRED", 410, "upload has expired")
UploadLocked = _error("UploadLocked", "ERR_UPLOAD_LOCKED", 423, "file currently locked")
LockTimeout = _error("LockTimeout", "ERR_LOCK_TIMEOUT", 500, "failed to acquire lock before timeout")
MismatchedOffset = _error("MismatchedOffset", "ERR_MISMATCHED_OFFSET", 409, "mismatched offset")
UploadSizeExceeded = _error("UploadSizeExceeded", "ERR_UPLOAD_SIZE_EXCEEDED", 413, "upload's size exceeded")
NotImplementedByStore = _error("NotImplementedByStore", "ERR_NOT_IMPLEMENTED", 501, "feature not implemented")
MethodNotAllowed = _error("MethodNotAllowed", "ERR_METHOD_NOT_ALLOWED", 405, "method not allowed")
UploadNotFinished = _error("UploadNotFinished", "ERR_UPLOAD_NOT_FINISHED", 400, "one of the partial uploads is not finished")
InvalidConcat = _error("InvalidConcat", "ERR_INVALID_CONCAT", 400, "invalid Upload-Concat header")
RangeNotSatisfiable = _error("RangeNotSatisfiable", "ERR_RANGE_NOT_SATISFIABLE", 416, "requested range not satisfiable")
IncompleteUpload = _error("IncompleteUpload", "ERR_INCOMPLETE_UPLOAD", 400, "cannot stream an incomplete upload")
PartialUploadGone = _error("PartialUploadGone", "ERR_INVALID_CONCAT", 410, "a partial upload of this final upload was removed; it can never be completed")
ConcatUnsupported = _error("ConcatUnsupported", "ERR_CONCATENATION_UNSUPPORTED", 400, "concatenation is not supported")
ModifyFinal = _error("ModifyFinal", "ERR_MODIFY_FINAL", 403, "modifying a final upload is not allowed")
AmbiguousUploadLength = _error("AmbiguousUploadLength", "ERR_AMBIGUOUS_UPLOAD_LENGTH", 400, "either Upload-Length or Upload-Defer-Length must be specified")
InvalidUploadLengthDefer = _error("InvalidUploadLengthDefer", "ERR_INVALID_UPLOAD_LENGTH_DEFER", 400, "invalid Upload-Defer-Length header")
UploadStopped = _error("UploadStopped", "ERR_UPLOAD_STOPPED", 400, "upload has been stopped by server")
UploadRejected = _error("UploadRejected", "ERR_UPLOAD_REJECTED", 400, "upload creation has been rejected by server")
TerminationRejected = _error("TerminationRejected", "ERR_UPLOAD_TERMINATION_REJECTED", 400, "upload termination has been rejected by server")
UploadInterrupted = _error("UploadInterrupted", "ERR_UPLOAD_INTERRUPTED", 400, "upload has been interrupted by another request for this upload resource")
LockerUnavailable = _error("LockerUnavailable", "ERR_LOCKER_UNAVAILABLE", 503, "the upload lock service cannot be reached; retry later")
ServerShutdown = _error("ServerShutdown", "ERR_SERVER_SHUTDOWN", 503, "request has been interrupted because the server is shutting down")
OriginNotAllowed = _error("OriginNotAllowed", "ERR_ORIGIN_NOT_ALLOWED", 403, "request origin is not allowed")
UnexpectedEOF = _error("UnexpectedEOF", "ERR_UNEXPECTED_EOF", 400, "server expected to receive more bytes")
ReadTimeout = _error("ReadTimeout", "ERR_READ_TIMEOUT", 500, "timeout while reading request body")
ConnectionReset = _error("ConnectionReset", "ERR_CONNECTION_RESET", 500, "TCP connection reset by peer")
InternalServerError = _error("InternalServerError", "ERR_INTERNAL_SERVER_ERROR", 500, "internal server error")
RequestBodyTooLarge = _error("RequestBodyTooLarge", "ERR_REQUEST_BODY_TOO_LARGE", 413, "request body too large for this request")
UploadInfoCorrupt = _error("UploadInfoCorrupt", "ERR_UPLOAD_INFO_CORRUPT", 500, "the stored state of this upload is damaged")
StorageFull = _error("StorageFull", "ERR_STORAGE_FULL", 507, "insufficient storage; retry later")
DownloadDisabled = _error("DownloadDisabled", "ERR_DOWNLOAD_DISABLED", 405, "downloads are disabled")
ChecksumMismatch = _error("ChecksumMismatch", "ERR_CHECKSUM_MISMATCH", 460, "checksum mismatch")
UnsupportedChecksumAlgorithm = _error("UnsupportedChecksumAlgorithm", "ERR_UNSUPPORTED_CHECKSUM_ALGORITHM", 400, "unsupported checksum algorithm")
InvalidChecksum = _error("InvalidChecksum", "ERR_INVALID_CHECKSUM", 400, "invalid Upload-Checksum header")
MalformedBody = _error("MalformedBody", "ERR_INVALID_REQUEST", 400, "malformed chunked request body")
InvalidRequest = _error("InvalidRequest", "ERR_INVALID_REQUEST", 400, "invalid request")
RequestRejected = _error("RequestRejected", "ERR_REQUEST_REJECTED", 403, "request has been rejected by server")
HookFailed = _error("HookFailed", "ERR_HOOK_FAILED", 500, "a hook failed")
HookTimeout = _error("HookTimeout", "ERR_HOOK_TIMEOUT", 500, "a hook did not answer in time")
InvalidStorage = _error("InvalidStorage", "ERR_INVALID_STORAGE", 500, "the storage location chosen for this upload cannot be used")
StorageTaken = _error("StorageTaken", "ERR_STORAGE_TAKEN", 409, "the storage location chosen for this upload is already in use")
HookInvalidResponse = _error("HookInvalidResponse", "ERR_HOOK_INVALID_RESPONSE", 500, "a hook gave an invalid response")


class ProblemError(TusError):
    """
    An error of the IETF resumable-upload draft with a registered problem
    type: its body is an RFC 9457 problem document (which also carries our
    stable code), so draft clients can tell the cases apart.
    """

    content_type = b"application/problem+json"
    problem_type = "about:blank"

    def __init__(self, message: str | None = None, headers: dict[str, str] | None = None,
                 members: dict[str, object] | None = None):
        super().__init__(message, headers)
        self.members = dict(members or {})

    def body(self) -> bytes:
        document = {"type": self.problem_type, "title": self.message, "status": self.status,
                    "code": self.code, **self.members}
        return json.dumps(document).encode("utf-8")


def _problem(name: str, code: str, status: int, message: str, problem: str) -> type[ProblemError]:
    return type(name, (ProblemError,), {
        "code": code, "status": status, "message": message,
        "problem_type": "https://iana.org/assignments/http-problem-types#" + problem,
        "__doc__": f"{status} {code}: {message} (problem type {problem})"})


MismatchingUploadOffset = _problem("MismatchingUploadOffset", "ERR_MISMATCHED_OFFSET", 409, "offset from request does not match offset of resource", "mismatching-upload-offset")
InconsistentUploadLength = _problem("InconsistentUploadLength", "ERR_INCONSISTENT_UPLOAD_LENGTH", 400, "inconsistent length values for upload", "inconsistent-upload-length")
CompletedUpload = _problem("CompletedUpload", "ERR_COMPLETED_UPLOAD", 400, "upload is already completed", "completed-upload")
UnsupportedPatchType = _error("UnsupportedPatchType", "ERR_INVALID_CONTENT_TYPE", 415, "appending to an upload needs Content-Type: application/partial-upload")
