"""The whole-file SHA-256 is computed beside chunking, in worker threads: it must still see
the bytes in order whatever the sizes of the pieces written (a regression: a small piece
after a large one was once hashed before it)."""

from __future__ import annotations

import hashlib
import random

from allset.core.paths import parse_path
from allset.files.hashing import PARALLEL_HASH_MIN
from allset.files.upload import begin_upload
from allset.runtime import Runtime
from conftest import Account


def test_mixed_piece_sizes_hash_in_order(runtime: Runtime, alice: Account) -> None:
    rng = random.Random(3)
    for attempt in range(5):
        sizes = [
            rng.choice([PARALLEL_HASH_MIN * 3, PARALLEL_HASH_MIN + 1, 7, PARALLEL_HASH_MIN - 1, 1])
            for _ in range(60)
        ]
        pieces = [rng.randbytes(n) for n in sizes]
        upload = begin_upload(runtime.files, alice.principal, parse_path(f"/mixed{attempt}.bin"))
        for piece in pieces:
            upload.write(piece)
        entry, _ = upload.commit()
        whole = b"".join(pieces)
        assert entry.sha256 == hashlib.sha256(whole).hexdigest()
        assert entry.size == len(whole)
