"""WebDAV locks seen from the files layer: the rules that match a lock to a path, the
check every write makes, and the Client's own view of its locks.

Three parts, all about the rows of ``dav_locks`` (one Client's, R-STORE-3):

- **The matching rules** (``normalize_root``, ``lineage``, ``covers``, ``lock_conflicts``,
  ``write_conflicts``, ``locks_around``): RFC 4918 §7 as WsgiDAV applies it, on WsgiDAV's
  lock dictionaries. The WebDAV adapter (``server/dav/locks.py``), which grants and
  enforces locks for WebDAV clients, imports them from here, so a lock means the same
  on every protocol: one implementation.
- **The write check** (``check_write``): every other way of writing (REST, the web UI,
  tus, public upload links, and through the API the Software) asks it, in the
  transaction that commits the write, whether a live lock forbids the write. A
  document someone has open in Word or LibreOffice is not overwritten, deleted or moved
  behind their back by another user or program: the users a Client lets into its space
  work on the same files (R-SHARE-1) through the Software, the web and WebDAV alike
  (R-STORE-2), so a lock taken through one must hold through all, or a colleague's
  work is silently overwritten. The answer is 423 naming the lock and what to do.
- **The Client's view** (``client_locks``, ``break_lock``): who may see and break which
  lock (REST ``/api/v1/locks``, the page ``/admin/locks``), and the audit event.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from defusedxml.ElementTree import ParseError
from defusedxml.ElementTree import fromstring as parse_xml
from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    bindparam,
    delete,
    exists,
    false,
    func,
    or_,
    select,
)

from allset.core.errors import NotFound, ResourceLocked
from allset.core.paths import RemotePath
from allset.core.principal import Principal
from allset.db.engine import Database
from allset.db.models import DavLock, Tenant, utcnow
from allset.db.prepared import Prepared
from allset.files.sql import record_event

Lock = dict[str, Any]
"""WsgiDAV's lock dictionary: root, type, scope, depth, owner (XML bytes), principal,
timeout (seconds granted), expire (epoch seconds), token."""

_L = DavLock.__table__.c
LOCK_COLUMNS = (
    _L.token,
    _L.root,
    _L.lock_type,
    _L.scope,
    _L.depth,
    _L.owner,
    _L.principal,
    _L.timeout,
    _L.expires_at,
)


# ---- the matching rules (pure) --------------------------------------------------------
def normalize_root(url: str) -> str:
    """WsgiDAV's ``normalize_lock_root``: ``/`` + the URL without leading or trailing
    slashes, the form in which ``root`` is stored."""
    if not url:
        raise ValueError("a lock root cannot be empty")
    return "/" + url.strip("/")


def parent_url(url: str) -> str | None:
    """WsgiDAV's ``get_uri_parent``: the parent collection with a trailing slash, or
    None for the top."""
    if not url or url.strip() == "/":
        return None
    return url.rstrip("/").rsplit("/", 1)[0] + "/"


def is_child_url(parent: str, child: str) -> bool:
    """WsgiDAV's ``is_child_uri``: ``child`` is strictly below ``parent`` (``/a/bc`` is
    not below ``/a/b``)."""
    return bool(parent) and bool(child) and child.rstrip("/").startswith(parent.rstrip("/") + "/")


def root_of(path: RemotePath) -> str:
    """The lock root WsgiDAV stores for ``path`` (its resources' ``get_ref_url``: the
    path percent-encoded with ``quote``, normalised)."""
    return normalize_root(quote("/" + "/".join(path.parts)))


def root_hash(root: str) -> str:
    """The indexed stand-in for a normalised root (128 bits of its SHA-256)."""
    return hashlib.sha256(root.encode()).hexdigest()[:32]


def lineage(url: str) -> list[str]:
    """``url`` normalised, then each of its parents up to ``/``: the roots of the locks
    that may cover it (as WsgiDAV's ``LockManager`` walks them)."""
    roots: list[str] = []
    u: str | None = url
    while u:
        roots.append(normalize_root(u))
        u = parent_url(u)
    return roots


def covers(lock: Lock, url: str) -> bool:
    """A lock on ``url`` itself, or a depth-infinity lock on one of its parents."""
    root = lock["root"]
    return bool(root == url or (lock["depth"] == "infinity" and is_child_url(root, url)))


def lock_conflicts(locks: Iterable[Lock], url: str, scope: str, depth: str) -> list[str]:
    """Roots of the locks that forbid a new ``scope``/``depth`` lock on ``url``: WsgiDAV's
    ``LockManager._check_lock_permission`` rules (RFC 4918 §7). A lock covering ``url``
    conflicts unless both are shared; with depth infinity, any lock below ``url`` does."""
    hrefs = []
    for lock in locks:
        if covers(lock, url):
            if lock["scope"] == "shared" and scope == "shared":
                continue
            hrefs.append(lock["root"])
        elif depth == "infinity" and is_child_url(url, lock["root"]):
            hrefs.append(lock["root"])
    return hrefs


def write_conflicts(
    locks: Iterable[Lock],
    url: str,
    depth: str,
    token_list: Iterable[str],
    principal: str,
    *,
    below_passes: bool = False,
) -> list[str]:
    """Roots of the locks that forbid writing ``url``: WsgiDAV's
    ``LockManager._get_write_conflicts`` rules. A lock covering ``url`` is passed only by
    its owner *with* its token in the request (RFC 4918 §7.4: the same user's other
    program must not write); with depth infinity, any lock below ``url`` forbids it.

    ``below_passes``: a lock below ``url`` is passed the same way as one covering it.
    WsgiDAV refuses it whatever the tokens, because its DELETE and MOVE of a folder then
    go member by member, each checked with its own token; a folder deleted or moved in
    one step (the API) has no such second pass."""
    tokens = set(token_list)
    hrefs = []
    for lock in locks:
        held = principal == lock["principal"] and lock["token"] in tokens
        if covers(lock, url):
            if held:
                continue
            hrefs.append(lock["root"])
        elif depth == "infinity" and is_child_url(url, lock["root"]):
            if held and below_passes:
                continue
            hrefs.append(lock["root"])
    return hrefs


# ---- the locks near a path (one query) ------------------------------------------------
def as_lock(row: Any) -> Lock:
    return {
        "token": row.token,
        "root": row.root,
        "type": row.lock_type,
        "scope": row.scope,
        "depth": row.depth,
        "owner": bytes(row.owner),
        "principal": row.principal,
        "timeout": float(row.timeout),
        "expire": row.expires_at.timestamp(),
    }


def select_locks(
    conn: Connection,
    tenant_id: str,
    roots: list[str],
    under: str | None,
    now: datetime | None = None,
) -> list[Lock]:
    """Live locks of one Client rooted at one of ``roots`` or strictly below ``under``.
    The index finds the first by ``root_hash``; the second compares a prefix of ``root``
    (``substr``: bytewise on both engines, whatever the collation, and ``LIKE`` would
    need escaping of the ``%`` every quoted URL has) among the Client's live locks. Both
    are checked again on the text itself."""
    wanted = set(roots)
    prefix = under.rstrip("/") + "/" if under is not None else None
    found: list[ColumnElement[bool]] = []
    if roots:
        found.append(_L.root_hash.in_([root_hash(r) for r in roots]))
    if prefix is not None:
        found.append(func.substr(_L.root, 1, len(prefix)) == prefix)
    rows = conn.execute(
        select(*LOCK_COLUMNS).where(
            _L.tenant_id == tenant_id,
            _L.expires_at > (now or utcnow()),
            or_(*found),
        )
    )
    return [
        as_lock(row)
        for row in rows
        if row.root in wanted or (under is not None and is_child_url(under, row.root))
    ]


def around(locks: Iterable[Lock], root: str, *, below: bool) -> list[Lock]:
    """Of ``locks``, those on ``root`` or one of its parents, and if ``below`` those
    under it, ordered as WsgiDAV would meet them: ``root``, its parents upwards, then
    those below."""
    order = {r: i for i, r in enumerate(lineage(root))}
    near = [lk for lk in locks if lk["root"] in order or (below and is_child_url(root, lk["root"]))]
    return sorted(near, key=lambda lk: order.get(lk["root"], len(order)))


def locks_around(
    conn: Connection, tenant_id: str, root: str, *, below: bool, now: datetime | None = None
) -> list[Lock]:
    """The live locks on ``root`` and on each of its parents, and if ``below`` those
    under it: everything a check of ``root`` needs, in one query (``around``)."""
    locks = select_locks(conn, tenant_id, lineage(root), root if below else None, now)
    return around(locks, root, below=below)


# ---- the write check ------------------------------------------------------------------
_TOKEN = re.compile(r"<\s*(opaquelocktoken:[^>\s]+)\s*>", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class LockProof:
    """What a write request presents against WebDAV locks: the lock tokens of its
    RFC 4918 ``If`` header. ``checked``: the WebDAV adapter, where WsgiDAV has already
    applied the same rules (and answers in WebDAV's own form); nothing is checked again."""

    tokens: frozenset[str] = frozenset()
    checked: bool = False


NO_TOKENS = LockProof()
"""A request that presents no lock token: any live lock covering the path refuses it."""
DAV_CHECKED = LockProof(checked=True)
"""For the WebDAV adapter's calls through WsgiDAV, which enforced the locks itself."""


def proof_from_if(header: str | None) -> LockProof:
    """The lock tokens of an ``If`` header (RFC 4918 §10.4), e.g.
    ``(<opaquelocktoken:…>)`` or ``<https://host/dav/doc> (<opaquelocktoken:…>)``. Only
    the tokens matter here: a write passes a lock when its holder presents its token,
    as in WebDAV; entity tags and resource tags are left to the other headers."""
    if not header:
        return NO_TOKENS
    tokens = frozenset(_TOKEN.findall(header))
    return LockProof(tokens) if tokens else NO_TOKENS


FEW_LOCKS = 200
"""Up to this many live locks, a write's check reads them all at once (one prepared
statement: ~20 us on SQLite, where the query by path, built anew for each path, costs
~0.4 ms) and matches them in Python; a Client holding more is asked by path."""
_LIVE_LOCKS = Prepared(
    select(*LOCK_COLUMNS)
    .where(_L.tenant_id == bindparam("tenant_id"), _L.expires_at > bindparam("now"))
    .limit(FEW_LOCKS + 1)
)
_ANY_LIVE_LOCK = exists().where(
    _L.tenant_id == bindparam("tenant_id"), _L.expires_at > bindparam("now")
)
_ANY_LIVE = Prepared(select(_ANY_LIVE_LOCK))


def has_live_locks(db: Database, tenant_id: str) -> bool:
    """Whether the Client holds any unexpired lock: one indexed probe, run before each
    WebDAV PUT that could bypass WsgiDAV (``server/dav/app.py``, ``DavFront._native``)."""
    with db.read_conn() as conn:
        return bool(_ANY_LIVE.run(conn, {"tenant_id": tenant_id, "now": utcnow()}).scalar())


# SQLite: the write transaction holds the database's write lock (BEGIN IMMEDIATE), so no
# LOCK can be granted between the check and the commit. PostgreSQL: this probe takes the
# Client's row FOR KEY SHARE, which waits for a LOCK being granted (it holds that row FOR
# UPDATE: server/dav/locks.py) and keeps any other from being granted until this write
# commits; it does not block the Client's other writers (their UPDATE of the row takes a
# weaker lock than FOR UPDATE, which KEY SHARE does not conflict with).
_PROBE_PG = Prepared(
    select(_ANY_LIVE_LOCK)
    .select_from(Tenant)
    .where(Tenant.id == bindparam("tenant_id"))
    .with_for_update(key_share=True, of=Tenant)
)


def check_write(
    conn: Connection,
    p: Principal,
    proof: LockProof,
    path: RemotePath,
    *,
    subtree: bool = False,
) -> list[Lock]:
    """Raise ``ResourceLocked`` (423) if a live WebDAV lock forbids ``p`` to write
    ``path`` now: a lock on ``path`` or a depth-infinity lock on a parent, unless ``p``
    holds it and ``proof`` presents its token (WsgiDAV's rule, ``write_conflicts``);
    with ``subtree`` (deleting, moving or replacing a folder) any lock below it too.

    Call it inside the write's own transaction, after access and existence checks (a
    path ``p`` may not see is 404, never "locked"). Costs one indexed query, a prepared
    statement reading the Client's live locks (on PostgreSQL one more, the probe that
    also takes the Client's row); expired locks never count.
    Returns the locks it found on or below ``path`` that ``p`` passed (see
    ``release_passed``)."""
    if proof.checked:
        return []
    now = utcnow()
    params = {"tenant_id": p.tenant_id, "now": now}
    if conn.dialect.name != "sqlite" and not _PROBE_PG.run(conn, params).scalar():
        return []
    live = [as_lock(row) for row in _LIVE_LOCKS.run(conn, params).all()]
    if not live:
        return []
    depth = "infinity" if subtree else "0"
    passed: list[Lock] = []
    for url in spellings(path):
        if len(live) > FEW_LOCKS:
            locks = locks_around(conn, p.tenant_id, url, below=subtree, now=now)
        else:
            locks = around(live, url, below=subtree)
        hrefs = write_conflicts(locks, url, depth, proof.tokens, p.email, below_passes=True)
        if hrefs:
            blocking = next(lk for lk in locks if lk["root"] == hrefs[0])
            raise locked_error(p, path, blocking, url)
        passed += [lk for lk in locks if lk["root"] == url or is_child_url(url, lk["root"])]
    return passed


def spellings(path: RemotePath) -> list[str]:
    """The lock roots ``path`` may have been locked under. Names are stored NFC
    (core/paths.py), and so are the roots of locks taken since the WebDAV provider keys
    them by the stored path (``server/dav/provider.py``, ``get_ref_url``); before that,
    WsgiDAV kept a root as the client spelled it, and macOS sends NFD. Such a lock lives
    until its timeout (four weeks at most), so both spellings are still looked for."""
    nfc = root_of(path)
    nfd = root_of(RemotePath(tuple(unicodedata.normalize("NFD", n) for n in path.parts)))
    return [nfc] if nfd == nfc else [nfc, nfd]


def release_passed(conn: Connection, tenant_id: str, passed: list[Lock]) -> None:
    """Drop the locks of a resource its holder deleted or moved away through the API
    with the token, as WebDAV's DELETE and MOVE do (RFC 4918 §9.6.1, §9.9.1): kept,
    they would refuse a new file of that name until they expire."""
    if passed:
        tokens = [lk["token"] for lk in passed]
        conn.execute(delete(DavLock).where(_L.tenant_id == tenant_id, _L.token.in_(tokens)))


def locked_error(p: Principal, path: RemotePath, lock: Lock, url: str) -> ResourceLocked:
    """The 423 for a write refused by ``lock``: which path is locked, by whom (the
    ``<owner>`` its client wrote; the account too when ``p`` may see it, as in
    ``client_locks``), until when, the lock's id, and what to do. Only ever a lock of
    ``p``'s own Client (the query is scoped to it: R-STORE-3). ``url``: the spelling of
    ``path`` the lock was found under."""
    locked_path = unicodedata.normalize("NFC", unquote(lock["root"])) or "/"
    owner = _owner_text(lock["owner"])
    user = lock["principal"] if (p.is_manager or p.email == lock["principal"]) else None
    holder = owner or user or "a WebDAV client"
    until = datetime.fromtimestamp(lock["expire"], UTC)
    if locked_path == str(path):
        what = f"{path} is locked"
    elif is_child_url(lock["root"], url):
        what = f"{path} is inside {locked_path}, which is locked"
    else:
        what = f"{path} contains {locked_path}, which is locked"
    return ResourceLocked(
        f"{what} by {holder} until {until:%Y-%m-%d %H:%M} UTC (a document open in an "
        "editor such as Word or LibreOffice). Close the document or wait; an owner or "
        "admin can break the lock.",
        path=str(path),
        lock_path=locked_path,
        lock_owner=owner,
        lock_user=user,
        lock_scope=lock["scope"],
        lock_depth=lock["depth"],
        lock_expires_at=until.isoformat(),
        lock_id=lock_id(lock["token"]),
    )


# ---- the Client's view ----------------------------------------------------------------
_COLUMNS = (
    _L.token,
    _L.root,
    _L.scope,
    _L.depth,
    _L.owner,
    _L.principal,
    _L.created_at,
    _L.expires_at,
)


def lock_id(token: str) -> str:
    """The id a lock is listed and broken by. Not the token: the token is the holder's
    proof when it writes (RFC 4918 §6.5), so it stays with the holder."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def _owner_text(owner: bytes) -> str:
    """What the client put in ``<owner>`` (usually its user name, or an ``<href>``), as
    text: tags dropped, at most 200 characters."""
    raw = bytes(owner)
    try:
        text = " ".join(t.strip() for t in parse_xml(raw).itertext() if t.strip())
    except (ParseError, ValueError):  # defusedxml refuses entities with a ValueError
        text = raw.decode("utf-8", "replace")
    return text[:200]


def _lock_view(row: Any) -> dict[str, Any]:
    return {
        "id": lock_id(row.token),
        "path": unquote(row.root) or "/",
        "scope": row.scope,
        "depth": row.depth,
        "user": row.principal,
        "owner": _owner_text(row.owner),
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat(),
    }


def _visible(p: Principal) -> ColumnElement[bool]:
    """Owners and admins see every lock of their Client; a member only the locks taken
    with their own credentials (the paths of the others may be outside their grants).
    Operators see none: lock paths are Client data (R-STORE-6)."""
    if p.is_operator or not p.tenant_id:
        return false()
    mine = _L.tenant_id == p.tenant_id
    return mine if p.is_manager else and_(mine, _L.principal == p.email)


def client_locks(db: Database, p: Principal) -> list[dict[str, Any]]:
    """The live WebDAV locks ``p`` may see, oldest first."""
    with db.read_conn() as conn:
        rows = conn.execute(
            select(*_COLUMNS)
            .where(_visible(p), _L.expires_at > utcnow())
            .order_by(_L.created_at, _L.token)
        ).all()
    return [_lock_view(r) for r in rows]


def break_lock(db: Database, p: Principal, lock: str) -> dict[str, Any]:
    """Remove a lock whose holder is gone (an editor that crashed keeps a document
    locked until the lock's timeout, up to weeks). The holder's next write with the
    token gets 412 and other users may write again. Recorded as a ``lock.break`` event
    (not in the change feed). A lock ``p`` may not see is NotFound, like a missing one."""
    with db.write_conn() as conn:
        rows = conn.execute(select(*_COLUMNS).where(_visible(p), _L.expires_at > utcnow())).all()
        row = next((r for r in rows if lock_id(r.token) == lock), None)
        if row is None:
            raise NotFound("No such lock: it was released, has expired or was never here.")
        conn.execute(delete(DavLock).where(_L.tenant_id == p.tenant_id, _L.token == row.token))
        view = _lock_view(row)
        record_event(
            conn,
            tenant_id=p.tenant_id,
            actor=p.email,
            kind="lock.break",
            node_id="",
            path=view["path"],
            detail={"holder": view["user"], "scope": view["scope"], "depth": view["depth"]},
        )
    return view
