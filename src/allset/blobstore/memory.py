"""An in-memory Backend for unit tests; announces itself so it is never mistaken for storage."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from allset.blobstore.backend import ObjectMissing


class MemoryBackend:
    """Holds objects in a dict. Not durable: for tests and demos only."""

    def __init__(self, name: str = "memory", location: str = "FR") -> None:
        self.name = name
        self.location = location
        self._objects: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes | memoryview) -> None:
        with self._lock:
            self._objects[key] = (bytes(data), time.time())

    def put_many(self, items: list[tuple[str, bytes | memoryview]]) -> None:
        for key, data in items:
            self.put(key, data)

    def get(self, key: str) -> bytes:
        with self._lock:
            try:
                return self._objects[key][0]
            except KeyError as exc:
                raise ObjectMissing(key) from exc

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self._objects

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def keys(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._objects))

    def age_seconds(self, key: str) -> float:
        with self._lock:
            try:
                return time.time() - self._objects[key][1]
            except KeyError as exc:
                raise ObjectMissing(key) from exc

    def cleanup_temporary(self) -> int:
        return 0

    def corrupt(self, key: str) -> None:
        """Flip a byte: lets tests exercise verify-and-repair without a disk."""
        with self._lock:
            data, at = self._objects[key]
            self._objects[key] = (bytes([data[0] ^ 0xFF]) + data[1:], at)
