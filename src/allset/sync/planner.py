"""The three-way reconcile: from base, local and remote to a list of actions. Pure.

Each key (a path relative to the synced folder, in the server's spelling) is compared on
both sides with the base, the state both sides last agreed on:

======================  ======================  =======================================
local vs base           remote vs base          action
======================  ======================  =======================================
same                    same                    nothing (refresh the record if touched)
changed / created       same                    upload (conditional on the base version)
deleted                 same                    delete on the server (to its trash)
same                    changed / created       download (if the local file is still the
                                                base one when it is replaced)
same                    deleted                 delete locally
changed                 changed, same content   record the agreement
changed                 changed differently     **conflict**: the local file is renamed
                                                ``… (conflicted copy …)`` and uploaded,
                                                the server's version takes the name
deleted                 changed                 download (an edit beats a delete)
changed                 deleted                 upload again (an edit beats a delete)
======================  ======================  =======================================

A folder deleted on one side is deleted on the other only when nothing under it changed
on the other side; otherwise the changed things are kept (and the folder with them).
Nothing is lost in any row: the only deletions are of files equal to their base, and on
the server they go to the trash.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Literal

from allset.sync.ignore import IgnoreRules
from allset.sync.names import (
    Platform,
    Unrepresentable,
    case_conflict_name,
    conflict_copy_name,
)
from allset.sync.scanner import LocalItem, Scan
from allset.sync.state import BaseEntry, RemoteEntry


@dataclass(frozen=True, slots=True)
class Upload:
    key: str
    local: str
    base_version: str | None  # the server version this change started from
    if_absent: bool  # we believe we create it: never overwrite a concurrent creation
    expect: LocalItem  # the stat planned on; a file changed since is left for next pass


@dataclass(frozen=True, slots=True)
class Download:
    key: str
    local: str
    remote: RemoteEntry
    expect: LocalItem | None  # what is there now (replaced only if still so); None: nothing


@dataclass(frozen=True, slots=True)
class RemoteDelete:
    key: str
    kind: str
    version: str  # files: deleted only if still this version
    files: int  # how many files this removes (for the mass-delete guard)


@dataclass(frozen=True, slots=True)
class LocalDelete:
    key: str
    local: str
    kind: str
    expect: LocalItem | None
    files: int


@dataclass(frozen=True, slots=True)
class Rename:
    """Move the loser of a conflict aside, locally or on the server."""

    side: Literal["local", "remote"]
    key: str
    to_key: str
    local: str
    to_local: str


@dataclass(frozen=True, slots=True)
class Agree:
    key: str
    entry: BaseEntry


@dataclass
class Plan:
    renames: list[Rename] = field(default_factory=list)
    remote_mkdirs: list[str] = field(default_factory=list)
    local_mkdirs: list[tuple[str, str]] = field(default_factory=list)  # (key, local)
    uploads: list[Upload] = field(default_factory=list)
    downloads: list[Download] = field(default_factory=list)
    remote_deletes: list[RemoteDelete] = field(default_factory=list)
    local_deletes: list[LocalDelete] = field(default_factory=list)
    agree: list[Agree] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)  # base rows both sides dropped
    conflicts: list[str] = field(default_factory=list)
    notices: dict[str, str] = field(default_factory=dict)

    @property
    def files_deleted(self) -> int:
        return sum(d.files for d in self.remote_deletes) + sum(d.files for d in self.local_deletes)

    @property
    def empty(self) -> bool:
        return not (
            self.renames
            or self.remote_mkdirs
            or self.local_mkdirs
            or self.uploads
            or self.downloads
            or self.remote_deletes
            or self.local_deletes
        )

    @property
    def bytes_up(self) -> int:
        return sum(u.expect.size for u in self.uploads)

    @property
    def bytes_down(self) -> int:
        return sum(d.remote.size for d in self.downloads)


def _parent(key: str) -> str:
    return key.rpartition("/")[0]


def _leaf(key: str) -> str:
    return key.rpartition("/")[2]


class _Planner:
    def __init__(
        self,
        base: dict[str, BaseEntry],
        scan: Scan,
        remote: dict[str, RemoteEntry],
        platform: Platform,
        rules: IgnoreRules,
        stamp: str,
        host: str,
    ) -> None:
        self.base, self.scan, self.remote = base, scan, remote
        self.local = scan.items
        self.platform, self.rules = platform, rules
        self.stamp, self.host = stamp, host
        self.plan = Plan(notices=dict(scan.notices))
        self.keys = sorted(set(base) | set(self.local) | set(remote))
        self.local_of: dict[str, str] = {}
        self._folded: dict[str, set[str]] | None = None
        self.done: set[str] = set()

    # ---- small predicates ------------------------------------------------------------
    def frozen(self, key: str) -> bool:
        if not self.scan.frozen:
            return False
        k = key
        for _ in range(1000):
            if k in self.scan.frozen:
                return True
            if "/" not in k:
                return False
            k = _parent(k)
        return True

    def subtree(self, key: str) -> list[str]:
        lo = bisect.bisect_left(self.keys, key + "/")
        hi = bisect.bisect_left(self.keys, key + "0")  # '0' is the code point after '/'
        return self.keys[lo:hi]

    def lchanged(self, key: str) -> bool:
        b, item = self.base.get(key), self.local.get(key)
        if b is None or item is None:
            return (b is None) != (item is None)
        return b.kind != item.kind or (b.kind == "file" and b.sha256 != item.sha256)

    def rchanged(self, key: str) -> bool:
        b, r = self.base.get(key), self.remote.get(key)
        if b is None or r is None:
            return (b is None) != (r is None)
        return b.kind != r.kind or (b.kind == "file" and b.sha256 != r.sha256)

    # ---- local names -------------------------------------------------------------------
    def local_path(self, key: str) -> str | None:
        """Where ``key`` lives or will live locally; None when it cannot (reported)."""
        if key in self.local_of:
            return self.local_of[key]
        item = self.local.get(key)
        b = self.base.get(key)
        if item is not None:
            path: str | None = item.local
        elif b is not None and b.local:
            path = b.local
        else:
            parent = _parent(key)
            parent_local = self.local_path(parent) if parent else ""
            if parent_local is None:
                path = None
            else:
                try:
                    name = self.platform.to_local(_leaf(key))
                except Unrepresentable as exc:
                    self.plan.notices[key] = str(exc)
                    path = None
                else:
                    name = self._case_free(parent_local, name, key)
                    path = f"{parent_local}/{name}" if parent_local else name
        self.local_of[key] = path  # type: ignore[assignment]
        return path

    def _case_free(self, parent_local: str, name: str, key: str) -> str:
        """On a case-insensitive file system, a name that would land on an existing one
        gets a suffix instead of overwriting it (and the user is told)."""
        if not self.platform.case_insensitive:
            return name
        if self._folded is None:
            self._folded = {}
            for item in self.local.values():
                d, _, leaf = item.local.rpartition("/")
                self._folded.setdefault(d, set()).add(self.platform.fold(leaf))
            for b in self.base.values():
                if b.local:
                    d, _, leaf = b.local.rpartition("/")
                    self._folded.setdefault(d, set()).add(self.platform.fold(leaf))
        taken = self._folded.setdefault(parent_local, set())
        chosen = name
        for n in range(1, 1000):
            if self.platform.fold(chosen) not in taken:
                break
            chosen = case_conflict_name(name, n)
        taken.add(self.platform.fold(chosen))
        if chosen != name:
            self.plan.notices[key] = (
                f"kept as {chosen!r}: this computer cannot hold names differing only by case"
            )
        return chosen

    def alias(self, key: str, local: str) -> str | None:
        """The local spelling to remember, when it is not the default one."""
        try:
            default = "/".join(self.platform.to_local(p) for p in key.split("/"))
        except Unrepresentable:
            return local
        return None if local == default else local

    # ---- the reconcile ------------------------------------------------------------------
    def run(self) -> Plan:
        for key in self.keys:
            if key in self.done or self.frozen(key):
                continue
            if key not in self.local and self._ignored(key):
                continue
            self.one(key)
        return self.plan

    def _ignored(self, key: str) -> bool:
        r, b = self.remote.get(key), self.base.get(key)
        kind = r.kind if r is not None else (b.kind if b is not None else "file")
        return self.rules.ignored(key, kind == "dir")

    def one(self, key: str) -> None:
        b, item, r = self.base.get(key), self.local.get(key), self.remote.get(key)
        lchg, rchg = self.lchanged(key), self.rchanged(key)
        p = self.plan
        if not lchg and not rchg:
            if (
                b is not None
                and item is not None
                and r is not None
                and b.kind == "file"
                and (b.version, b.size, b.mtime_ns, b.inode)
                != (r.version, item.size, item.mtime_ns, item.inode)
            ):
                p.agree.append(Agree(key, self._record(key, item, r)))
            return
        if lchg and not rchg:
            if item is None:  # deleted here
                assert b is not None
                if b.kind == "dir":
                    self._local_dir_gone(key)
                elif r is not None:
                    p.remote_deletes.append(RemoteDelete(key, "file", r.version, 1))
                else:
                    p.forget.append(key)
            elif b is not None and b.kind != item.kind:
                self._kind_conflict(key, item, r)
            elif item.kind == "dir":
                if r is None:
                    p.remote_mkdirs.append(key)
                else:
                    p.agree.append(Agree(key, BaseEntry("dir", local=self.alias(key, item.local))))
            else:
                p.uploads.append(Upload(key, item.local, r.version if r else None, r is None, item))
            return
        if rchg and not lchg:
            if r is None:  # deleted there
                assert b is not None
                if b.kind == "dir":
                    self._remote_dir_gone(key)
                elif item is not None:
                    p.local_deletes.append(LocalDelete(key, item.local, "file", item, 1))
                else:
                    p.forget.append(key)
            elif b is not None and b.kind != r.kind:
                self._kind_conflict(key, item, r)
            else:
                self._fetch(key, r, item)
            return
        # both sides changed
        if item is None and r is None:
            p.forget.append(key)
        elif item is None:
            assert r is not None
            self._fetch(key, r, None)
        elif r is None:
            if item.kind == "dir":
                p.remote_mkdirs.append(key)
            else:
                p.uploads.append(Upload(key, item.local, None, True, item))
        elif item.kind != r.kind:
            self._kind_conflict(key, item, r)
        elif item.kind == "dir":
            p.agree.append(Agree(key, BaseEntry("dir", local=self.alias(key, item.local))))
        elif item.sha256 and item.sha256 == r.sha256:
            p.agree.append(Agree(key, self._record(key, item, r)))
        else:
            self._file_conflict(key, item, r)

    def _record(self, key: str, item: LocalItem, r: RemoteEntry) -> BaseEntry:
        return BaseEntry(
            "file",
            item.size,
            item.mtime_ns,
            item.inode,
            self.scan.started_ns,
            r.sha256,
            r.version,
            self.alias(key, item.local),
        )

    def _fetch(self, key: str, r: RemoteEntry, item: LocalItem | None) -> None:
        local = self.local_path(key)
        if local is None:
            self.done.update(self.subtree(key))
            return
        if r.kind == "dir":
            if item is None:
                self.plan.local_mkdirs.append((key, local))
            else:
                self.plan.agree.append(Agree(key, BaseEntry("dir", local=self.alias(key, local))))
        else:
            self.plan.downloads.append(Download(key, local, r, item))

    def _conflict_key(self, key: str) -> tuple[str, str]:
        name = conflict_copy_name(_leaf(key), self.stamp, self.host)
        parent = _parent(key)
        ckey = f"{parent}/{name}" if parent else name
        for n in range(2, 100):
            if ckey not in self.remote and ckey not in self.local and ckey not in self.base:
                break
            name = conflict_copy_name(_leaf(key), f"{self.stamp} {n}", self.host)
            ckey = f"{parent}/{name}" if parent else name
        parent_local = self.local_path(parent) if parent else ""
        try:
            local_name = self.platform.to_local(name)
        except Unrepresentable:
            local_name = name
        return ckey, f"{parent_local}/{local_name}" if parent_local else local_name

    def _file_conflict(self, key: str, item: LocalItem, r: RemoteEntry) -> None:
        """Both edited: the server's version keeps the name, ours is set aside as a
        conflicted copy on both sides. Nothing is lost either way."""
        ckey, clocal = self._conflict_key(key)
        self.plan.renames.append(Rename("local", key, ckey, item.local, clocal))
        moved = LocalItem("file", clocal, item.size, item.mtime_ns, item.inode, item.sha256)
        self.plan.uploads.append(Upload(ckey, clocal, None, True, moved))
        self.plan.downloads.append(Download(key, item.local, r, None))
        self.plan.conflicts.append(key)

    def _kind_conflict(self, key: str, item: LocalItem | None, r: RemoteEntry | None) -> None:
        """A file on one side, a folder on the other: the file is set aside."""
        p = self.plan
        if item is not None and item.kind == "file":
            ckey, clocal = self._conflict_key(key)
            p.renames.append(Rename("local", key, ckey, item.local, clocal))
            moved = LocalItem("file", clocal, item.size, item.mtime_ns, item.inode, item.sha256)
            p.uploads.append(Upload(ckey, clocal, None, True, moved))
            if r is not None:
                self._fetch(key, r, None)
            p.conflicts.append(key)
        elif r is not None and r.kind == "file":
            ckey, clocal = self._conflict_key(key)
            p.renames.append(Rename("remote", key, ckey, item.local if item else "", clocal))
            if item is not None:
                p.remote_mkdirs.append(key)
            p.conflicts.append(key)
        else:
            p.notices[key] = "changed from file to folder on both sides; left for the next pass"

    def _local_dir_gone(self, key: str) -> None:
        """Deleted here: delete the server's folder only if nothing under it changed
        there; otherwise keep what changed (the folder comes back with it)."""
        under = self.subtree(key)
        if any(self.rchanged(k) for k in under):
            local = self.local_path(key)
            if local is not None and key in self.remote:
                self.plan.local_mkdirs.append((key, local))
            return
        r = self.remote.get(key)
        if r is None:
            self.plan.forget.append(key)
            return
        files = sum(1 for k in under if k in self.remote and self.remote[k].kind == "file")
        self.plan.remote_deletes.append(RemoteDelete(key, "dir", "", files))
        self.done.update(under)

    def _remote_dir_gone(self, key: str) -> None:
        under = self.subtree(key)
        if any(self.lchanged(k) or self.frozen(k) for k in under):
            item = self.local.get(key)
            if item is not None:
                self.plan.remote_mkdirs.append(key)
            return
        item = self.local.get(key)
        if item is None:
            self.plan.forget.append(key)
            return
        files = [k for k in under if k in self.local and self.local[k].kind == "file"]
        for k in files:
            it = self.local[k]
            self.plan.local_deletes.append(LocalDelete(k, it.local, "file", it, 1))
        dirs = [k for k in under if k in self.local and self.local[k].kind == "dir"]
        for k in sorted(dirs, key=lambda x: x.count("/"), reverse=True):
            self.plan.local_deletes.append(LocalDelete(k, self.local[k].local, "dir", None, 0))
        self.plan.local_deletes.append(LocalDelete(key, item.local, "dir", None, 0))
        self.done.update(under)


def plan(
    base: dict[str, BaseEntry],
    scan: Scan,
    remote: dict[str, RemoteEntry],
    *,
    platform: Platform,
    rules: IgnoreRules,
    stamp: str,
    host: str,
) -> Plan:
    """Decide what to do. ``stamp`` (``YYYY-MM-DD HHMMSS``) and ``host`` name conflict
    copies; local files whose SHA-256 matters must already be hashed (see engine)."""
    return _Planner(base, scan, remote, platform, rules, stamp, host).run()


def needs_hash(
    key: str, item: LocalItem, base: dict[str, BaseEntry], remote: dict[str, RemoteEntry]
) -> bool:
    """Whether deciding about ``key`` needs the local file's SHA-256 now: it changed since
    the base, or the server has a file there to compare with."""
    if item.kind != "file" or item.sha256:
        return False
    r = remote.get(key)
    return key in base or (r is not None and r.kind == "file")
