"""Public links (R-SHARE-2..5): the policy behind ``/s/{token}``, the links API and the
``allset share`` / ``allset-server link`` commands.

Where it sits: part of the ``files`` façade. The adapters (``server/links/``, the CLIs)
parse and render; every decision is taken here: who may create what, how long a link
lives, whether a request may be served (revoked, expired, suspended, exhausted),
counting downloads and bytes, the per-Client traffic threshold, the guessing throttle
and the password throttle.

Choices, and why:

* A token is 32 URL-safe characters (192 random bits). Only its SHA-256 is stored: the
  token is as strong as a key, so a fast hash cannot be reversed, and a lookup is one
  indexed equality (no timing oracle: the database compares hashes, not the token).
  The URL is therefore shown once, at creation, like an app password.
* Every check reads the database on every request (no cache), so a revocation, a
  takedown or a Client's suspension acts on the very next request, from any process.
* A download counts when a whole-file (or zip) download *starts* (a request without
  ``Range``); the count is taken with one conditional UPDATE, so two visitors racing for
  the last download cannot both get it. Range requests (resumptions) do not count.
* A link acts with its creator's rights: reads and drop uploads go through
  ``FileService`` as that user, so a link never reaches more than its creator can, and
  a removed (or disabled) creator's links stop working.
* The guessing throttle, the password throttle and the per-Client daily link traffic
  are kept in process memory, like the sign-in throttle (one server process; see the
  README's design notes).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from allset.accounts.hashing import DUMMY_HASH, hash_secret, verify_secret
from allset.accounts.throttle import GuessThrottle, LoginThrottle
from allset.core.errors import AllsetError, Gone, InvalidInput, NotFound, TooManyAttempts
from allset.core.ids import is_id, new_id, new_secret
from allset.core.paths import RemotePath, normalise_name, parse_path
from allset.core.principal import Principal
from allset.core.shared_table import SharedTable
from allset.db.models import Event, Link, LinkTraffic, Node, Tenant, User
from allset.files.service import FileService
from allset.observability import REGISTRY

log = logging.getLogger("allset.links")

TOKEN_CHARS = 32  # new_secret(24): ~192 random bits
HINT_CHARS = 6
ACCESS_SECONDS = 3600  # a password-unlocked link stays unlocked this long (cookie)
GUESS_WINDOW = 60.0  # R-SHARE-3: more than GUESS_LIMIT misses per IP in this window...
GUESS_LIMIT = 20
GUESS_BLOCK = 300.0  # ...blocks that IP's /s/ requests for this long

LINK_MISSES = Counter(
    "allset_link_token_misses", "Requests for unknown link tokens (R-SHARE-3)", registry=REGISTRY
)
LINK_GUESS_BLOCKS = Counter(
    "allset_link_guess_blocks", "IPs blocked for guessing link tokens", registry=REGISTRY
)
LINK_DOWNLOADS = Counter(
    "allset_link_downloads", "Downloads started through public links", ["tenant"], registry=REGISTRY
)
LINK_BYTES = Counter(
    "allset_link_bytes_sent", "Bytes served through public links", ["tenant"], registry=REGISTRY
)
LINK_BYTES_TODAY = Gauge(
    "allset_link_bytes_today",
    "Bytes served through a Client's public links this UTC day",
    ["tenant"],
    registry=REGISTRY,
    # The day's total from the database, set by whichever process served last.
    multiprocess_mode="mostrecent",
)
LINK_OVER_THRESHOLD = Counter(
    "allset_link_threshold_exceeded",
    "Times a Client went over its daily link traffic threshold (R-SHARE-5)",
    ["tenant"],
    registry=REGISTRY,
)
LINK_THROTTLED = Counter(
    "allset_link_throttled_downloads",
    "Link downloads served at the throttled rate (R-SHARE-5)",
    ["tenant"],
    registry=REGISTRY,
)


class LinkUnavailable(AllsetError):
    """R-SHARE-4 / R-OPS-1: taken down by the operator, or the Client is suspended. The
    public page says no more than that (neutral)."""

    status = 451
    title = "Unavailable for legal reasons"
    slug = "link-unavailable"


class LinkNotFound(NotFound):
    """Unknown, revoked, or its file is gone: one answer for all (nothing to learn)."""

    slug = "link-not-found"


class LinkGone(Gone):
    """Expired, or its download limit reached (410, documented)."""

    slug = "link-gone"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def looks_like_token(value: str) -> bool:
    return len(value) == TOKEN_CHARS and is_id(value[:32])


@dataclass(frozen=True, slots=True)
class Resolved:
    """A link that may be served now, and what serving it needs."""

    id: str
    tenant_id: str
    tenant_name: str
    kind: str  # download | drop
    is_file: bool
    root: RemotePath  # the shared file or folder, where it is now
    name: str
    acting: Principal  # the creator: every read and write goes through FileService as them
    password_hash: str | None
    max_downloads: int | None
    downloads: int
    link_bytes_per_day: int | None


class LinkService:
    """Public links of every Client. Blocking methods: adapters call them in a thread."""

    def __init__(
        self,
        files: FileService,
        key_path: Path,
        *,
        default_days: int = 7,
        max_days: int = 90,
        link_bytes_per_day: int = 0,
        clock: Callable[[], datetime] | None = None,
        throttles: SharedTable | None = None,
    ) -> None:
        self.files = files
        self.db = files.db
        self.key_path = key_path
        self.default_days = default_days
        self.max_days = max_days
        self.server_bytes_per_day = link_bytes_per_day  # 0 = no threshold
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.guesses = GuessThrottle(GUESS_LIMIT, GUESS_WINDOW, GUESS_BLOCK, table=throttles)
        # R-SHARE-2 password throttle: per link+IP and per IP (LoginThrottle's keys), and
        # per link from anywhere (a distributed guesser), with doubling backoff; in the
        # data dir's shared table when given, so every server process counts the same.
        self.pw_throttle = LoginThrottle(5, 30, 900.0, table=throttles, scope="link-pw")
        self.pw_link_throttle = LoginThrottle(
            20, 10**9, 900.0, table=throttles, scope="link-pw-any"
        )
        self._key: bytes | None = None

    # ---- the signing key (password cookies) ----------------------------------------
    def key(self) -> bytes:
        """A server secret in the data dir (mode 0600), made on first use: cookies stay
        valid across restarts and never depend on anything in the repository."""
        if self._key is None:
            path = self.key_path
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(secrets.token_bytes(32))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            self._key = path.read_bytes()
        return self._key

    # ---- the Client's side -----------------------------------------------------------
    def create(
        self,
        p: Principal,
        path: str | RemotePath,
        *,
        expires_at: datetime | None = None,
        expires_in: timedelta | None = None,
        password: str | None = None,
        max_downloads: int | None = None,
        drop: bool = False,
    ) -> tuple[dict[str, Any], str]:
        """A new link and its token (shown once). R-SHARE-2: the expiry is required —
        default ``default_days`` — and at most ``max_days`` away."""
        rp = path if isinstance(path, RemotePath) else parse_path(path)
        entry = self.files.stat(p, rp)  # 404 for the operator and for what is not there
        now = self.clock()
        if expires_at is not None and expires_in is not None:
            raise InvalidInput("Give expires_at or expires_in, not both.")
        if expires_in is not None:
            expires_at = now + expires_in
        if expires_at is None:
            expires_at = now + timedelta(days=self.default_days)
        if expires_at.tzinfo is None:
            raise InvalidInput("expires_at has no time zone; add one, e.g. +01:00.")
        if expires_at <= now:
            raise InvalidInput("The expiry is in the past; choose a later date or duration.")
        if expires_at > now + timedelta(days=self.max_days, minutes=1):
            raise InvalidInput(
                f"A link may last at most {self.max_days} days on this plan; choose an "
                "earlier expiry.",
                max_days=self.max_days,
            )
        if max_downloads is not None and not 1 <= max_downloads <= 1_000_000_000:
            raise InvalidInput("max_downloads must be between 1 and 1,000,000,000.")
        if password is not None and not 1 <= len(password) <= 1024:
            raise InvalidInput("A link password has 1 to 1,024 characters.")
        if drop and entry.kind != "dir":
            raise InvalidInput(f"{rp} is a file; a drop link (upload only) needs a folder.")
        if drop and max_downloads is not None:
            raise InvalidInput("A drop link receives files; max_downloads does not apply.")
        token = new_secret(24)  # never starts with "-": operators paste it on a command line
        link = Link(
            id=new_id(),
            tenant_id=p.tenant_id,
            node_id=entry.id,
            token_hash=token_hash(token),
            token_hint=token[:HINT_CHARS],
            kind="drop" if drop else "download",
            created_by=p.id,
            created_at=now,
            expires_at=expires_at,
            password_hash=hash_secret(password) if password else None,
            max_downloads=max_downloads,
            downloads=0,
            bytes_served=0,
            uploads=0,
            suspended_reason="",
            suspended_by="",
        )
        with self.db.write() as s:
            s.add(link)
            s.add(
                Event(
                    tenant_id=p.tenant_id,
                    actor=p.email,
                    kind="link.create",
                    node_id=entry.id,
                    path=str(rp),
                    detail={"link": link.id, "kind": link.kind, "expires": expires_at.isoformat()},
                )
            )
            s.flush()
            view = self._view(s, link, creator_email=p.email)
        return view, token

    def _visible(self, p: Principal) -> Any:
        """Owners and admins see all of their Client's links, members their own."""
        cond = Link.tenant_id == p.tenant_id
        if not p.is_manager:
            cond = cond & (Link.created_by == p.id)
        return cond

    def list_mine(self, p: Principal) -> list[dict[str, Any]]:
        self.files._writable(p)
        with self.db.read() as s:
            links = s.scalars(select(Link).where(self._visible(p)).order_by(Link.created_at))
            return [self._view(s, link) for link in links]

    def _mine(self, s: Session, p: Principal, link_id: str) -> Link:
        self.files._writable(p)
        link = (
            s.scalar(select(Link).where(Link.id == link_id, self._visible(p)))
            if is_id(link_id)
            else None
        )
        if link is None:  # another Client's link is exactly as absent as none (R-STORE-3)
            raise NotFound(f"No link {link_id!r}; `allset share list` shows yours.")
        return link

    def get(self, p: Principal, link_id: str) -> dict[str, Any]:
        with self.db.read() as s:
            return self._view(s, self._mine(s, p, link_id))

    def revoke(self, p: Principal, link_id: str) -> dict[str, Any]:
        """R-SHARE-2: the Client withdraws a link; the next request gets 404."""
        with self.db.write() as s:
            link = self._mine(s, p, link_id)
            if link.revoked_at is None:
                link.revoked_at = self.clock()
                s.add(
                    Event(
                        tenant_id=link.tenant_id,
                        actor=p.email,
                        kind="link.revoke",
                        node_id=link.node_id,
                        detail={"link": link.id},
                    )
                )
            return self._view(s, link)

    def _node_path(self, s: Session, tenant_id: str, node_id: str) -> RemotePath | None:
        """Where the node is now, or None when it (or a folder above it) is in the trash
        or gone: a link follows its file through moves and dies with it."""
        parts: list[str] = []
        current: str | None = node_id
        for _ in range(10_000):  # bounded: a cycle would be a bug, not a hang
            if current is None:
                return RemotePath(tuple(reversed(parts)))
            row = s.execute(
                select(Node.parent_id, Node.name, Node.trashed_at).where(
                    Node.id == current, Node.tenant_id == tenant_id
                )
            ).first()
            if row is None or row.trashed_at is not None:
                return None
            if row.parent_id is not None:
                parts.append(row.name)
            current = row.parent_id
        return None

    def _state(self, link: Link, tenant_suspended: bool = False) -> str:
        now = self.clock()
        if link.revoked_at is not None:
            return "revoked"
        if link.suspended_at is not None or tenant_suspended:
            return "suspended"
        if link.expires_at <= now:
            return "expired"
        if link.max_downloads is not None and link.downloads >= link.max_downloads:
            return "exhausted"
        return "active"

    def _view(self, s: Session, link: Link, creator_email: str | None = None) -> dict[str, Any]:
        path = self._node_path(s, link.tenant_id, link.node_id)
        node_kind = s.scalar(select(Node.kind).where(Node.id == link.node_id))
        if creator_email is None:
            creator_email = s.scalar(select(User.email).where(User.id == link.created_by)) or ""
        return {
            "id": link.id,
            "token_hint": link.token_hint,
            "path": str(path) if path is not None else None,
            "type": "folder" if node_kind == "dir" else "file",
            "kind": link.kind,
            "state": self._state(link),
            "created_at": link.created_at.isoformat(),
            "created_by": creator_email,
            "expires": link.expires_at.isoformat(),
            "password": link.password_hash is not None,
            "max_downloads": link.max_downloads,
            "downloads": link.downloads,
            "bytes": link.bytes_served,
            "uploads": link.uploads,
            "revoked_at": link.revoked_at.isoformat() if link.revoked_at else None,
            "suspended": link.suspended_at is not None,
            "suspended_at": link.suspended_at.isoformat() if link.suspended_at else None,
            "suspended_reason": link.suspended_reason or None,
        }

    # ---- the operator's side (R-SHARE-4, R-SHARE-5, R-OPS-4) -------------------------
    def _find(self, s: Session, ref: str) -> Link:
        """A link by its token (or its URL) or by its id."""
        ref = ref.strip().rstrip("/")
        if "/s/" in ref:
            ref = ref.split("/s/", 1)[1].split("/", 1)[0]
        link = None
        if looks_like_token(ref):
            link = s.scalar(select(Link).where(Link.token_hash == token_hash(ref)))
        if link is None and is_id(ref):
            link = s.scalar(select(Link).where(Link.id == ref))
        if link is None:
            raise NotFound(f"No link with token or id {ref[:40]!r}.")
        return link

    def _operator(self, p: Principal | None) -> str:
        if p is not None and not p.is_operator:
            raise NotFound("Not found.")  # a Client never learns these routes exist
        return p.email if p is not None else "operator-cli"

    def suspend(self, ref: str, reason: str, p: Principal | None = None) -> dict[str, Any]:
        """R-SHARE-4 takedown: effective on the next request (no cache); who, when and
        why are recorded in the events table (R-OPS-4) and shown to the Client."""
        actor = self._operator(p)
        if not reason.strip():
            raise InvalidInput("A takedown needs a reason (--reason); it is recorded.")
        with self.db.write() as s:
            link = self._find(s, ref)
            link.suspended_at = self.clock()
            link.suspended_reason = reason.strip()[:4000]
            link.suspended_by = actor
            s.add(
                Event(
                    tenant_id=link.tenant_id,
                    actor=actor,
                    kind="link.suspend",
                    node_id=link.node_id,
                    detail={"link": link.id, "reason": link.suspended_reason},
                )
            )
            return self._operator_view(s, link)

    def resume(self, ref: str, p: Principal | None = None) -> dict[str, Any]:
        actor = self._operator(p)
        with self.db.write() as s:
            link = self._find(s, ref)
            was = link.suspended_reason
            link.suspended_at = None
            link.suspended_reason = ""
            link.suspended_by = ""
            s.add(
                Event(
                    tenant_id=link.tenant_id,
                    actor=actor,
                    kind="link.resume",
                    node_id=link.node_id,
                    detail={"link": link.id, "was": was},
                )
            )
            return self._operator_view(s, link)

    def _operator_view(self, s: Session, link: Link) -> dict[str, Any]:
        """What the operator sees: counters and state, and the Client, not the path or
        name (R-STORE-6: the operator does not look into Client data unprompted)."""
        tenant = s.get(Tenant, link.tenant_id)
        return {
            "id": link.id,
            "tenant": tenant.name if tenant else "",
            "token_hint": link.token_hint,
            "kind": link.kind,
            "state": self._state(link, tenant is not None and tenant.status == "suspended"),
            "created_at": link.created_at.isoformat(),
            "expires": link.expires_at.isoformat(),
            "downloads": link.downloads,
            "bytes": link.bytes_served,
            "uploads": link.uploads,
            "suspended_at": link.suspended_at.isoformat() if link.suspended_at else None,
            "suspended_reason": link.suspended_reason or None,
            "suspended_by": link.suspended_by or None,
        }

    def find(self, ref: str, p: Principal | None = None) -> dict[str, Any]:
        """One link as the operator sees it, by token, URL or id (404 otherwise)."""
        self._operator(p)
        with self.db.read() as s:
            return self._operator_view(s, self._find(s, ref))

    def list_all(
        self, tenant: str | None = None, p: Principal | None = None
    ) -> list[dict[str, Any]]:
        self._operator(p)
        with self.db.read() as s:
            q = select(Link).order_by(Link.created_at)
            if tenant is not None:
                tid = s.scalar(select(Tenant.id).where(Tenant.name == tenant))
                if tid is None:
                    raise NotFound(f"No Client named {tenant!r}.")
                q = q.where(Link.tenant_id == tid)
            return [self._operator_view(s, link) for link in s.scalars(q)]

    def history(self, ref: str, p: Principal | None = None) -> list[dict[str, Any]]:
        """The audit trail of one link (R-OPS-4): creation, revocation, takedowns."""
        self._operator(p)
        with self.db.read() as s:
            link = self._find(s, ref)
            rows = s.scalars(
                select(Event)
                .where(Event.tenant_id == link.tenant_id, Event.kind.like("link.%"))
                .order_by(Event.id)
            )
            return [
                {"at": e.at.isoformat(), "kind": e.kind, "actor": e.actor, "detail": e.detail}
                for e in rows
                if e.detail.get("link") == link.id
            ]

    def set_tenant_threshold(
        self, tenant: str, bytes_per_day: int | None, actor: str
    ) -> int | None:
        """R-SHARE-5: above this many bytes per UTC day through its links, a Client's link
        downloads are throttled and the operator alerted. None: the server setting."""
        if bytes_per_day is not None and bytes_per_day < 0:
            raise InvalidInput("The link traffic threshold must be >= 0 (0 = unlimited).")
        with self.db.write() as s:
            t = s.scalar(select(Tenant).where(Tenant.name == tenant))
            if t is None:
                raise NotFound(f"No Client named {tenant!r}; `allset-server tenant list`.")
            t.link_bytes_per_day = bytes_per_day
            s.add(
                Event(
                    tenant_id=t.id,
                    actor=actor,
                    kind="tenant.link-limit",
                    detail={"bytes_per_day": bytes_per_day},
                )
            )
        return bytes_per_day

    # ---- serving (the public side) -------------------------------------------------
    def _guessing(self, wait: float) -> TooManyAttempts:
        return TooManyAttempts(
            "Too many requests for unknown links from your address; wait and retry.",
            retry_after=math.ceil(wait),
        )

    def resolve(self, token: str, ip: str) -> Resolved:
        """The link a visitor asks for, if it may be served now; else the error the page
        shows: 429 (guessing), 404 (unknown, revoked, gone), 451 (taken down, Client
        suspended), 410 (expired, download limit reached)."""
        wait = self.guesses.retry_after(ip)
        if wait:
            raise self._guessing(wait)
        row = None
        if looks_like_token(token):
            with self.db.read() as s:
                row = s.execute(
                    select(Link, Tenant, User)
                    .join(Tenant, Tenant.id == Link.tenant_id)
                    .join(User, (User.id == Link.created_by) & (User.tenant_id == Link.tenant_id))
                    .where(Link.token_hash == token_hash(token))
                ).first()
                root = self._node_path(s, row[0].tenant_id, row[0].node_id) if row else None
                node_kind = (
                    s.scalar(select(Node.kind).where(Node.id == row[0].node_id)) if row else None
                )
        if row is None:
            LINK_MISSES.inc()
            log.info("link miss", extra={"ip": ip, "token_hint": token[:HINT_CHARS]})
            if self.guesses.miss(ip):
                LINK_GUESS_BLOCKS.inc()
                log.warning("link token guessing: %s blocked for %.0f s", ip, GUESS_BLOCK)
                raise self._guessing(GUESS_BLOCK)
            raise LinkNotFound("This link does not exist or was withdrawn.")
        link, tenant, user = row
        if link.revoked_at is not None or user.disabled or root is None:
            raise LinkNotFound("This link does not exist or was withdrawn.")
        if link.suspended_at is not None or tenant.status == "suspended":
            raise LinkUnavailable("This content is not available.")
        if link.expires_at <= self.clock():
            raise LinkGone("This link has expired.")
        if link.max_downloads is not None and link.downloads >= link.max_downloads:
            raise LinkGone("This link has reached its download limit.")
        return Resolved(
            id=link.id,
            tenant_id=link.tenant_id,
            tenant_name=tenant.name,
            kind=link.kind,
            is_file=node_kind == "file",
            root=root,
            name=root.name,
            acting=Principal("user", user.id, user.email, user.tenant_id, user.role),
            password_hash=link.password_hash,
            max_downloads=link.max_downloads,
            downloads=link.downloads,
            link_bytes_per_day=tenant.link_bytes_per_day,
        )

    def inside(self, r: Resolved, sub: str) -> RemotePath:
        """A path below the shared folder; '..' is not a name (core.paths refuses it),
        so nothing above the shared folder can be named."""
        if r.is_file:
            raise LinkNotFound("This link does not exist or was withdrawn.")
        return RemotePath(r.root.parts + parse_path(sub).parts)

    # passwords
    def check_password(self, r: Resolved, password: str, ip: str) -> bool:
        """True when right; throttled per link+IP, per IP and per link (429)."""
        for throttle, who in ((self.pw_throttle, ip), (self.pw_link_throttle, "any")):
            wait = throttle.retry_after(r.id, who)
            if wait:
                raise TooManyAttempts("Too many wrong passwords; wait and retry.", retry_after=wait)
        ok = verify_secret(r.password_hash or DUMMY_HASH, password) and bool(r.password_hash)
        if ok:
            self.pw_throttle.success(r.id, ip)
        else:
            self.pw_throttle.failure(r.id, ip)
            self.pw_link_throttle.failure(r.id, "any")
            log.info("wrong link password", extra={"link": r.id, "ip": ip})
        return ok

    def _access_mac(self, r: Resolved, expires: int) -> str:
        msg = f"{r.id}|{expires}|{r.password_hash}".encode()
        return hmac.new(self.key(), msg, hashlib.sha256).hexdigest()

    def access_cookie(self, r: Resolved) -> str:
        """A short-lived proof that this browser gave the password; bound to the
        password's hash, so changing the password (or a new link) invalidates it."""
        expires = int(time.time()) + ACCESS_SECONDS
        return f"{expires}.{self._access_mac(r, expires)}"

    def access_ok(self, r: Resolved, cookie: str | None) -> bool:
        if r.password_hash is None:
            return True
        if not cookie or "." not in cookie:
            return False
        exp, _, mac = cookie.partition(".")
        if not exp.isdigit() or int(exp) < time.time():
            return False
        return hmac.compare_digest(mac, self._access_mac(r, int(exp)))

    def csrf_mac(self, r: Resolved, nonce: str) -> str:
        return hmac.new(self.key(), f"csrf|{r.id}|{nonce}".encode(), hashlib.sha256).hexdigest()

    # counting (R-SHARE-5)
    def start_download(self, r: Resolved) -> None:
        """Count one download, atomically against the limit (410 when none is left)."""
        with self.db.write() as s:
            cond = Link.id == r.id
            if r.max_downloads is not None:
                cond = cond & (Link.downloads < r.max_downloads)
            done = s.execute(update(Link).where(cond).values(downloads=Link.downloads + 1))
            if done.rowcount == 0:  # type: ignore[attr-defined]
                raise LinkGone("This link has reached its download limit.")
        LINK_DOWNLOADS.labels(r.tenant_name).inc()

    def _limit(self, r: Resolved) -> int:
        return self.server_bytes_per_day if r.link_bytes_per_day is None else r.link_bytes_per_day

    def throttled(self, r: Resolved) -> bool:
        """Is this Client over its daily link traffic threshold (R-SHARE-5)? The day's
        count is in the database: every server process sees the same one."""
        limit = self._limit(r)
        if not limit:
            return False
        with self.db.read_conn() as c:
            sent = c.execute(
                select(LinkTraffic.bytes).where(
                    LinkTraffic.tenant_id == r.tenant_id,
                    LinkTraffic.day == self.clock().date().isoformat(),
                )
            ).scalar()
        if (sent or 0) > limit:
            LINK_THROTTLED.labels(r.tenant_name).inc()
            return True
        return False

    def add_bytes(self, r: Resolved, n: int) -> None:
        """Bytes a link download sent: the link's counter, the Client's day total, and
        the operator's alert when the day total crosses the threshold."""
        if n <= 0:
            return
        today = self.clock().date().isoformat()
        table = LinkTraffic.__table__
        add = self.db.insert(table).values(tenant_id=r.tenant_id, day=today, bytes=n)
        add = add.on_conflict_do_update(
            index_elements=[table.c.tenant_id, table.c.day],
            set_={"bytes": table.c.bytes + n},
        ).returning(table.c.bytes)
        with self.db.write() as s:
            s.execute(
                update(Link).where(Link.id == r.id).values(bytes_served=Link.bytes_served + n)
            )
            sent = int(s.execute(add).scalar_one())
        LINK_BYTES.labels(r.tenant_name).inc(n)
        LINK_BYTES_TODAY.labels(r.tenant_name).set(sent)
        limit = self._limit(r)
        # The one addition that crosses the limit alerts, in whichever process made it:
        # the upsert is atomic, so exactly one sees the total go from <= limit to > limit.
        if limit and sent > limit >= sent - n:
            LINK_OVER_THRESHOLD.labels(r.tenant_name).inc()
            log.warning(
                "Client %s went over its link traffic threshold: %d bytes today > %d; its "
                "public link downloads are throttled until the end of the UTC day (R-SHARE-5)",
                r.tenant_name,
                sent,
                limit,
            )

    # drop folders
    def drop_target(self, r: Resolved, filename: str) -> RemotePath:
        """A free name in the drop folder for ``filename``: never overwrites, never tells
        what is there (a taken name becomes ``name (1).ext``, ``name (2).ext``...)."""
        if r.kind != "drop":
            raise LinkNotFound("This link does not exist or was withdrawn.")
        base = filename.replace("\\", "/").rsplit("/", 1)[-1]
        name = normalise_name(base)
        stem, dot, ext = name.rpartition(".")
        if not stem:  # ".bashrc" or no dot: the whole name is the stem
            stem, dot, ext = name, "", ""
        with self.db.read_conn() as c:
            for i in range(10_000):
                candidate = name if i == 0 else f"{stem} ({i}){dot}{ext}"
                target = r.root.child(candidate)
                if self.files.lookup(c, r.tenant_id, target) is None:
                    return target
        raise InvalidInput("Too many files with this name; rename it and send it again.")

    def record_upload(self, r: Resolved) -> None:
        with self.db.write() as s:
            s.execute(update(Link).where(Link.id == r.id).values(uploads=Link.uploads + 1))
