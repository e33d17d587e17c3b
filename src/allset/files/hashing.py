"""SHA-256 off the upload's own thread: the whole-file digest and the chunks' digests.

hashlib releases the GIL on large buffers, so hashing in worker threads lets a big upload
use the second core while its thread chunks the next block and the event loop reads the
socket. The whole-file digest must see the blocks in order; ``OrderedSha256`` keeps that
order without making the producer wait for each block's hash (waiting was a third of a
512 MiB PUT's wall time: hashing and chunking took turns instead of overlapping).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import threading
from collections import deque

# Below this, hashing in the calling thread is cheaper than handing the work over.
PARALLEL_HASH_MIN = 64 * 1024
# Shared by all uploads; one thread more than cores: a big upload's whole-file digest
# keeps one thread draining in order, and its chunks' digests still need every core
# (2 -> 3 threads on 2 cores: a 512 MiB PUT waited less for its chunks' hashes, ~+5 %).
HASH_POOL = concurrent.futures.ThreadPoolExecutor(
    max_workers=max(2, os.cpu_count() or 2) + 1, thread_name_prefix="hash"
)


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class OrderedSha256:
    """The SHA-256 of a stream whose blocks are hashed in ``HASH_POOL``, in order.

    ``update`` returns at once (unless ``max_queued`` bytes already wait, which bounds
    memory); ``hexdigest`` waits for the queue to drain. A block given to ``update`` must
    not change afterwards: bytes cannot, a bytearray is handed over by its producer.
    One producer thread at a time; the draining runs in at most one pool thread.
    """

    def __init__(self, max_queued: int = 4 * 1024 * 1024) -> None:
        self._h = hashlib.sha256()
        self._queue: deque[bytes | bytearray] = deque()
        self._queued = 0
        self._max = max_queued
        self._draining = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()

    def update(self, data: bytes | bytearray) -> None:
        with self._cond:
            if not self._draining and len(data) < PARALLEL_HASH_MIN:
                self._h.update(data)  # nothing queued ahead of it: in order already
                return
            while self._queued >= self._max:
                self._cond.wait()
            self._queue.append(data)
            self._queued += len(data)
            if not self._draining:
                self._draining = True
                HASH_POOL.submit(self._drain)

    def _drain(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._queue:  # stop draining in the same breath as seeing none
                        self._draining = False
                        self._cond.notify_all()
                        return
                    data = self._queue[0]
                self._h.update(data)  # only this thread touches the hash while draining
                with self._cond:
                    self._queue.popleft()
                    self._queued -= len(data)
                    self._cond.notify_all()
        except BaseException as exc:  # MemoryError: the digest is lost, never wrong
            with self._cond:
                self._error = exc
                self._queue.clear()
                self._queued = 0
                self._draining = False
                self._cond.notify_all()

    def wait(self) -> None:
        """Until every block given so far is hashed."""
        with self._cond:
            while self._draining:
                self._cond.wait()

    def hexdigest(self) -> str:
        self.wait()
        if self._error is not None:
            raise RuntimeError("hashing the upload failed") from self._error
        return self._h.hexdigest()
