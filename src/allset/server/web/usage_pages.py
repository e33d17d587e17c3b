"""Usage over time (issue 7 item 4): the Client's owners and admins see their storage
and transfers per day as charts at ``/usage``; the operator console shows the same
charts per Client (``usage_view`` is shared). The figures come from
``accounts.usage.UsageHistory``; this module only turns them into charts and tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from allset.core.units import format_size
from allset.server.web.charts import Series, bar_chart
from allset.server.web.i18n import register

if TYPE_CHECKING:
    from allset.runtime import Runtime
    from allset.server.web.app import Ctx, WebFront

PERIODS = (7, 30, 90, 365)

register(
    {
        "nav.usage": ("Consommation", "Usage"),
        "usage.title": ("Consommation", "Usage"),
        "usage.period": ("Période", "Period"),
        "usage.days": ("{n} jours", "{n} days"),
        "usage.storage": ("Espace de stockage utilisé", "Storage used"),
        "usage.storage.summary": (
            "Espace utilisé par jour sur {n} jours : {last} aujourd'hui, au plus {peak}.",
            "Storage used per day over {n} days: {last} today, at most {peak}.",
        ),
        "usage.transfers": ("Transferts par jour", "Transfers per day"),
        "usage.transfers.summary": (
            "Octets envoyés et reçus par jour sur {n} jours : {up} envoyés, {down} reçus.",
            "Bytes sent and received per day over {n} days: {up} uploaded, {down} downloaded.",
        ),
        "usage.up": ("Envois (vers le serveur)", "Uploads (to the server)"),
        "usage.down": ("Téléchargements (depuis le serveur)", "Downloads (from the server)"),
        "usage.day": ("Jour", "Day"),
        "usage.table": ("Les chiffres, jour par jour", "The figures, day by day"),
        "usage.note": (
            "Jours UTC. Les transferts comptent chaque octet, tous protocoles et liens "
            "publics compris.",
            "UTC days. Transfers count every byte, all protocols and public links included.",
        ),
        "usage.forbidden": (
            "Cette page est réservée aux propriétaires et administrateurs.",
            "This page is for owners and administrators.",
        ),
    }
)


def period(request: Request) -> int:
    """The chosen number of days; anything else (garbage included) means 30."""
    raw = request.query_params.get("days", "30")
    return int(raw) if raw.isdigit() and int(raw) in PERIODS else 30


async def usage_view(ctx: Ctx, runtime: Runtime, tenant_id: str, days: int) -> dict[str, Any]:
    """Both charts and the table rows for one Client, ready for ``_usage.html``."""
    hist = await run_in_threadpool(runtime.usage.history, tenant_id, days)
    dates = [h.day for h in hist]
    used = [h.used_bytes for h in hist]
    ups = [h.bytes_in for h in hist]
    downs = [h.bytes_out for h in hist]
    storage = bar_chart(
        ctx.t("usage.storage"),
        ctx.t(
            "usage.storage.summary",
            n=days,
            last=format_size(used[-1]),
            peak=format_size(max(used)),
        ),
        dates,
        [Series(ctx.t("usage.storage"), "s1", used)],
        format_size,
    )
    transfers = bar_chart(
        ctx.t("usage.transfers"),
        ctx.t(
            "usage.transfers.summary",
            n=days,
            up=format_size(sum(ups)),
            down=format_size(sum(downs)),
        ),
        dates,
        [Series(ctx.t("usage.up"), "s1", ups), Series(ctx.t("usage.down"), "s2", downs)],
        format_size,
    )
    return {
        "storage_chart": storage,
        "transfer_chart": transfers,
        "usage_rows": list(reversed(hist)),
        "days": days,
        "periods": PERIODS,
    }


def routes(front: WebFront) -> list[BaseRoute]:
    async def usage(request: Request) -> Response:
        ctx, away = await front.signed_in(request)
        if away is not None or ctx.principal is None:
            return away or front.to_login(ctx)
        p = ctx.principal
        if p.is_operator:
            return RedirectResponse("/operator", status_code=303)
        if not p.is_manager:
            return front.render(ctx, "error.html", 403, message=ctx.t("usage.forbidden"))
        view = await usage_view(ctx, front.runtime, p.tenant_id, period(request))
        return front.render(ctx, "usage.html", here="/usage", **view)

    return [Route("/usage", usage, methods=["GET"])]
