"""One sync pass, and the ``--watch`` loop around it.

A pass: check the local folder is the one we synced (guards), read the server's state
(from the cache when the change feed says nothing happened), scan the local folder, hash
what changed, plan, refuse what must not happen without the user's word (mass deletes,
not enough room — R-SYNC-2), then execute and record.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from allset.client.transfer import RateLimiter, TransferError
from allset.sync.executor import Executor, Outcome
from allset.sync.ignore import MARKER, IgnoreRules
from allset.sync.names import Platform
from allset.sync.planner import Plan, needs_hash, plan
from allset.sync.progress import Reporter
from allset.sync.remote import Remote
from allset.sync.scanner import RACY_NS, LocalItem, Scan, scan, sha256_file, trusted
from allset.sync.state import BaseEntry, Busy, RemoteEntry, State

MASS_DELETE_MIN = 20
MASS_DELETE_SHARE = 0.5
LOCKED_RETRY_SECONDS = 60.0  # watch mode: a file locked on the server is tried again


class SyncRefused(TransferError):
    """The pass was stopped before any change, for a reason the user must decide on."""


def _free_space(path: Path) -> int:
    return shutil.disk_usage(path).free


@dataclass
class Options:
    platform: Platform = field(default_factory=Platform.current)
    allow_mass_delete: bool = False
    free_space: Callable[[Path], int] = _free_space  # injectable for the R-SYNC-2 test
    host: str = field(default_factory=socket.gethostname)
    limiter: RateLimiter | None = None
    reset: bool = False


@dataclass
class PassResult:
    outcome: Outcome
    plan: Plan
    seconds: float


class SyncEngine:
    def __init__(
        self,
        http: httpx.Client,
        local: Path,
        remote_root: str,
        state_file: Path,
        options: Options | None = None,
        reporter: Reporter | None = None,
        server_id: str = "",
    ) -> None:
        self.http = http
        self.root = local
        self.options = options or Options()
        self.remote = Remote(http, remote_root, self.options.limiter)
        self.state_file = state_file
        try:
            self.state = State(state_file)
        except Busy as exc:
            raise SyncRefused(str(exc)) from exc
        self.report = reporter or Reporter(quiet=True)
        self.server_id = server_id

    def close(self) -> None:
        self.state.close()

    # ---- guards ----------------------------------------------------------------------
    def _check_folders(self) -> None:
        """The local folder must be the one this state describes. A disk that is not
        mounted shows an empty (or missing) folder: taking that as "the user deleted
        everything" is the worst thing a sync tool can do, so it is refused instead."""
        first = self.state.is_empty() and not self.state.meta("sync_id")
        if self.options.reset and not first:
            self.state.db.execute("DELETE FROM base")
            self.state.put_meta("sync_id", "")
            self.state.invalidate_remote()
            first = True
        marker = self.root / MARKER
        if first:
            self.root.mkdir(parents=True, exist_ok=True)
            if not self.remote.exists_root():
                self.remote.mkdir("")
            ident = uuid.uuid4().hex
            self._write_marker(marker, ident)
            self.state.put_meta("sync_id", ident)
            return
        ident = self.state.meta("sync_id")
        if not self.root.is_dir():
            raise SyncRefused(
                f"{self.root} is missing. If it is on a disk that is not mounted, mount it "
                "and try again; nothing was changed. To start over with a new folder, run "
                "again with --reset."
            )
        try:
            found = json.loads(marker.read_text(encoding="utf-8")).get("id")
        except (OSError, ValueError):
            found = None
        if found != ident:
            raise SyncRefused(
                f"{self.root} does not look like the folder that was synced (its {MARKER} "
                "marker is missing or different): is its disk mounted? Nothing was changed. "
                "If you replaced the folder on purpose, run again with --reset (files on "
                "both sides are kept and merged; nothing is deleted)."
            )
        if not self.remote.exists_root():
            raise SyncRefused(
                f"The server folder {self.remote.root or '/'} no longer exists (moved or "
                "deleted? see the server's trash). Nothing was changed here. Run again with "
                "--reset to sync this folder into a new server folder."
            )

    def _write_marker(self, marker: Path, ident: str) -> None:
        data = {"id": ident, "server": self.server_id, "remote": self.remote.root or "/"}
        marker.write_text(json.dumps(data), encoding="utf-8")

    # ---- the server's side ------------------------------------------------------------
    def refresh_remote(self) -> None:
        """Bring the remote cache up to date: kept when the feed has nothing for us after
        its cursor, else replaced by a snapshot."""
        cursor = self.state.meta("cursor")
        if cursor:
            since = int(cursor)
            relevant = False
            for _ in range(10_000):
                changes, since, more = self.remote.changes(since)
                relevant = relevant or any(self.remote.concerns_us(c) for c in changes)
                if relevant or not more:
                    break
            if not relevant:
                self.state.put_meta("cursor", str(since))
                return
        self.state.replace_remote(self.remote.snapshot_into)

    # ---- one pass ------------------------------------------------------------------------
    def run_once(self) -> PassResult:
        started = time.monotonic()
        self._check_folders()
        rules = IgnoreRules.load(self.root)
        self.refresh_remote()
        self.state.begin_scan()
        local = scan(
            self.root,
            self.state.load_aliases(),
            rules,
            self.options.platform,
            sink=self.state.add_seen,
        )
        base, remote = self._changes(local)
        self._hash(local, base, remote)
        now = datetime.now().astimezone()
        the_plan = plan(
            base,
            local,
            remote,
            platform=self.options.platform,
            rules=rules,
            stamp=now.strftime("%Y-%m-%d %H%M%S"),
            host=self.options.host,
        )
        self._notices(the_plan)
        self._guard_deletes(the_plan)
        self._guard_space(local)
        for p in local.partials:  # our own leftovers from an interrupted download
            with contextlib.suppress(OSError):
                p.unlink()
        files = len(the_plan.uploads) + len(the_plan.downloads)
        self.report.start(files, the_plan.bytes_up + the_plan.bytes_down)
        try:
            executor = Executor(self.root, self.remote, self.state, self.report, rules)
            aliases = self._aliases(the_plan, local)
            sources = self._sources(the_plan, local)
            outcome = executor.run(the_plan, aliases, sources)
        finally:
            self.report.stop()
        seconds = time.monotonic() - started
        self.report.event(
            "summary",
            uploaded=outcome.uploaded,
            downloaded=outcome.downloaded,
            deleted_remote=outcome.deleted_remote,
            deleted_local=outcome.deleted_local,
            bytes_up=outcome.bytes_up,
            bytes_down=outcome.bytes_down,
            conflicts=outcome.conflicts,
            errors=len(outcome.errors),
            locked=len(outcome.locked),
            skipped=outcome.skipped,
            seconds=round(seconds, 3),
        )
        return PassResult(outcome, the_plan, seconds)

    def _changes(self, local: Scan) -> tuple[dict[str, BaseEntry], dict[str, RemoteEntry]]:
        """Load base, remote and local entries of the keys that changed (and their
        neighbourhood, see ``State.changed_keys``) — nothing else comes into memory."""
        keys = self.state.changed_keys(RACY_NS)
        if self.options.platform.case_insensitive:
            # a name arriving in a folder must be compared with all the names there
            new_parents = {k.rpartition("/")[0] for k in keys}
            keys |= self.state.siblings(new_parents)
        base, remote, rows = self.state.load_for(keys)
        for key, spelled, kind, size, mtime_ns, inode in rows:
            item = LocalItem(kind, spelled, size, mtime_ns, inode)
            if trusted(item, base.get(key)):
                item.sha256 = base[key].sha256
            local.items[key] = item
        return base, remote

    def _sources(self, the_plan: Plan, local: Scan) -> dict[str, Path]:
        """SHA-256 -> a local file with that content, for the downloads of this plan."""
        wanted = {d.remote.sha256 for d in the_plan.downloads}
        if not wanted:
            return {}
        found = {
            i.sha256: i.local
            for i in local.items.values()
            if i.kind == "file" and i.sha256 in wanted
        }
        for sha, spelled in self.state.local_sources(wanted - set(found), RACY_NS).items():
            found[sha] = spelled
        return {sha: self.root.joinpath(*p.split("/")) for sha, p in found.items()}

    def _aliases(self, the_plan: Plan, local: Scan) -> dict[str, str | None]:
        """The local spelling of every key this pass may record, when not the default."""
        out: dict[str, str | None] = {}
        platform = self.options.platform

        def remember(key: str, spelled: str) -> None:
            default = "/".join(_safe_local(platform, p) for p in key.split("/"))
            out[key] = None if spelled == default else spelled

        for key, item in local.items.items():
            remember(key, item.local)
        for u in the_plan.uploads:
            remember(u.key, u.local)
        for d in the_plan.downloads:
            remember(d.key, d.local)
        for key, spelled in the_plan.local_mkdirs:
            remember(key, spelled)
        return out

    def _hash(
        self, local: Scan, base: dict[str, BaseEntry], remote: dict[str, RemoteEntry]
    ) -> None:
        for key, item in local.items.items():
            if needs_hash(key, item, base, remote):
                try:
                    item.sha256 = sha256_file(self.root.joinpath(*item.local.split("/")))
                except OSError as exc:
                    local.frozen.add(key)
                    local.notices[key] = f"cannot be read ({exc.strerror or exc}); left alone"

    def _notices(self, the_plan: Plan) -> None:
        for key, message in sorted(the_plan.notices.items()):
            if self.state.first_report(key, message):
                self.report.event("notice", path=key, message=message)

    def _guard_deletes(self, the_plan: Plan) -> None:
        synced = self.state.base_files()
        doomed = the_plan.files_deleted
        if (
            not self.options.allow_mass_delete
            and doomed > MASS_DELETE_MIN
            and doomed > MASS_DELETE_SHARE * synced
        ):
            msg = (
                f"this pass would delete {doomed} of the {synced} synced files "
                f"({doomed * 100 // max(synced, 1)}%). Nothing was changed. If that is what "
                "you want, run again with --allow-mass-delete (server deletions go to its "
                "trash)."
            )
            self.report.event("refused", message=msg, files=doomed, synced=synced)
            raise SyncRefused(msg)

    def _guard_space(self, local: Scan) -> None:
        """R-SYNC-2: the local side must be able to hold the remote side (every file of
        the server folder is counted, even one this computer would ignore: the decision
        errs on the side of refusing)."""
        remote_bytes = self.state.remote_bytes()
        local_bytes = local.file_bytes
        free = self.options.free_space(self.root)
        if free + local_bytes < remote_bytes:
            msg = (
                f"not enough room: the server folder holds {remote_bytes:,} bytes, but this "
                f"computer has {free:,} bytes free plus {local_bytes:,} bytes already in "
                f"{self.root} ({free + local_bytes:,} in all). Nothing was transferred; free "
                "some space or sync a smaller folder (R-SYNC-2)."
            )
            self.report.event(
                "refused",
                message=msg,
                remote_bytes=remote_bytes,
                local_bytes=local_bytes,
                free_bytes=free,
            )
            raise SyncRefused(msg)

    # ---- --watch ------------------------------------------------------------------------
    def watch(
        self,
        stop: threading.Event,
        settle: float = 1.0,
        rescan_every: float = 600.0,
        max_passes: int | None = None,
    ) -> int:
        """Sync on every local change (watchdog) and every server change (long-poll of the
        feed), and every ``rescan_every`` seconds in case an event was missed. Returns the
        number of passes."""
        wake = threading.Event()
        root = str(self.root)

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                path = str(event.src_path)
                if path.endswith(".allset-part") or path.endswith(MARKER):
                    return
                if event.event_type in ("opened", "closed_no_write"):
                    return
                if path != root:
                    wake.set()

        observer = Observer()
        observer.schedule(Handler(), root, recursive=True)
        observer.start()
        poller = threading.Thread(target=self._long_poll, args=(stop, wake), daemon=True)
        poller.start()
        passes = 0
        try:
            for _ in range(max_passes if max_passes is not None else 1 << 62):
                if stop.is_set():
                    break
                retry = rescan_every
                try:
                    if self.run_once().outcome.locked:
                        # No feed event says a lock went: look again in a while.
                        retry = min(rescan_every, LOCKED_RETRY_SECONDS)
                except SyncRefused:
                    raise
                except (TransferError, httpx.HTTPError) as exc:
                    self.report.event("error", message=f"{exc}; retrying shortly")
                    stop.wait(10.0)
                passes += 1
                wake.wait(timeout=retry)
                if stop.is_set():
                    break
                # settle: let a burst of writes finish before the next pass
                for _ in range(20):
                    wake.clear()
                    if not wake.wait(settle) or stop.is_set():
                        break
        finally:
            observer.stop()
            observer.join(timeout=5)
        return passes

    def _long_poll(self, stop: threading.Event, wake: threading.Event) -> None:
        cursor: int | None = None
        for _ in range(1 << 62):
            if stop.is_set():
                return
            try:
                changes, cursor, _ = self.remote.changes(cursor, wait=25 if cursor else 0)
            except (TransferError, httpx.HTTPError):
                stop.wait(10.0)
                continue
            if any(self.remote.concerns_us(c) for c in changes):
                wake.set()


def _safe_local(platform: Platform, name: str) -> str:
    try:
        return platform.to_local(name)
    except ValueError:
        return name
