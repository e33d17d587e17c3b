"""The users of a Client, managed by its owners and admins (R-SHARE-1, R-SEC-2).

* **Invite** creates the user at once (disabled, no password, so an owner can give it
  folder access before it is accepted) and a one-time invitation: a token of 256
  random bits, stored only as its SHA-256, valid ``invitation_days``. Inviting again
  replaces the previous token.
* **Accept** (public, with the token) sets the password and activates the account; the
  token can never be used again.
* **Remove** disables the account and, in the same transaction, revokes every session
  and app password (credentials epoch raised, rows revoked), withdraws its folder
  grants and pending invitations. Its files stay: they belong to the Client.
* Roles: only an owner may make or touch an owner; a Client always keeps an owner; no
  one removes or demotes themselves (another owner or admin must).

Every query is scoped to the caller's Client; another Client's user ids answer 404.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from allset.accounts.hashing import hash_secret
from allset.accounts.service import ROLES, Accounts, check_email
from allset.core.errors import (
    AlreadyExists,
    Conflict,
    Forbidden,
    Gone,
    InvalidInput,
    NotFound,
    TooManyAttempts,
)
from allset.core.ids import is_id, new_id, new_secret
from allset.core.principal import Principal
from allset.db.models import Credential, Event, Invitation, Tenant, User, utcnow
from allset.files.access import drop_user_grants, require_manager
from allset.settings import Settings

TOKEN_PREFIX = "iv-"  # noqa: S105 - a prefix that names the token kind, not a secret


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def invite_link(settings: Settings, token: str) -> str:
    """The web interface's page that accepts an invitation; the token is in the
    fragment so it never reaches a server log or a Referer header."""
    base = settings.public_url.rstrip("/")
    if not base:
        scheme = "http" if settings.plain_http else "https"
        base = f"{scheme}://{settings.host}:{settings.port}"
    return f"{base}/invite#token={token}"


def invitation_email(tenant: str, inviter: str, link: str, expires: datetime) -> tuple[str, str]:
    """Subject and plain-text body of an invitation."""
    subject = f"You are invited to {tenant}'s storage space on allset"
    body = (
        f"{inviter} invites you to join {tenant}'s storage space.\n\n"
        f"Open this link to choose your password (it works once, until "
        f"{expires.strftime('%Y-%m-%d %H:%M')} UTC):\n\n{link}\n\n"
        "If you did not expect this, ignore this message: nothing happens until the "
        "link is used.\n"
    )
    return subject, body


def _status(user: User, pending: Invitation | None, now: datetime) -> str:
    if not user.disabled:
        return "active"
    if pending is None:
        return "removed"
    return "invited" if pending.expires_at > now else "invitation-expired"


class Members:
    """Owners' and admins' management of their Client's users."""

    def __init__(self, accounts: Accounts, settings: Settings) -> None:
        self.accounts = accounts
        self.db = accounts.db
        self.expiry = timedelta(days=settings.invitation_days)

    # ---- reading ---------------------------------------------------------------------
    def _pending(self, s: Session, user_id: str) -> Invitation | None:
        return s.scalar(
            select(Invitation)
            .where(
                Invitation.user_id == user_id,
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
            )
            .order_by(Invitation.created_at.desc())
            .limit(1)
        )

    def _view(self, s: Session, user: User, now: datetime) -> dict[str, Any]:
        pending = self._pending(s, user.id) if user.disabled else None
        return {
            "id": user.id,
            "email": user.email,
            "name": user.name,
            "role": user.role,
            "status": _status(user, pending, now),
            "created_at": user.created_at.isoformat(),
            "invitation_expires_at": pending.expires_at.isoformat() if pending else None,
        }

    def list_users(self, p: Principal) -> list[dict[str, Any]]:
        require_manager(p)
        now = utcnow()
        with self.db.read() as s:
            users = s.scalars(
                select(User).where(User.tenant_id == p.tenant_id).order_by(User.email)
            ).all()
            return [self._view(s, u, now) for u in users]

    def _user(self, s: Session, p: Principal, user_id: str) -> User:
        user = s.get(User, user_id) if is_id(user_id) else None
        if user is None or user.tenant_id != p.tenant_id:
            raise NotFound("No such user in your Client.")
        return user

    def get_user(self, p: Principal, user_id: str) -> dict[str, Any]:
        require_manager(p)
        with self.db.read() as s:
            return self._view(s, self._user(s, p, user_id), utcnow())

    # ---- invitations -----------------------------------------------------------------
    def _may_assign(self, p: Principal, role: str) -> None:
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}.")
        if role == "owner" and p.role != "owner":
            raise Forbidden("Only an owner can make someone an owner.")

    def _new_invitation(self, s: Session, p: Principal, user: User) -> tuple[str, datetime]:
        now = utcnow()
        s.execute(
            update(Invitation)
            .where(
                Invitation.user_id == user.id,
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        token = TOKEN_PREFIX + new_secret(32)
        expires = now + self.expiry
        s.add(
            Invitation(
                id=new_id(),
                tenant_id=user.tenant_id,
                user_id=user.id,
                email=user.email,
                role=user.role,
                token_hash=token_hash(token),
                invited_by=p.email,
                created_at=now,
                expires_at=expires,
            )
        )
        s.add(
            Event(
                tenant_id=user.tenant_id,
                actor=p.email,
                kind="user.invite",
                detail={"email": user.email, "role": user.role},
            )
        )
        return token, expires

    def invite(self, p: Principal, email: str, role: str = "member") -> dict[str, Any]:
        """A new (or removed) user of the caller's Client and a fresh one-time token.
        Returns the user's view plus ``token``, ``expires_at`` and ``tenant``."""
        require_manager(p)
        email = check_email(email)
        self._may_assign(p, role)
        with self.db.write() as s:
            user = s.scalar(select(User).where(func.lower(User.email) == email.lower()))
            if user is not None and (user.tenant_id != p.tenant_id or not user.disabled):
                raise AlreadyExists(
                    f"{email} already has an account"
                    + (" in your Client." if user.tenant_id == p.tenant_id else ".")
                )
            if user is None:
                user = User(
                    id=new_id(),
                    tenant_id=p.tenant_id,
                    email=email,
                    role=role,
                    password_hash=None,
                    disabled=True,
                    credentials_epoch=0,
                )
                s.add(user)
                s.flush()
            else:  # a removed (or still invited) user of this Client, invited again
                user.role = role
            token, expires = self._new_invitation(s, p, user)
            tenant = s.get(Tenant, p.tenant_id)
            view = self._view(s, user, utcnow())
            view.update(token=token, expires_at=expires, tenant=tenant.name if tenant else "")
            return view

    def reinvite(self, p: Principal, user_id: str) -> dict[str, Any]:
        """A new token for a user who has not accepted (the previous one stops working)."""
        require_manager(p)
        with self.db.write() as s:
            user = self._user(s, p, user_id)
            if not user.disabled:
                raise Conflict(f"{user.email} has already accepted; nothing to send.")
            self._may_assign(p, user.role)
            token, expires = self._new_invitation(s, p, user)
            tenant = s.get(Tenant, p.tenant_id)
            view = self._view(s, user, utcnow())
            view.update(token=token, expires_at=expires, tenant=tenant.name if tenant else "")
            return view

    def accept(self, token: str, password: str, ip: str) -> dict[str, Any]:
        """Set the password and activate; the token is spent. Unknown tokens are
        throttled per IP like failed sign-ins (R-SEC-3)."""
        wait = self.accounts.throttle.retry_after("invitation", ip)
        if wait:
            raise TooManyAttempts(
                f"Too many unknown invitation tokens; try again in {wait} s.", retry_after=wait
            )
        if len(password) < 10:
            raise InvalidInput("A password needs at least 10 characters.")
        now = utcnow()
        with self.db.write() as s:
            inv = s.scalar(select(Invitation).where(Invitation.token_hash == token_hash(token)))
            if inv is None:
                self.accounts.throttle.failure("invitation", ip)
                raise NotFound("This invitation link is not valid; ask for a new one.")
            if inv.accepted_at is not None:
                raise Gone("This invitation link has already been used; sign in instead.")
            if inv.revoked_at is not None:
                raise Gone("This invitation link was replaced or withdrawn; use the newest one.")
            if inv.expires_at <= now:
                raise Gone("This invitation link has expired; ask for a new one.")
            user = s.get(User, inv.user_id)
            if user is None or user.tenant_id != inv.tenant_id:
                raise Gone("This invitation link was withdrawn.")
            inv.accepted_at = now
            user.password_hash = hash_secret(password)
            user.disabled = False
            s.add(
                Event(
                    tenant_id=user.tenant_id,
                    actor=user.email,
                    kind="user.accept",
                    detail={"email": user.email},
                )
            )
            self.accounts.throttle.success("invitation", ip)
            return {"id": user.id, "email": user.email, "role": user.role}

    # ---- changing and removing -------------------------------------------------------
    def _guard_change(self, s: Session, p: Principal, user: User) -> None:
        if user.id == p.id:
            raise Conflict("You cannot change or remove your own account; ask another owner.")
        if user.role == "owner" and p.role != "owner":
            raise Forbidden("Only an owner can change or remove an owner.")

    def set_role(self, p: Principal, user_id: str, role: str) -> dict[str, Any]:
        require_manager(p)
        self._may_assign(p, role)
        with self.db.write() as s:
            user = self._user(s, p, user_id)
            self._guard_change(s, p, user)
            user.role = role
            s.add(
                Event(
                    tenant_id=p.tenant_id,
                    actor=p.email,
                    kind="user.role",
                    detail={"email": user.email, "role": role},
                )
            )
            return self._view(s, user, utcnow())

    def remove(self, p: Principal, user_id: str) -> None:
        """R-SEC-2-strength revocation, at once: the next request with any of the user's
        sessions, app passwords or password answers 401."""
        require_manager(p)
        with self.db.write() as s:
            user = self._user(s, p, user_id)
            self._guard_change(s, p, user)
            self._revoke_all(s, user, p.email)

    def _revoke_all(self, s: Session, user: User, actor: str) -> None:
        now = utcnow()
        user.disabled = True
        user.password_hash = None
        user.credentials_epoch += 1
        s.execute(
            update(Credential)
            .where(Credential.user_id == user.id, Credential.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        s.execute(
            update(Invitation)
            .where(
                Invitation.user_id == user.id,
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        drop_user_grants(s.connection(), user.tenant_id, user.id)
        s.add(
            Event(
                tenant_id=user.tenant_id,
                actor=actor,
                kind="user.remove",
                detail={"email": user.email},
            )
        )

    # ---- operator side ---------------------------------------------------------------
    def operator_list(self, tenant_name: str) -> list[dict[str, Any]]:
        now = utcnow()
        with self.db.read() as s:
            t = s.scalar(select(Tenant).where(Tenant.name == tenant_name))
            if t is None:
                raise NotFound(f"No Client named {tenant_name!r}; `allset-server tenant list`.")
            users = s.scalars(select(User).where(User.tenant_id == t.id).order_by(User.email))
            return [self._view(s, u, now) for u in users]

    def operator_remove(self, email: str, actor: str) -> None:
        """Support: an operator removes a user on the Client's written request."""
        with self.db.write() as s:
            user = s.scalar(select(User).where(func.lower(User.email) == email.lower()))
            if user is None:
                raise NotFound(f"No user with email {email!r}.")
            self._revoke_all(s, user, actor)
