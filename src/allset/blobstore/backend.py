"""The Backend protocol: one copy of a set of immutable, content-addressed objects.

Contract every implementation honours (tests/contract/test_backend.py runs the same
suite against each):

* Keys are ``<tenant-id>/<sha256-hex>``; a key's value never changes once written, so
  writes are idempotent and a concurrent second write of the same key is harmless.
* ``put`` returns only once the object is durable (on a local disk: data fsynced, then
  renamed into place, then the directory fsynced). Readers never see a partial object.
* ``get`` returns the bytes as stored, *unverified*: verification is the caller's job
  (the replicated store), because only it can repair from another copy.
* ``delete`` is idempotent; ``get`` of a missing key raises ``ObjectMissing``.
* All methods are blocking and thread-safe; callers run them off the event loop.
* ``location`` is the ISO country code where the bytes physically are (R-STORE-5).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class ObjectMissing(KeyError):
    """The backend holds no object under this key."""


class Backend(Protocol):
    name: str
    location: str

    def put(self, key: str, data: bytes | memoryview) -> None: ...

    def put_many(self, items: list[tuple[str, bytes | memoryview]]) -> None:
        """``put`` of each (key, data), durable for all of them when it returns; a
        backend may share the cost of durability between them (one barrier for the
        batch). On an error some objects may be stored and others not; each one stored
        is complete (never a partial object)."""
        ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def keys(self) -> Iterator[str]:
        """Every key, in no particular order; used by scrub and orphan collection."""
        ...

    def age_seconds(self, key: str) -> float:
        """Seconds since the object was written; orphan collection spares young objects."""
        ...

    def cleanup_temporary(self) -> int:
        """Remove temporary files left by a crashed writer; returns how many."""
        ...


def chunk_key(tenant_id: str, digest_hex: str) -> str:
    """Objects are partitioned by Client: dedup never crosses Clients (R-STORE-3)."""
    return f"{tenant_id}/{digest_hex}"


def split_key(key: str) -> tuple[str, str]:
    tenant_id, _, digest_hex = key.partition("/")
    return tenant_id, digest_hex
