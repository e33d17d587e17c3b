"""Domain errors, one class per outcome a user can act on.

Every layer raises these; the adapters (REST, WebDAV, CLI) translate them once, so the
same mistake gives the same answer on every protocol. ``status`` is the HTTP status the
REST adapter uses; ``extra`` ends up as RFC 9457 extension members.
"""

from __future__ import annotations

from typing import Any


class AllsetError(Exception):
    """Base: something the caller can be told about in plain words."""

    status = 400
    title = "Bad request"
    slug = "bad-request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(AllsetError):
    status = 400
    title = "Invalid input"
    slug = "invalid-input"


class InvalidName(InvalidInput):
    title = "Invalid file or folder name"
    slug = "invalid-name"


class Unauthenticated(AllsetError):
    status = 401
    title = "Authentication required"
    slug = "unauthenticated"


class Forbidden(AllsetError):
    """Only for the caller's *own* objects; another Client's objects are NotFound (R-STORE-3)."""

    status = 403
    title = "Forbidden"
    slug = "forbidden"


class NotFound(AllsetError):
    status = 404
    title = "Not found"
    slug = "not-found"


class MethodNotAllowed(AllsetError):
    status = 405
    title = "Method not allowed"
    slug = "method-not-allowed"


class Conflict(AllsetError):
    status = 409
    title = "Conflict"
    slug = "conflict"


class AlreadyExists(Conflict):
    title = "Already exists"
    slug = "already-exists"


class Locked(Conflict):
    """Another request holds the object right now (a tus PATCH streaming into the same
    upload, in this process or another): nothing was done; retry when it ends. 423, as
    tusd answers, which tus clients retry."""

    status = 423
    title = "Locked"
    slug = "locked"


class ResourceLocked(Locked):
    """A live WebDAV lock covers the path: someone has the document open in an editor
    (Word, LibreOffice, the Windows redirector), and only the lock's holder, presenting
    its token, may write it until the lock is released, expires or is broken. Nothing
    was done. The extension members name the locked path, its holder, until when, and
    the lock's id (``DELETE /api/v1/locks/{id}`` for an owner or admin). Raised by
    ``files.locks.check_write`` for every protocol but WebDAV, which answers its own way."""

    title = "Locked by an open document"
    slug = "resource-locked"


class PreconditionFailed(AllsetError):
    status = 412
    title = "Precondition failed"
    slug = "precondition-failed"


class TooLarge(AllsetError):
    status = 413
    title = "Too large"
    slug = "too-large"


class UnsupportedMediaType(AllsetError):
    status = 415
    title = "Unsupported media type"
    slug = "unsupported-media-type"


class RangeNotSatisfiable(AllsetError):
    status = 416
    title = "Range not satisfiable"
    slug = "range-not-satisfiable"


class DigestMismatch(AllsetError):
    """The bytes received do not hash to what the sender announced (R-STORE-7)."""

    status = 400
    title = "Digest mismatch"
    slug = "digest-mismatch"


class ChecksumMismatch(DigestMismatch):
    """tus checksum extension: the request's body does not match Upload-Checksum; the
    bytes of that request are discarded and the upload can be resumed."""

    status = 460
    title = "Checksum mismatch"
    slug = "checksum-mismatch"


class Gone(AllsetError):
    status = 410
    title = "Gone"
    slug = "gone"


class TooManyAttempts(AllsetError):
    status = 429
    title = "Too many attempts"
    slug = "too-many-attempts"

    def __init__(self, detail: str, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.retry_after = retry_after


class QuotaExceeded(AllsetError):
    """R-STORE-8: the extension members name the figures so a user knows what to free."""

    status = 507
    title = "Storage quota exceeded"
    slug = "quota-exceeded"


class Suspended(AllsetError):
    status = 403
    title = "Service suspended"
    slug = "suspended"


class StorageUnavailable(AllsetError):
    """No replica could serve or store a chunk; never a reason to lose data, so we refuse."""

    status = 503
    title = "Storage unavailable"
    slug = "storage-unavailable"


class IntegrityError(AllsetError):
    """Every copy of a chunk failed its hash check: the read stops rather than serve wrong bytes."""

    status = 500
    title = "Stored data failed verification"
    slug = "integrity"
