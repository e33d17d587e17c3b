"""The accounts façade: Clients, users, operators, credentials and authentication."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session

from allset.accounts.hashing import (
    DUMMY_HASH,
    NeedsThread,
    hash_secret,
    verified_recently,
    verify_secret,
)
from allset.accounts.throttle import LoginThrottle
from allset.core.errors import (
    AlreadyExists,
    Forbidden,
    InvalidInput,
    NotFound,
    Suspended,
    TooManyAttempts,
    Unauthenticated,
)
from allset.core.ids import is_id, new_id, new_secret
from allset.core.principal import Principal
from allset.db.engine import Database
from allset.db.models import Credential, Event, Node, Operator, Tenant, User, utcnow
from allset.db.prepared import Prepared

ROLES = ("owner", "admin", "member")
_EMAIL = re.compile(r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$")
_TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
APP_PREFIX = "ap-"
SESSION_PREFIX = "ss-"
ID_LEN = 22


def tenant_view(t: Tenant) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "company": t.company,
        "postal_address": t.postal_address,
        "contact_name": t.contact_name,
        "contact_email": t.contact_email,
        "phones": list(t.phones or []),
        "quota_bytes": t.quota_bytes,
        "used_bytes": t.used_bytes,
        "bandwidth_up": t.bandwidth_up,
        "bandwidth_down": t.bandwidth_down,
        "status": t.status,
        "status_reason": t.status_reason,
        "created_at": t.created_at.isoformat(),
    }


def check_email(email: str) -> str:
    email = email.strip()
    if not _EMAIL.match(email) or len(email) > 320:
        raise InvalidInput(f"{email!r} is not an email address.")
    return email


_C, _U, _O, _T = (
    Credential.__table__.c,
    User.__table__.c,
    Operator.__table__.c,
    Tenant.__table__.c,
)
_CREDENTIAL_LOOKUP = Prepared(
    select(
        _C.kind,
        _C.secret_hash,
        _C.epoch,
        _C.expires_at,
        _C.revoked_at,
        _C.operator_id,
        _U.id.label("user_id"),
        _U.email.label("user_email"),
        _U.role.label("user_role"),
        _U.disabled.label("user_disabled"),
        _U.credentials_epoch.label("user_epoch"),
        _U.tenant_id,
        _T.status.label("tenant_status"),
        _T.status_reason.label("tenant_status_reason"),
        _O.id.label("op_id"),
        _O.email.label("op_email"),
        _O.credentials_epoch.label("op_epoch"),
    )
    .select_from(Credential.__table__)
    .outerjoin(User.__table__, _U.id == _C.user_id)
    .outerjoin(Tenant.__table__, _T.id == _U.tenant_id)
    .outerjoin(Operator.__table__, _O.id == _C.operator_id)
    .where(_C.id == bindparam("cid"))
)
"""Everything a token check needs (revocation, epochs, Client status) in one round trip:
it runs on every request, and three ORM lookups cost more than the request's own work."""
_USER_SIGN_IN = Prepared(
    select(
        _U.id,
        _U.email,
        _U.role,
        _U.disabled,
        _U.password_hash,
        _U.tenant_id,
        _T.status.label("tenant_status"),
        _T.status_reason.label("tenant_status_reason"),
    )
    .select_from(User.__table__)
    .outerjoin(Tenant.__table__, _T.id == _U.tenant_id)
    .where(func.lower(_U.email) == bindparam("email"))
)
_OPERATOR_SIGN_IN = Prepared(
    select(_O.id, _O.email, _O.password_hash).where(func.lower(_O.email) == bindparam("email"))
)
"""A password sign-in also runs on every request of a program using HTTP Basic with the
account password (WebDAV clients): one statement each, no ORM."""


class Accounts:
    def __init__(self, db: Database, throttle: LoginThrottle, session_lifetime: int) -> None:
        self.db = db
        self.throttle = throttle
        self.session_lifetime = session_lifetime
        self._touched: dict[str, float] = {}

    # ---- Clients -------------------------------------------------------------------
    def create_tenant(
        self,
        name: str,
        quota: int,
        bandwidth: int,
        contact_email: str = "",
        company: str = "",
        contact_name: str = "",
        postal_address: str = "",
        phones: list[str] | None = None,
        actor: str = "operator",
    ) -> dict[str, Any]:
        if not _TENANT_NAME.match(name):
            raise InvalidInput(
                f"Client name {name!r} must be 1-100 lowercase letters, digits, '.', '_' or '-'."
            )
        if contact_email:
            check_email(contact_email)
        if quota < 0 or bandwidth <= 0:
            raise InvalidInput("Quota must be >= 0 and bandwidth > 0.")
        tenant = Tenant(
            id=new_id(),
            name=name,
            company=company,
            contact_name=contact_name,
            contact_email=contact_email,
            postal_address=postal_address,
            phones=phones or [],
            quota_bytes=quota,
            used_bytes=0,
            bandwidth_up=bandwidth,
            bandwidth_down=bandwidth,
            status="active",
        )
        try:
            with self.db.write() as s:
                if s.scalar(select(Tenant.id).where(Tenant.name == name)):
                    raise AlreadyExists(f"A Client named {name!r} already exists.")
                s.add(tenant)
                s.flush()
                s.add(Node(id=new_id(), tenant_id=tenant.id, parent_id=None, name="", kind="dir"))
                s.add(Event(tenant_id=tenant.id, actor=actor, kind="tenant.create", detail={}))
        except DBIntegrityError as exc:
            raise AlreadyExists(f"A Client named {name!r} already exists.") from exc
        return tenant_view(tenant)

    def _tenant(self, s: Session, name: str) -> Tenant:
        t = s.scalar(select(Tenant).where(Tenant.name == name))
        if t is None:
            raise NotFound(f"No Client named {name!r}; `allset-server tenant list` shows them.")
        return t

    def bandwidth(self, tenant_id: str) -> tuple[int, int] | None:
        """(up, down) in bytes per second, or None for an unknown Client (R-BW-1)."""
        with self.db.read() as s:
            row = s.execute(
                select(Tenant.bandwidth_up, Tenant.bandwidth_down).where(Tenant.id == tenant_id)
            ).first()
        return (int(row[0]), int(row[1])) if row else None

    def tenant_names(self) -> dict[str, str]:
        with self.db.read() as s:
            return {str(tid): str(name) for tid, name in s.execute(select(Tenant.id, Tenant.name))}

    def get_tenant(self, name: str) -> dict[str, Any]:
        with self.db.read() as s:
            t = self._tenant(s, name)
            view = tenant_view(t)
            view["users"] = s.scalar(select(func.count()).where(User.tenant_id == t.id))
            return view

    def list_tenants(self) -> list[dict[str, Any]]:
        with self.db.read() as s:
            return [tenant_view(t) for t in s.scalars(select(Tenant).order_by(Tenant.name))]

    def find_tenants(
        self, query: str = "", offset: int = 0, limit: int = 50
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the Clients (by name) that match ``query`` in their name, company,
        contact name or email, ignoring case; and how many match in all.

        The match is made here rather than in SQL: SQLite's ``lower()``, and PostgreSQL's
        on a database created with the C locale, fold only ASCII, and an operator typing
        "études" must find "ÉTUDES SA". Only the four searched columns of every Client are
        read for it (a few hundred bytes each), then the page's rows."""
        offset, limit = max(0, offset), max(1, limit)
        with self.db.read() as s:
            if not query.strip():
                total = s.scalar(select(func.count()).select_from(Tenant)) or 0
                page = s.scalars(select(Tenant).order_by(Tenant.name).offset(offset).limit(limit))
                return [tenant_view(t) for t in page], total
            needle = query.strip().casefold()
            searched = (_T.id, _T.name, _T.company, _T.contact_name, _T.contact_email)
            matching = [
                row.id
                for row in s.execute(select(*searched).order_by(_T.name))
                if any(needle in (value or "").casefold() for value in row[1:])
            ]
            ids = matching[offset : offset + limit]
            page = s.scalars(select(Tenant).where(_T.id.in_(ids)).order_by(Tenant.name))
            return [tenant_view(t) for t in page], len(matching)

    def set_bandwidth(
        self, name: str, up: int, down: int, actor: str, reason: str = ""
    ) -> dict[str, Any]:
        if up <= 0 or down <= 0:
            raise InvalidInput("Bandwidth must be greater than 0.")
        with self.db.write() as s:
            t = self._tenant(s, name)
            t.bandwidth_up, t.bandwidth_down = up, down
            s.add(
                Event(
                    tenant_id=t.id,
                    actor=actor,
                    kind="tenant.limit",
                    detail={"up": up, "down": down, **({"reason": reason} if reason else {})},
                )
            )
            return tenant_view(t)

    def set_quota(self, name: str, quota: int, actor: str) -> dict[str, Any]:
        if quota < 0:
            raise InvalidInput("Quota must be >= 0.")
        with self.db.write() as s:
            t = self._tenant(s, name)
            t.quota_bytes = quota
            s.add(Event(tenant_id=t.id, actor=actor, kind="tenant.quota", detail={"quota": quota}))
            return tenant_view(t)

    def set_status(self, name: str, status: str, reason: str, actor: str) -> dict[str, Any]:
        """R-OPS-1: suspension keeps every byte; it only stops access."""
        if status == "suspended" and not reason.strip():
            raise InvalidInput("A suspension needs a reason (--reason); it is recorded.")
        with self.db.write() as s:
            t = self._tenant(s, name)
            t.status, t.status_reason = status, reason
            s.add(
                Event(
                    tenant_id=t.id,
                    actor=actor,
                    kind=f"tenant.{'suspend' if status == 'suspended' else 'resume'}",
                    detail={"reason": reason},
                )
            )
            return tenant_view(t)

    # ---- users ---------------------------------------------------------------------
    def create_user(
        self, tenant_name: str, email: str, role: str, password: str | None, actor: str
    ) -> dict[str, Any]:
        email = check_email(email)
        if role not in ROLES:
            raise InvalidInput(f"Role must be one of {', '.join(ROLES)}.")
        if password is not None and len(password) < 10:
            raise InvalidInput("A password needs at least 10 characters.")
        with self.db.write() as s:
            t = self._tenant(s, tenant_name)
            if s.scalar(select(User.id).where(func.lower(User.email) == email.lower())):
                raise AlreadyExists(f"A user with email {email!r} already exists.")
            user = User(
                id=new_id(),
                tenant_id=t.id,
                email=email,
                role=role,
                password_hash=hash_secret(password) if password else None,
                credentials_epoch=0,
            )
            s.add(user)
            s.add(Event(tenant_id=t.id, actor=actor, kind="user.create", detail={"email": email}))
            return {"id": user.id, "email": email, "role": role, "tenant": t.name}

    def report_lost_password(self, email: str, actor: str) -> None:
        """R-SEC-2: every session and app password of the account stops working at once."""
        with self.db.write() as s:
            user = s.scalar(select(User).where(func.lower(User.email) == email.lower()))
            if user is None:
                raise NotFound(f"No user with email {email!r}.")
            user.credentials_epoch += 1
            user.password_hash = None
            s.execute(
                update(Credential)
                .where(Credential.user_id == user.id, Credential.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            s.add(Event(tenant_id=user.tenant_id, actor=actor, kind="user.lost-password"))

    def set_password(self, user_id: str, password: str) -> None:
        if len(password) < 10:
            raise InvalidInput("A password needs at least 10 characters.")
        with self.db.write() as s:
            user = s.get(User, user_id)
            if user is None:
                raise NotFound("No such user.")
            user.password_hash = hash_secret(password)

    # ---- operators -----------------------------------------------------------------
    def ensure_operator(self, email: str = "operator@localhost") -> str | None:
        """Create the first operator; returns its one-time password, or None if one exists."""
        with self.db.write() as s:
            if s.scalar(select(func.count()).select_from(Operator)):
                return None
            password = new_secret(18)
            s.add(
                Operator(
                    id=new_id(),
                    email=email,
                    password_hash=hash_secret(password),
                    must_change_password=True,
                    credentials_epoch=0,
                )
            )
            s.add(
                Event(tenant_id=None, actor="init", kind="operator.create", detail={"email": email})
            )
            return password

    # ---- credentials ---------------------------------------------------------------
    def _user_by_email(self, s: Session, email: str) -> User:
        user = s.scalar(select(User).where(func.lower(User.email) == email.lower()))
        if user is None:
            raise NotFound(f"No user with email {email!r}.")
        return user

    def create_app_password(self, email: str, name: str, actor: str) -> dict[str, Any]:
        with self.db.write() as s:
            user = self._user_by_email(s, email)
            return self._issue(s, user, "app_password", name or "app password", None, actor)

    def issue_for(self, principal: Principal, kind: str, name: str) -> dict[str, Any]:
        with self.db.write() as s:
            if principal.is_operator:
                op = s.get(Operator, principal.id)
                if op is None:
                    raise Unauthenticated("Unknown operator.")
                if kind != "session":
                    # Operator powers are not for unattended programs: sessions only.
                    raise Forbidden("Operator accounts cannot have app passwords.")
                return self._issue_operator(s, op, name)
            user = s.get(User, principal.id)
            if user is None:
                raise Unauthenticated("Unknown user.")
            expires = (
                utcnow() + timedelta(seconds=self.session_lifetime) if kind == "session" else None
            )
            return self._issue(s, user, kind, name, expires, principal.email)

    def _issue(
        self, s: Session, user: User, kind: str, name: str, expires: datetime | None, actor: str
    ) -> dict[str, Any]:
        if "\x00" in name:
            raise InvalidInput("A name cannot contain the NUL character.")
        cid, secret = new_id(), new_secret(24)
        prefix = APP_PREFIX if kind == "app_password" else SESSION_PREFIX
        s.add(
            Credential(
                id=cid,
                kind=kind,
                user_id=user.id,
                tenant_id=user.tenant_id,
                name=name[:200],
                secret_hash=hash_secret(secret),
                epoch=user.credentials_epoch,
                expires_at=expires,
            )
        )
        if kind == "app_password":
            s.add(
                Event(
                    tenant_id=user.tenant_id,
                    actor=actor,
                    kind="token.create",
                    detail={"name": name},
                )
            )
        return {
            "id": cid,
            "name": name,
            "kind": kind,
            "password": prefix + cid + secret,
            "expires": expires.isoformat() if expires else None,
        }

    def _issue_operator(self, s: Session, op: Operator, name: str) -> dict[str, Any]:
        cid, secret = new_id(), new_secret(24)
        expires = utcnow() + timedelta(seconds=self.session_lifetime)
        s.add(
            Credential(
                id=cid,
                kind="session",
                operator_id=op.id,
                name=name,
                secret_hash=hash_secret(secret),
                epoch=op.credentials_epoch,
                expires_at=expires,
            )
        )
        return {
            "id": cid,
            "name": name,
            "kind": "session",
            "password": SESSION_PREFIX + cid + secret,
            "expires": expires.isoformat(),
        }

    def list_credentials(self, principal: Principal) -> list[dict[str, Any]]:
        with self.db.read() as s:
            rows = s.scalars(
                select(Credential)
                .where(Credential.user_id == principal.id, Credential.revoked_at.is_(None))
                .order_by(Credential.created_at)
            )
            return [
                {
                    "id": c.id,
                    "kind": c.kind,
                    "name": c.name,
                    "created_at": c.created_at.isoformat(),
                    "expires_at": c.expires_at.isoformat() if c.expires_at else None,
                    "last_used_at": c.last_used_at.isoformat() if c.last_used_at else None,
                    "last_used_ip": c.last_used_ip,
                    "current": c.id == principal.credential_id,
                }
                for c in rows
            ]

    def revoke_credential(self, principal: Principal, credential_id: str) -> None:
        """Another user's credential id answers 404, like anything not one's own."""
        with self.db.write() as s:
            c = s.get(Credential, credential_id) if is_id(credential_id) else None
            owner = c and (c.operator_id if principal.is_operator else c.user_id)
            if c is None or owner != principal.id or c.revoked_at is not None:
                raise NotFound("No such session or app password.")
            c.revoked_at = utcnow()

    # ---- authentication ------------------------------------------------------------
    def _guard(self, account: str, ip: str) -> None:
        wait = self.throttle.retry_after(account, ip)
        if wait:
            raise TooManyAttempts(
                f"Too many failed sign-ins; try again in {wait} s.", retry_after=wait
            )

    def login_password(self, email: str, password: str, ip: str, inline: bool = False) -> Principal:
        """Account password sign-in, for users and operators; throttled per account+IP.
        ``inline``: raise ``NeedsThread`` rather than run argon2 (see ``authenticate_token``)."""
        self._guard(email, ip)
        user, op = None, None
        if "\x00" not in email:  # no account has one; PostgreSQL refuses it in a query
            user = self.db.read_one(_USER_SIGN_IN, {"email": email.lower()}).first()
            if user is None:
                op = self.db.read_one(_OPERATOR_SIGN_IN, {"email": email.lower()}).first()
        stored = (user.password_hash if user else op.password_hash if op else None) or ""
        if inline and not verified_recently(stored or DUMMY_HASH, password):
            raise NeedsThread
        ok = verify_secret(stored or DUMMY_HASH, password) and bool(stored)
        if not ok or (user is not None and user.disabled):
            self.throttle.failure(email, ip)
            raise Unauthenticated("Wrong email or password.")
        self.throttle.success(email, ip)
        if op is not None:
            return Principal("operator", op.id, op.email, "", "operator")
        assert user is not None
        if user.tenant_status is None:
            raise Unauthenticated("Wrong email or password.")
        if user.tenant_status != "active":
            raise Suspended(
                "This Client's service is suspended; contact the operator.",
                reason=user.tenant_status_reason,
            )
        return Principal("user", user.id, user.email, user.tenant_id, user.role)

    def authenticate_basic(
        self, username: str, password: str, ip: str, inline: bool = False
    ) -> Principal:
        """HTTP Basic: the account password or one of the account's app passwords."""
        if password.startswith(APP_PREFIX) and len(password) > len(APP_PREFIX) + ID_LEN:
            self._guard(username, ip)
            try:
                p = self.authenticate_token(password, ip, throttle=False, inline=inline)
            except Unauthenticated:
                self.throttle.failure(username, ip)
                raise
            if p.email.lower() != username.lower():
                self.throttle.failure(username, ip)
                raise Unauthenticated("Wrong email or password.")
            return p
        return self.login_password(username, password, ip, inline)

    def authenticate_token(
        self, token: str, ip: str, throttle: bool = True, inline: bool = False
    ) -> Principal:
        """Bearer: a session token or an app password; checked against revocation each time.

        ``inline``: the caller is an event loop, which a thread hop costs more than the
        check itself (~0.1 ms with a recent verification cached; the hop's GIL hand-offs
        cost more CPU than that on a loaded server). When the check would need argon2
        or a write, it raises ``NeedsThread`` before recording anything."""
        if throttle:
            self._guard("", ip)
        prefix, cid, secret = token[:3], token[3 : 3 + ID_LEN], token[3 + ID_LEN :]
        if prefix not in (APP_PREFIX, SESSION_PREFIX) or not secret or not is_id(cid):
            if throttle:
                self.throttle.failure("", ip)
            raise Unauthenticated("Invalid token.")
        row = self.db.read_one(_CREDENTIAL_LOOKUP, {"cid": cid}).first()
        valid = (
            row is not None
            and row.revoked_at is None
            and (row.expires_at is None or row.expires_at > utcnow())
            and (prefix == APP_PREFIX) == (row.kind == "app_password")
        )
        slow = row is not None and (
            not verified_recently(row.secret_hash, secret) or self._touch_due(cid)
        )
        if inline and valid and slow:
            raise NeedsThread
        if not valid or row is None or not verify_secret(row.secret_hash, secret):
            if throttle:
                self.throttle.failure("", ip)
            raise Unauthenticated("Invalid or revoked token.")
        if row.operator_id:
            if row.op_id is None or row.op_epoch != row.epoch:
                raise Unauthenticated("Invalid or revoked token.")
            principal = Principal(
                "operator", row.op_id, row.op_email, "", "operator", cid, row.kind
            )
        else:
            if row.user_id is None or row.user_disabled or row.user_epoch != row.epoch:
                raise Unauthenticated("Invalid or revoked token.")
            if row.tenant_status is None:
                raise Unauthenticated("Invalid or revoked token.")
            if row.tenant_status != "active":
                raise Suspended(
                    "This Client's service is suspended; contact the operator.",
                    reason=row.tenant_status_reason,
                )
            principal = Principal(
                "user", row.user_id, row.user_email, row.tenant_id, row.user_role, cid, row.kind
            )
        self._touch(cid, ip)
        return principal

    def _touch_due(self, cid: str) -> bool:
        return time.monotonic() - self._touched.get(cid, -1e9) >= 300

    def _touch(self, cid: str, ip: str) -> None:
        """Record last use at most every five minutes: a DB write per request would cost
        more than the request itself."""
        now = time.monotonic()
        if not self._touch_due(cid):
            return
        self._touched[cid] = now
        with self.db.write() as s:
            s.execute(
                update(Credential)
                .where(Credential.id == cid)
                .values(last_used_at=utcnow(), last_used_ip=ip[:64])
            )
