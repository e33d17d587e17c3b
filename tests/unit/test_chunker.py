"""Streaming content-defined chunking must equal whole-buffer chunking and localise edits."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from allset.blobstore.chunker import MAX_SIZE, MIN_SIZE, StreamChunker, chunk_bytes


def _random(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def test_stream_equals_whole_for_any_feeding_pattern() -> None:
    data = _random(20 * 1024 * 1024, 1)
    whole = chunk_bytes(data)
    assert b"".join(whole) == data
    rng = random.Random(2)
    c = StreamChunker()
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 100, 65536, 1 << 20, 3 << 20])
        out.extend(c.feed(data[pos : pos + step]))
        pos += step
    out.extend(c.finish())
    assert out == whole


def test_chunk_sizes_respect_bounds() -> None:
    chunks = chunk_bytes(_random(16 * 1024 * 1024, 3))
    assert all(MIN_SIZE <= len(c) <= MAX_SIZE for c in chunks[:-1])
    assert 4 <= len(chunks) <= 40  # ~1 MiB average


def test_insertion_near_start_changes_few_chunks() -> None:
    data = _random(32 * 1024 * 1024, 4)
    edited = data[:1000] + b"0123456789" + data[1000:]
    before, after = set(chunk_bytes(data)), chunk_bytes(edited)
    changed = sum(len(c) for c in after if c not in before)
    assert changed < 2 * MAX_SIZE


def test_empty_and_tiny() -> None:
    assert chunk_bytes(b"") == []
    assert chunk_bytes(b"x") == [b"x"]


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=300_000), st.lists(st.integers(1, 70_000), min_size=1, max_size=20))
def test_property_stream_equals_whole(data: bytes, steps: list[int]) -> None:
    c = StreamChunker(min_size=4096, avg_size=16384, max_size=65536)
    out: list[bytes] = []
    pos, i = 0, 0
    while pos < len(data):
        step = steps[i % len(steps)]
        out.extend(c.feed(data[pos : pos + step]))
        pos += step
        i += 1
    out.extend(c.finish())
    ref = StreamChunker(min_size=4096, avg_size=16384, max_size=65536)
    assert out == [*ref.feed(data), *ref.finish()]
