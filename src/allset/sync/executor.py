"""Carrying out a plan, safely, and recording each success in the state as it happens.

Safety rules, each for a failure someone has lived through:

- A file is replaced or deleted locally only if it is still exactly what the plan saw
  (size, mtime, inode); one edited in the meantime is left for the next pass, where it
  becomes an upload or a conflict — never silently overwritten.
- Downloads are written to a temporary file in the same folder, verified against the
  SHA-256 chunk by chunk and as a whole, fsynced, then renamed over the real name, and
  the folder is fsynced: a crash leaves either the old file or the new one, never half of
  one under the real name (leftover ``*.allset-part`` files are removed on the next pass).
- Uploads are committed with the version they started from (or "only if absent"), so a
  change made on the server meanwhile answers 412 instead of being overwritten; and the
  SHA-256 the server stored is compared with ours (R-STORE-7).
- Each finished batch is recorded before the next starts, so a killed sync resumes
  without sending finished files again (and a lost record only costs a comparison).
- Folders are removed with ``rmdir``, never recursively: what we did not know about stays.
- A file locked on the server (423: someone has it open in an editor through WebDAV) is
  neither a conflict nor an error: the local change stays as it is, pending, nothing is
  renamed or recorded, and the next pass tries again (``Outcome.locked``). Overwriting
  the document under its editor would lose their work when they save (R-SYNC-1 brings
  the sides into agreement; it must not do it by destroying a change).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from allset.blobstore.chunker import MIN_SIZE
from allset.client.transfer import LockedOnServer, ProofMismatch, TransferError, plan_file
from allset.core.durable import fsync_dir
from allset.sync.ignore import PART_SUFFIX, IgnoreRules
from allset.sync.planner import Download, Plan, Upload
from allset.sync.progress import Reporter
from allset.sync.remote import COMMIT_BATCH, FETCH_BYTES, Remote
from allset.sync.scanner import LocalItem
from allset.sync.state import BaseEntry, State

BATCH_BYTES = 16 << 20  # of file data per upload batch: what a kill -9 may cost again


@dataclass
class Outcome:
    uploaded: int = 0
    downloaded: int = 0
    deleted_remote: int = 0
    deleted_local: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    conflicts: int = 0
    skipped: int = 0  # changed while we worked: for the next pass
    errors: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)  # pending: locked on the server
    remote_changed: bool = False


def _same(st: os.stat_result, item: LocalItem) -> bool:
    return (st.st_size, st.st_mtime_ns, st.st_ino) == (item.size, item.mtime_ns, item.inode)


def _iso_to_ns(text: str) -> int | None:
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1_000_000_000)
    except (ValueError, TypeError):
        return None


class Executor:
    def __init__(
        self,
        root: Path,
        remote: Remote,
        state: State,
        reporter: Reporter,
        rules: IgnoreRules,
    ) -> None:
        self.root, self.remote, self.state = root, remote, state
        self.report, self.rules = reporter, rules
        self.out = Outcome()
        self.aliases: dict[str, str | None] = {}

    def abs(self, local: str) -> Path:
        return self.root.joinpath(*local.split("/"))

    def run(self, plan: Plan, aliases: dict[str, str | None], sources: dict[str, Path]) -> Outcome:
        """``aliases``: key -> local spelling to remember (None: default); ``sources``:
        SHA-256 -> a local file with that content, to copy instead of downloading."""
        self.aliases = aliases
        self._renames(plan)
        self._mkdirs(plan)
        self._uploads(plan.uploads)
        self._downloads(plan.downloads, sources)
        self._remote_deletes(plan)
        self._local_deletes(plan)
        with self.state.transaction():
            self.state.put_base((a.key, a.entry) for a in plan.agree)
            self.state.drop_base(plan.forget)
        if self.out.remote_changed:
            self.state.invalidate_remote()
        return self.out

    def _error(self, path: str, message: str) -> None:
        self.out.errors.append(f"{path}: {message}")
        self.report.event("error", path=path, message=message)

    def _locked(self, path: str, lock: LockedOnServer) -> None:
        """Leave ``path`` pending (no state change: the next pass plans it again)."""
        message = (
            f"locked on the server by {lock.holder} until {lock.until} UTC (open in an "
            "editor); will retry"
        )
        self.out.locked.append(f"{path}: {message}")
        self.report.event(
            "locked",
            path=path,
            holder=lock.holder,
            until=lock.until,
            lock_path=lock.path,
            lock_id=lock.lock_id,
            message=message,
        )

    # ---- conflicts and folders ---------------------------------------------------------
    def _renames(self, plan: Plan) -> None:
        for r in plan.renames:
            if r.side == "local":
                src, dst = self.abs(r.local), self.abs(r.to_local)
                if dst.exists():
                    self._error(r.to_local, "a file already has the conflict copy's name")
                    continue
                try:
                    os.rename(src, dst)
                except OSError as exc:
                    self._error(r.local, f"cannot set it aside as a conflict copy: {exc}")
                    continue
                self.state.drop_base([r.key])
            else:
                try:
                    status = self.remote.move(r.key, r.to_key)
                except LockedOnServer as lock:
                    self._locked(r.key, lock)  # no conflict copy while it is open there
                    continue
                self.out.remote_changed = True
                if status >= 400:
                    self._error(r.key, f"cannot set the server's file aside ({status})")
                    continue
            self.out.conflicts += 1
            self.report.event("conflict", path=r.key, copy=r.to_key, side=r.side)

    def _mkdirs(self, plan: Plan) -> None:
        for key in sorted(plan.remote_mkdirs, key=lambda k: k.count("/")):
            try:
                self.remote.mkdir(key)
            except LockedOnServer as lock:
                self._locked(key, lock)
                continue
            except TransferError as exc:
                self._error(key, str(exc))
                continue
            self.out.remote_changed = True
            self.state.put_base([(key, BaseEntry("dir", local=self.aliases.get(key)))])
        for key, local in sorted(plan.local_mkdirs, key=lambda kl: kl[0].count("/")):
            try:
                self.abs(local).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self._error(key, f"cannot create the folder: {exc}")
                continue
            self.state.put_base([(key, BaseEntry("dir", local=self.aliases.get(key)))])

    # ---- uploads -------------------------------------------------------------------------
    def _upload_batches(self, uploads: list[Upload]) -> Iterator[list[Upload]]:
        batch: list[Upload] = []
        size = 0
        for u in uploads:
            batch.append(u)
            size += u.expect.size
            if len(batch) >= COMMIT_BATCH or size >= BATCH_BYTES:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch

    def _uploads(self, uploads: list[Upload]) -> None:
        for batch in self._upload_batches(uploads):
            self._upload_batch(batch)

    def _upload_batch(self, batch: list[Upload]) -> None:
        planned = []
        for u in batch:
            path = self.abs(u.local)
            try:
                before = os.stat(path)
                if not _same(before, u.expect):
                    self.out.skipped += 1
                    continue
                chunk_plan = plan_file(path)
                checked = time.time_ns()
                if not _same(os.stat(path), u.expect):  # written to while we read it
                    self.out.skipped += 1
                    continue
            except OSError as exc:
                self._error(u.key, f"cannot read it: {exc}")
                continue
            planned.append((u, path, chunk_plan, checked))
        if not planned:
            return
        hashes = list(dict.fromkeys(h for _, _, cp, _ in planned for h, _, _ in cp.chunks))
        missing = self.remote.missing(hashes)
        broken: set[str] = set()

        def frames() -> Iterator[tuple[str, bytes]]:
            for u, path, cp, _ in planned:
                wanted = [(h, o, n) for h, o, n in cp.chunks if h in missing]
                if not wanted:
                    continue
                with path.open("rb") as f:
                    for h, offset, size in wanted:
                        if h not in missing:  # sent already, by an earlier file
                            continue
                        f.seek(offset)
                        data = f.read(size)
                        if hashlib.sha256(data).hexdigest() != h:
                            broken.add(u.key)  # changed under us: the commit is skipped
                            break
                        missing.discard(h)
                        yield h, data

        self.out.bytes_up += self.remote.send_chunks(frames())
        items = []
        kept = []
        for u, _path, cp, checked in planned:
            if u.key in broken:
                self.out.skipped += 1
                continue
            item = {
                "path": self.remote.path(u.key),
                "sha256": cp.sha256,
                "chunks": [h for h, _, _ in cp.chunks],
                "size": cp.size,
                "parents": True,
                "mtime": datetime.fromtimestamp(u.expect.mtime_ns / 1e9).astimezone().isoformat(),
            }
            if u.base_version:
                item["base_version"] = u.base_version
            elif u.if_absent:
                item["if_absent"] = True
            items.append(item)
            kept.append((u, cp, checked))
        if not items:
            return
        results = self.remote.commit(items)
        self.out.remote_changed = True
        records = []
        for (u, cp, checked), res in zip(kept, results, strict=True):
            status = int(res.get("status", 0))
            if status in (200, 201):
                if res.get("sha256") != cp.sha256:
                    raise ProofMismatch(
                        f"The server stored {res.get('sha256')} for {u.key} but the file has "
                        f"SHA-256 {cp.sha256}; stopping. Report this to the operator."
                    )
                records.append(
                    (
                        u.key,
                        BaseEntry(
                            "file",
                            u.expect.size,
                            u.expect.mtime_ns,
                            u.expect.inode,
                            checked,
                            cp.sha256,
                            str(res["version"]),
                            self.aliases.get(u.key),
                        ),
                    )
                )
                self.out.uploaded += 1
                self.report.event("upload", path=u.key, size=cp.size, sha256=cp.sha256)
            elif status == 412:
                self.out.skipped += 1  # changed on the server meanwhile: next pass decides
            elif status == 423 and (lock := LockedOnServer.from_problem(res)) is not None:
                self._locked(u.key, lock)  # not recorded: uploaded by a later pass
            else:
                self._error(u.key, f"{status} {res.get('detail') or res.get('title', '')}")
            self.report.advance(files=1, nbytes=u.expect.size)
        with self.state.transaction():
            self.state.put_base(records)

    # ---- downloads -------------------------------------------------------------------------
    def _downloads(self, downloads: list[Download], sources: dict[str, Path]) -> None:
        small = [d for d in downloads if d.remote.size <= MIN_SIZE]
        large = [d for d in downloads if d.remote.size > MIN_SIZE]
        batch: list[Download] = []
        size = 0
        for d in small:
            batch.append(d)
            size += d.remote.size
            if size >= FETCH_BYTES or len(batch) >= 2000:
                self._small_batch(batch, sources)
                batch, size = [], 0
        if batch:
            self._small_batch(batch, sources)
        for d in large:
            try:
                self._large(d, sources)
            except TransferError as exc:
                self._error(d.key, str(exc))

    def _small_batch(self, batch: list[Download], sources: dict[str, Path]) -> None:
        """Files up to the minimum chunk size are one chunk whose hash is the file's."""
        need = list(
            dict.fromkeys(
                d.remote.sha256
                for d in batch
                if d.remote.size > 0 and d.remote.sha256 not in sources
            )
        )
        got: dict[str, bytes] = {}
        data: bytes | None
        if need:
            for h, data in self.remote.fetch_chunks(need):
                if hashlib.sha256(data).hexdigest() != h:
                    raise ProofMismatch(f"A chunk ({h[:12]}) arrived damaged; stopping.")
                got[h] = data
                self.out.bytes_down += len(data)
        records = []
        dirs: set[Path] = set()
        for d in batch:
            data = got.get(d.remote.sha256)
            if data is None and d.remote.size == 0:
                data = b""
            if data is None:
                data = self._from_source(d, sources)
            if data is None:
                self._error(d.key, "its content could not be fetched")
                continue
            rec = self._place(d, [data])
            if rec is not None:
                records.append(rec)
                dirs.add(self.abs(d.local).parent)
        for folder in dirs:
            fsync_dir(folder)
        with self.state.transaction():
            self.state.put_base(records)

    def _from_source(self, d: Download, sources: dict[str, Path]) -> bytes | None:
        src = sources.get(d.remote.sha256)
        if src is None:
            return None
        try:
            data = src.read_bytes()
        except OSError:
            return None
        return data if hashlib.sha256(data).hexdigest() == d.remote.sha256 else None

    def _large(self, d: Download, sources: dict[str, Path]) -> None:
        man = self.remote.manifest(d.key)
        if man["sha256"] != d.remote.sha256:
            self.out.skipped += 1  # changed again on the server: next pass
            return
        # Chunks we already hold: the old local version of this file, or another local
        # file with the same content (a move on the server costs no download).
        have: dict[str, tuple[Path, int, int]] = {}
        for candidate in filter(None, [sources.get(d.remote.sha256), self._existing(d)]):
            try:
                for h, o, n in plan_file(candidate).chunks:
                    have.setdefault(h, (candidate, o, n))
            except OSError:
                continue
        chunks = [(c["hash"], c["size"]) for c in man["chunks"]]
        rec = self._place(d, self._large_pieces(chunks, have))
        if rec is not None:
            with self.state.transaction():
                self.state.put_base([rec])
            fsync_dir(self.abs(d.local).parent)

    def _existing(self, d: Download) -> Path | None:
        return self.abs(d.expect.local) if d.expect is not None else None

    def _large_pieces(
        self, chunks: list[tuple[str, int]], have: dict[str, tuple[Path, int, int]]
    ) -> Iterator[bytes]:
        pending: list[str] = []
        pending_bytes = 0

        def flush() -> Iterator[bytes]:
            for h, data in self.remote.fetch_chunks(pending):
                if hashlib.sha256(data).hexdigest() != h:
                    raise ProofMismatch(f"A chunk ({h[:12]}) arrived damaged; stopping.")
                self.out.bytes_down += len(data)
                yield data

        for h, size in chunks:
            local = have.get(h)
            data = None
            if local is not None:
                with local[0].open("rb") as f:
                    f.seek(local[1])
                    data = f.read(local[2])
                if hashlib.sha256(data).hexdigest() != h:
                    data = None
            if data is None:
                pending.append(h)
                pending_bytes += size
                if pending_bytes >= FETCH_BYTES:
                    yield from flush()
                    pending, pending_bytes = [], 0
                continue
            if pending:
                yield from flush()
                pending, pending_bytes = [], 0
            yield data
        if pending:
            yield from flush()

    def _place(
        self, d: Download, pieces: list[bytes] | Iterator[bytes]
    ) -> tuple[str, BaseEntry] | None:
        """Write, verify, fsync, then take the real name only if nothing changed there."""
        dest = self.abs(d.local)
        tmp = dest.parent / f".{secrets.token_hex(4)}{PART_SUFFIX}"
        whole = hashlib.sha256()
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as out:
                for piece in pieces:
                    whole.update(piece)
                    out.write(piece)
                out.flush()
                os.fsync(out.fileno())  # the bytes are durable before the name points at them
            if whole.hexdigest() != d.remote.sha256:
                raise ProofMismatch(f"{d.key} does not match its SHA-256 {d.remote.sha256}.")
            mtime_ns = _iso_to_ns(d.remote.mtime)
            if mtime_ns is not None:
                os.utime(tmp, ns=(mtime_ns, mtime_ns))
            # The last check before replacing: the local file is still the one we planned
            # on (or still absent). A change in between is a conflict for the next pass.
            try:
                current = os.stat(dest, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            if (d.expect is None) != (current is None) or (
                d.expect is not None and current is not None and not _same(current, d.expect)
            ):
                tmp.unlink(missing_ok=True)
                self.out.skipped += 1
                return None
            os.replace(tmp, dest)
            st = os.stat(dest)
        except ProofMismatch:
            tmp.unlink(missing_ok=True)
            raise
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self._error(d.key, f"cannot write it: {exc}")
            return None
        self.out.downloaded += 1
        self.report.advance(files=1, nbytes=d.remote.size)
        self.report.event("download", path=d.key, size=d.remote.size, sha256=d.remote.sha256)
        return d.key, BaseEntry(
            "file",
            st.st_size,
            st.st_mtime_ns,
            st.st_ino,
            time.time_ns(),
            d.remote.sha256,
            d.remote.version,
            self.aliases.get(d.key),
        )

    # ---- deletions ----------------------------------------------------------------------
    def _remote_deletes(self, plan: Plan) -> None:
        for d in plan.remote_deletes:
            try:
                status = self.remote.delete(d.key, d.version if d.kind == "file" else "")
            except LockedOnServer as lock:
                self._locked(d.key, lock)  # the base stays: the next pass deletes it
                continue
            except TransferError as exc:
                self._error(d.key, str(exc))
                continue
            self.out.remote_changed = True
            if status == 412:
                self.out.skipped += 1  # edited on the server meanwhile: it will come down
                continue
            with self.state.transaction():
                self.state.drop_base_under(d.key)
            self.out.deleted_remote += max(d.files, 1 if d.kind == "file" else 0)
            self.report.event("delete-remote", path=d.key, kind=d.kind)

    def _local_deletes(self, plan: Plan) -> None:
        for d in plan.local_deletes:
            path = self.abs(d.local)
            if d.kind == "file":
                assert d.expect is not None
                try:
                    if not _same(os.stat(path, follow_symlinks=False), d.expect):
                        self.out.skipped += 1  # edited here meanwhile: it will go up
                        continue
                    path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    self._error(d.key, f"cannot delete it: {exc}")
                    continue
                self.state.drop_base([d.key])
                self.out.deleted_local += 1
                self.report.event("delete-local", path=d.key, kind="file")
                continue
            self._remove_junk(path, d.key)
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                # Something we did not know about is in there: the folder stays.
                self.report.event(
                    "notice",
                    path=d.key,
                    message="deleted on the server but kept here: "
                    "it holds files that are not synced",
                )
                continue
            self.state.drop_base_under(d.key)
            self.report.event("delete-local", path=d.key, kind="dir")

    def _remove_junk(self, folder: Path, key: str) -> None:
        """.DS_Store, Thumbs.db and the like would keep a deleted folder alive forever."""
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for e in entries:
            if e.is_file(follow_symlinks=False) and (
                self.rules.builtin(f"{key}/{e.name}") or e.name.endswith(PART_SUFFIX)
            ):
                with contextlib.suppress(OSError):
                    os.unlink(e.path)
