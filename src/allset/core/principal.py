"""Who is calling: the identity every façade call carries."""

from __future__ import annotations

from dataclasses import dataclass

MANAGER_ROLES = ("owner", "admin")
"""The roles that manage their whole Client: every folder, link and WebDAV lock in it, its
users and their access, its usage (R-SHARE-1). Members reach what they were granted."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. ``tenant_id`` scopes every file operation (R-STORE-3)."""

    kind: str  # "user" | "operator"
    id: str
    email: str
    tenant_id: str
    role: str
    credential_id: str = ""
    credential_kind: str = ""  # "session" | "app_password" | "" (account password)

    @property
    def is_operator(self) -> bool:
        return self.kind == "operator"

    @property
    def is_manager(self) -> bool:
        """An owner or admin of its Client. Never an operator: the operator runs the
        service and sees no Client's files, links or locks (R-STORE-6)."""
        return not self.is_operator and self.role in MANAGER_ROLES
