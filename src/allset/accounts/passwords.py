"""Password changes and the lost-password procedure (R-SEC-2), for the web interface.

* **Lost password** (``report``): anyone may report the loss for an email address; the
  answer never says whether the account exists. If it does (an active user), every
  session and app password stops working at once (``Accounts.report_lost_password``:
  credentials epoch raised, rows revoked, password cleared) and a one-time reset token
  is made: 256 random bits, only its SHA-256 stored (a slow hash adds nothing to a
  random token), valid ``RESET_LIFETIME``, spent on use, replaced by a newer request.
  Requests are rate-limited per IP (a visible 429) and per address (silently: the same
  neutral answer, no new email, so the limit reveals nothing either).
* **Reset** (``reset``): the token sets a new password; unknown tokens are throttled per
  IP like failed sign-ins.
* **Change** (``change``): the current password is checked (throttled like a sign-in);
  then every *other* session of the account is revoked — whoever knew the old password
  may have signed in with it — while app passwords keep working (they are separate
  secrets, and revoking them would break every synced device); ``revoke_app_passwords``
  revokes those too.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from allset.accounts.hashing import DUMMY_HASH, hash_secret, verify_secret
from allset.accounts.service import Accounts
from allset.core.errors import Gone, InvalidInput, NotFound, TooManyAttempts, Unauthenticated
from allset.core.ids import new_id, new_secret
from allset.core.principal import Principal
from allset.db.models import Credential, Event, PasswordReset, Tenant, User, utcnow

TOKEN_PREFIX = "rs-"  # noqa: S105 - names the token kind, not a secret
RESET_LIFETIME = timedelta(hours=1)
MIN_PASSWORD = 10


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"A password needs at least {MIN_PASSWORD} characters.")
    if len(password) > 1024:
        raise InvalidInput("A password has at most 1,024 characters.")


class RateLimit:
    """At most ``limit`` events per key within ``window`` seconds (a sliding window in
    process memory, like the sign-in throttle: the server is one process)."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._seen: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> int:
        """Record one event; 0 if allowed, else the seconds until it would be."""
        now = self.clock()
        with self._lock:
            if len(self._seen) > 100_000:  # bounded memory under a flood of keys
                self._seen.clear()
            recent = [t for t in self._seen.get(key, []) if now - t < self.window]
            if len(recent) >= self.limit:
                self._seen[key] = recent
                return max(1, math.ceil(self.window - (now - recent[0])))
            recent.append(now)
            self._seen[key] = recent
            return 0


@dataclass(frozen=True)
class ResetTicket:
    """What to email: the address, the one-time token and when it stops working."""

    email: str
    tenant: str
    token: str
    expires_at: datetime


class Passwords:
    def __init__(
        self,
        accounts: Accounts,
        per_ip: RateLimit | None = None,
        per_email: RateLimit | None = None,
    ) -> None:
        self.accounts = accounts
        self.db = accounts.db
        self.per_ip = per_ip or RateLimit(10, 3600)
        self.per_email = per_email or RateLimit(3, 3600)

    # ---- lost password ------------------------------------------------------------
    def report(self, email: str, ip: str) -> ResetTicket | None:
        """R-SEC-2. Returns the ticket to email, or None (no such active account, or
        this address was reported too often): callers answer the same either way.
        Raises ``TooManyAttempts`` when this IP asks too often."""
        wait = self.per_ip.hit(ip)
        if wait:
            raise TooManyAttempts(
                f"Too many lost-password requests; try again in {wait} s.", retry_after=wait
            )
        email = email.strip()
        if not email or "\x00" in email or len(email) > 320:
            return None
        if self.per_email.hit(email.lower()):
            return None
        with self.db.read() as s:
            user = s.scalar(select(User).where(func.lower(User.email) == email.lower()))
            if user is None or user.disabled:
                # Removed or not yet accepted accounts get nothing: a reset must never
                # bring back someone an owner removed.
                return None
            user_email = user.email
        self.accounts.report_lost_password(user_email, actor=f"lost-password from {ip}"[:320])
        now = utcnow()
        token = TOKEN_PREFIX + new_secret(32)
        with self.db.write() as s:
            user = s.scalar(select(User).where(func.lower(User.email) == email.lower()))
            if user is None:
                return None
            s.execute(
                update(PasswordReset)
                .where(
                    PasswordReset.user_id == user.id,
                    PasswordReset.used_at.is_(None),
                    PasswordReset.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
            s.add(
                PasswordReset(
                    id=new_id(),
                    tenant_id=user.tenant_id,
                    user_id=user.id,
                    token_hash=token_hash(token),
                    created_at=now,
                    expires_at=now + RESET_LIFETIME,
                    ip=ip[:64],
                )
            )
            tenant = s.get(Tenant, user.tenant_id)
            return ResetTicket(
                user.email, tenant.name if tenant else "", token, now + RESET_LIFETIME
            )

    def reset(self, token: str, password: str, ip: str) -> str:
        """Set a new password with a reset token; returns the account's email."""
        wait = self.accounts.throttle.retry_after("password-reset", ip)
        if wait:
            raise TooManyAttempts(
                f"Too many unknown reset links; try again in {wait} s.", retry_after=wait
            )
        check_new_password(password)
        now = utcnow()
        with self.db.write() as s:
            found = s.scalar(
                select(PasswordReset).where(PasswordReset.token_hash == token_hash(token.strip()))
            )
            if found is None:
                self.accounts.throttle.failure("password-reset", ip)
                raise NotFound("This reset link is not valid; ask for a new one.")
            if found.used_at is not None:
                raise Gone("This reset link has already been used; sign in instead.")
            if found.revoked_at is not None:
                raise Gone("A newer reset link was sent; use the newest one.")
            if found.expires_at <= now:
                raise Gone("This reset link has expired; ask for a new one.")
            user = s.get(User, found.user_id)
            if user is None or user.disabled or user.tenant_id != found.tenant_id:
                raise Gone("This account can no longer sign in; ask an owner of your Client.")
            found.used_at = now
            user.password_hash = hash_secret(password)
            s.add(Event(tenant_id=user.tenant_id, actor=user.email, kind="user.password-reset"))
            self.accounts.throttle.success("password-reset", ip)
            return user.email

    # ---- change -------------------------------------------------------------------
    def change(
        self,
        p: Principal,
        current: str,
        new: str,
        ip: str,
        revoke_app_passwords: bool = False,
    ) -> int:
        """Check ``current``, set ``new``; revoke the account's other sessions (and its
        app passwords if asked). Returns how many credentials were revoked."""
        if p.is_operator:
            raise NotFound("Operator passwords are changed with allset-server.")
        self.accounts._guard(p.email, ip)
        check_new_password(new)
        with self.db.write() as s:
            user = s.get(User, p.id)
            if user is None or user.tenant_id != p.tenant_id:
                raise NotFound("No such account.")
            stored = user.password_hash or ""
            if not (verify_secret(stored or DUMMY_HASH, current) and stored):
                self.accounts.throttle.failure(p.email, ip)
                raise Unauthenticated("The current password is wrong.")
            self.accounts.throttle.success(p.email, ip)
            user.password_hash = hash_secret(new)
            kinds = ["session", "app_password"] if revoke_app_passwords else ["session"]
            result = s.execute(
                update(Credential)
                .where(
                    Credential.user_id == user.id,
                    Credential.revoked_at.is_(None),
                    Credential.id != p.credential_id,
                    Credential.kind.in_(kinds),
                )
                .values(revoked_at=utcnow())
            )
            s.add(
                Event(
                    tenant_id=user.tenant_id,
                    actor=p.email,
                    kind="user.password-change",
                    detail={"revoked": int(result.rowcount or 0)},  # type: ignore[attr-defined]
                )
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]
