"""Content-defined chunking of a stream in constant memory (FastCDC 2020).

Content-defined cut points depend on the bytes, not on offsets, so inserting 10 bytes
near the start of a file changes one or two chunks instead of all of them: later
uploads (and the sync client, which must chunk identically) send only what changed.

The cutting is ``pyfastcdc`` (FastCDC 2020, output identical to the reference
``fastcdc-rs``): its compiled loop runs without the GIL, so a big upload's chunking
overlaps hashing and the network on the other core, and it cuts ~2x faster than the
``fastcdc`` package used before, which held the GIL for ~1 ms per MiB. Cut points
differ from that package's (FastCDC 2016): a file stored before the switch is cut anew
when next sent, so its first delta after the upgrade is the whole file; the server
accepts any cutting a client sends (``files.upload.MAX_CHUNK``), so older clients work.
"""

from __future__ import annotations

from collections.abc import Iterator

from pyfastcdc import FastCDC

MIN_SIZE = 256 * 1024
AVG_SIZE = 1024 * 1024
MAX_SIZE = 4 * 1024 * 1024


class StreamChunker:
    """Feed bytes in any pieces; get back the same chunks as chunking the whole at once.

    Every chunk but the last one found in the buffer ends at a true cut point (found by
    the rolling hash or forced at MAX_SIZE with the data present), so it can be emitted;
    the last may only be cut because the buffer ended, so it waits for more data.
    """

    def __init__(
        self, min_size: int = MIN_SIZE, avg_size: int = AVG_SIZE, max_size: int = MAX_SIZE
    ) -> None:
        self.min_size, self.avg_size, self.max_size = min_size, avg_size, max_size
        self._cdc = FastCDC(avg_size, min_size=min_size, max_size=max_size)
        self._buf = bytearray()

    def _cut(self, data: bytes | bytearray) -> list[tuple[int, int]]:
        # Read in place (copying the buffer on every scan cost ~3% of a PUT); the
        # chunks' views of ``data`` are gone when this returns, so it may be resized.
        return [(c.offset, c.length) for c in self._cdc.cut_buf(data)]

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
        self._buf += data
        # Scanning only when two maximal chunks are buffered bounds memory and the rescans.
        if len(self._buf) < 2 * self.max_size:
            return
        cuts = self._cut(self._buf)
        end = 0
        with memoryview(self._buf) as view:  # one copy per chunk, not two
            chunks = [bytes(view[offset : offset + length]) for offset, length in cuts[:-1]]
        for chunk in chunks:
            end += len(chunk)
        del self._buf[:end]
        yield from chunks

    def buffered(self) -> bytes:
        """The bytes fed but not yet emitted in a chunk (after the last cut)."""
        return bytes(self._buf)

    def finish(self) -> Iterator[bytes]:
        if self._buf:
            with memoryview(self._buf) as view:
                chunks = [bytes(view[o : o + n]) for o, n in self._cut(self._buf)]
            yield from chunks
        self._buf = bytearray()


def chunk_bytes(data: bytes) -> list[bytes]:
    """Chunk a whole buffer (tests, the client for small files)."""
    c = StreamChunker()
    return [*c.feed(data), *c.finish()]
