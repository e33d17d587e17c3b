"""``OrderedSha256`` hashes in a worker thread yet must see the blocks in the order given,
whatever their sizes, and must bound what waits in its queue."""

from __future__ import annotations

import hashlib
import random
import threading

from allset.files.hashing import PARALLEL_HASH_MIN, OrderedSha256


def test_digest_equals_hashlib_for_mixed_blocks() -> None:
    rng = random.Random(7)
    for _ in range(20):
        h = OrderedSha256(max_queued=3 * PARALLEL_HASH_MIN)  # small: the producer must wait
        blocks = [
            rng.randbytes(rng.choice([0, 1, 100, PARALLEL_HASH_MIN - 1, 4 * PARALLEL_HASH_MIN]))
            for _ in range(40)
        ]
        for b in blocks:
            h.update(bytearray(b))  # handed over, as pump_request does
        assert h.hexdigest() == hashlib.sha256(b"".join(blocks)).hexdigest()


def test_queue_stays_bounded() -> None:
    limit = 2 * PARALLEL_HASH_MIN
    h = OrderedSha256(max_queued=limit)
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(h._queued)

    t = threading.Thread(target=watch)
    t.start()
    try:
        for _ in range(200):
            h.update(bytes(PARALLEL_HASH_MIN))
    finally:
        stop.set()
        t.join()
    # At most one block beyond the limit is ever accepted (it waits when the limit is hit).
    assert max(seen) <= limit + PARALLEL_HASH_MIN
    assert h.hexdigest() == hashlib.sha256(bytes(PARALLEL_HASH_MIN * 200)).hexdigest()
