"""The operator's actions as an audit trail (R-OPS-4): who did what to which Client,
when and why, read from the events table where every action is recorded in the same
transaction as the action itself (so the trail cannot miss one that happened)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, bindparam, select

from allset.db.engine import Database
from allset.db.models import Event, Tenant

# What the operator does to a Client and its links (R-OPS-1, R-BW-2, R-SHARE-4/5);
# the same list as the partial index of migration 0008.
OPERATOR_KINDS = (
    "tenant.create",
    "tenant.suspend",
    "tenant.resume",
    "tenant.limit",
    "tenant.quota",
    "tenant.link-limit",
    "link.suspend",
    "link.resume",
    "transfers.interrupt",
)


class Audit:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, tenant_id: str, actor: str, kind: str, detail: dict[str, Any]) -> None:
        """For actions that change no row of their own (an interrupt acts on memory)."""
        with self.db.write() as s:
            s.add(Event(tenant_id=tenant_id, actor=actor, kind=kind, detail=detail))

    @staticmethod
    def query(tenant_id: str | None = None, limit: int = 200) -> Select[Event, str]:
        q = (
            select(Event, Tenant.name)
            .outerjoin(Tenant, Tenant.id == Event.tenant_id)
            # Literal values: the partial index ix_events_operator (migration 0008) is
            # used only when the query's condition visibly implies the index's.
            .where(
                Event.kind.in_(
                    bindparam("kinds", OPERATOR_KINDS, expanding=True, literal_execute=True)
                )
            )
            .order_by(Event.id.desc())
            .limit(max(1, min(limit, 1000)))
        )
        if tenant_id is not None:
            q = q.where(Event.tenant_id == tenant_id)
        return q

    def operator_actions(
        self, tenant_id: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Newest first: ``{"at", "tenant", "actor", "kind", "reason", "detail"}``."""
        with self.db.read() as s:
            out = []
            for e, name in s.execute(self.query(tenant_id, limit)):
                detail = dict(e.detail or {})
                out.append(
                    {
                        "at": e.at,
                        "tenant": name or "",
                        "actor": e.actor,
                        "kind": e.kind,
                        "reason": str(detail.pop("reason", "") or detail.pop("was", "") or ""),
                        "detail": detail,
                    }
                )
            return out
