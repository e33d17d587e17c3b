"""Who is calling: the identity every façade call carries."""

from __future__ import annotations

from dataclasses import dataclass


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
