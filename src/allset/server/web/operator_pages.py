"""Operator console (operator accounts only; anyone else signed in gets 404, as the API
does): Clients with their usage, suspension with a reason (R-OPS-1), bandwidth and live
transfers with an interrupt (R-BW-2), public link takedowns (R-SHARE-4), and the audit
trail of these actions (R-OPS-4).

Every action is a POST carrying the session's CSRF token, asks for confirmation in the
browser (``data-confirm``), is recorded with who/when/why by the façade, and ends with a
redirect carrying a message (a reload never repeats it). The console never shows a
Client's file names (R-STORE-6): live transfers show their protocol, not their path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allset.accounts.audit import Audit
from allset.core.errors import AllsetError, InvalidInput, NotFound
from allset.core.units import parse_rate
from allset.server.transfers import Transfers
from allset.server.web.i18n import register
from allset.server.web.usage_pages import period, usage_view

if TYPE_CHECKING:
    from allset.server.web.app import Ctx, WebFront

CLIENTS_PER_PAGE = 50
"""Rows of the Clients list: a service with thousands of Clients gets pages, not one
table that takes seconds to render and scroll."""

register(
    {
        # the page a suspended Client's user sees (WebFront.signed_in, R-OPS-1)
        "suspended.title": ("Service suspendu", "Service suspended"),
        "suspended.help": (
            "Vos fichiers sont conservés. Contactez l'opérateur ou la personne qui gère "
            "votre organisation ; l'accès reviendra dès la fin de la suspension.",
            "Your files are kept. Contact the operator or whoever manages your "
            "organisation; access comes back as soon as the suspension ends.",
        ),
        "operator.search": ("Rechercher un Client", "Search Clients"),
        "operator.search.hint": (
            "Nom, société, contact ou e-mail",
            "Name, company, contact or email",
        ),
        "operator.search.submit": ("Rechercher", "Search"),
        "operator.none": ("Aucun Client ne correspond.", "No Client matches."),
        "operator.shown": ("Clients {first} à {last} sur {n}", "Clients {first}–{last} of {n}"),
        "operator.prev": ("Page précédente", "Previous page"),
        "operator.next": ("Page suivante", "Next page"),
        "operator.company": ("Société", "Company"),
        "operator.contact": ("Contact", "Contact"),
        "operator.bandwidth": ("Débit", "Bandwidth"),
        "operator.active": ("actif", "active"),
        "operator.suspended": ("suspendu", "suspended"),
        "operator.client": ("Client {name}", "Client {name}"),
        "operator.back": ("Tous les Clients", "All Clients"),
        "operator.suspend.title": ("Suspendre le service", "Suspend the service"),
        "operator.suspend.reason": (
            "Motif (montré aux utilisateurs du Client)",
            "Reason (shown to the Client's users)",
        ),
        "operator.suspend.submit": ("Suspendre", "Suspend"),
        "operator.suspend.confirm": (
            "Suspendre ce Client ? Ses utilisateurs perdront l'accès (les données sont gardées).",
            "Suspend this Client? Its users lose access (the data are kept).",
        ),
        "operator.suspend.done": (
            "Client {name} suspendu : {reason}",
            "Client {name} suspended: {reason}",
        ),
        "operator.suspended.since": ("Suspendu : {reason}", "Suspended: {reason}"),
        "operator.resume.title": ("Rétablir le service", "Resume the service"),
        "operator.resume.note": ("Note (facultative)", "Note (optional)"),
        "operator.resume.submit": ("Rétablir", "Resume"),
        "operator.resume.confirm": (
            "Rétablir l'accès de ce Client ?",
            "Give this Client access back?",
        ),
        "operator.resume.done": ("Client {name} rétabli.", "Client {name} resumed."),
        "operator.limit.title": ("Limiter le débit", "Limit bandwidth"),
        "operator.limit.rate": (
            "Débit dans chaque sens (ex. 20Mbit)",
            "Rate each way (e.g. 20Mbit)",
        ),
        "operator.limit.why": ("Motif (facultatif)", "Reason (optional)"),
        "operator.limit.submit": ("Appliquer", "Apply"),
        "operator.limit.confirm": (
            "Changer le débit de ce Client (effet immédiat, transferts en cours compris) ?",
            "Change this Client's bandwidth (at once, transfers in progress too)?",
        ),
        "operator.limit.done": (
            "Débit de {name} : {rate} dans chaque sens.",
            "{name}'s bandwidth: {rate} each way.",
        ),
        "operator.transfers.title": ("Transferts en cours", "Live transfers"),
        "operator.transfers.none": ("Aucun transfert en cours.", "No transfer in progress."),
        "operator.transfers.user": ("Utilisateur", "User"),
        "operator.transfers.kind": ("Protocole", "Protocol"),
        "operator.transfers.in": ("Reçu", "Received"),
        "operator.transfers.out": ("Envoyé", "Sent"),
        "operator.transfers.rate": ("Débit", "Rate"),
        "operator.transfers.time": ("Durée", "Duration"),
        "operator.transfers.anonymous": ("(lien public)", "(public link)"),
        "operator.interrupt.why": (
            "Motif de l'interruption (facultatif)",
            "Reason for the interruption (optional)",
        ),
        "operator.interrupt.submit": ("Interrompre les transferts", "Interrupt transfers"),
        "operator.interrupt.confirm": (
            "Interrompre tous les transferts en cours de ce Client ?",
            "Interrupt all of this Client's transfers in progress?",
        ),
        "operator.interrupt.done": (
            "{n} transfert(s) interrompu(s).",
            "{n} transfer(s) interrupted.",
        ),
        "operator.interrupt.unavailable": (
            "Les transferts en cours ne sont pas visibles depuis ce processus.",
            "Live transfers are not visible from this process.",
        ),
        "operator.links.title": ("Liens publics", "Public links"),
        "operator.links.none": ("Aucun lien public.", "No public link."),
        "operator.links.find": ("Trouver un lien", "Find a link"),
        "operator.links.ref": (
            "Jeton, adresse /s/… ou identifiant du lien",
            "Token, /s/… address or link id",
        ),
        "operator.links.hint": ("Lien", "Link"),
        "operator.links.state": ("État", "State"),
        "operator.links.downloads": ("Téléchargements", "Downloads"),
        "operator.links.bytes": ("Octets servis", "Bytes served"),
        "operator.links.reason": ("Motif du retrait", "Takedown reason"),
        "operator.links.suspend": ("Retirer", "Take down"),
        "operator.links.suspend.confirm": (
            "Retirer ce lien ? Il répondra 451 dès la prochaine requête.",
            "Take this link down? It answers 451 from the next request.",
        ),
        "operator.links.suspend.done": ("Lien retiré : {reason}", "Link taken down: {reason}"),
        "operator.links.resume": ("Rétablir", "Put back"),
        "operator.links.resume.confirm": ("Rétablir ce lien ?", "Put this link back?"),
        "operator.links.resume.done": ("Lien rétabli.", "Link put back."),
        "operator.links.notfound": (
            "Aucun lien avec ce jeton ou cet identifiant.",
            "No link with that token or id.",
        ),
        "operator.audit.title": ("Journal des actions", "Audit trail"),
        "operator.audit.none": ("Aucune action enregistrée.", "No action recorded."),
        "operator.audit.when": ("Quand", "When"),
        "operator.audit.who": ("Qui", "Who"),
        "operator.audit.what": ("Quoi", "What"),
        "operator.audit.why": ("Pourquoi", "Why"),
        "operator.audit.all": ("Tout le journal", "Whole trail"),
        "operator.usage": ("Consommation", "Usage"),
        "operator.notfound": ("Cette page n'existe pas.", "This page does not exist."),
        "operator.reason.needed": (
            "Indiquez un motif : il est enregistré et montré au Client.",
            "Give a reason: it is recorded and shown to the Client.",
        ),
        "operator.error": ("Refusé : {detail}", "Refused: {detail}"),
    }
)


def _protocol(path: str) -> str:
    """What kind of transfer, without the Client's file names (R-STORE-6)."""
    for prefix, name in (
        ("/api/", "API"),
        ("/dav", "WebDAV"),
        ("/tus", "tus"),
        ("/s/", "link"),
    ):
        if path.startswith(prefix):
            return name
    return "web"


def format_rate(bits_per_second: float) -> str:
    if bits_per_second >= 1e9:
        return f"{bits_per_second / 1e9:.2f} Gbit/s"
    if bits_per_second >= 1e6:
        return f"{bits_per_second / 1e6:.1f} Mbit/s"
    return f"{bits_per_second / 1e3:.0f} kbit/s"


def routes(front: WebFront) -> list[BaseRoute]:
    front.env.filters["rate"] = format_rate
    accounts, links, audit = front.runtime.accounts, front.runtime.links, Audit(front.runtime.db)

    async def operator_ctx(request: Request) -> tuple[Ctx, Response | None]:
        """The operator's page context, or the answer for anyone else: the sign-in page
        for nobody signed in, 404 for a Client's user (the console does not exist)."""
        ctx, away = await front.signed_in(request)
        if away is not None or ctx.principal is None:
            return ctx, away or front.to_login(ctx)
        if not ctx.principal.is_operator:
            return ctx, front.render(ctx, "error.html", 404, message=ctx.t("operator.notfound"))
        return ctx, None

    def transfers_of(request: Request) -> Transfers | None:
        # The web front is mounted inside the main app; the registry lives on it.
        app = request.scope.get("app")
        reg = getattr(getattr(app, "state", None), "transfers", None)
        return reg if isinstance(reg, Transfers) else None

    def client_url(name: str) -> str:
        return "/operator/clients/" + quote(name, safe="")

    def back_to(fields: dict[str, str], default: str) -> str:
        back = fields.get("back", "")
        return back if back.startswith("/operator") and "//" not in back else default

    async def clients(request: Request) -> Response:
        ctx, away = await operator_ctx(request)
        if away is not None:
            return away
        q = request.query_params.get("q", "").strip()[:200]
        raw_page = request.query_params.get("page", "1")
        page = int(raw_page) if raw_page.isdigit() and 0 < len(raw_page) < 7 else 1
        page = max(1, page)
        tenants, total = await run_in_threadpool(
            accounts.find_tenants, q, (page - 1) * CLIENTS_PER_PAGE, CLIENTS_PER_PAGE
        )
        last = max(1, -(-total // CLIENTS_PER_PAGE))
        if page > last:  # a stale link (Clients were deleted): the last page there is
            page = last
            tenants, total = await run_in_threadpool(
                accounts.find_tenants, q, (page - 1) * CLIENTS_PER_PAGE, CLIENTS_PER_PAGE
            )
        for t in tenants:
            t["percent"] = (
                min(100, round(100 * t["used_bytes"] / t["quota_bytes"])) if t["quota_bytes"] else 0
            )

        def page_href(n: int) -> str:
            return "/operator?" + urlencode({**({"q": q} if q else {}), "page": n})

        first = (page - 1) * CLIENTS_PER_PAGE + 1
        return front.render(
            ctx,
            "operator.html",
            tenants=tenants,
            q=q,
            shown=ctx.t("operator.shown", first=first, last=first + len(tenants) - 1, n=total),
            prev_href=page_href(page - 1) if page > 1 else "",
            next_href=page_href(page + 1) if page < last else "",
        )

    async def client(request: Request) -> Response:
        ctx, away = await operator_ctx(request)
        if away is not None:
            return away
        name = request.path_params["name"]
        try:
            tenant = await run_in_threadpool(accounts.get_tenant, name)
        except NotFound:
            return front.render(ctx, "error.html", 404, message=ctx.t("operator.notfound"))
        reg = transfers_of(request)
        live = [t.to_json(name) for t in reg.snapshot(tenant["id"])] if reg else []
        for t in live:
            t["protocol"] = _protocol(t["path"])
        tenant_links = await run_in_threadpool(links.list_all, name, ctx.principal)
        actions = await run_in_threadpool(audit.operator_actions, tenant["id"], 50)
        days = period(request)
        here = client_url(name)
        view = await usage_view(ctx, front.runtime, tenant["id"], days)
        used, quota = tenant["used_bytes"], tenant["quota_bytes"]
        return front.render(
            ctx,
            "operator_client.html",
            c=tenant,
            url=here,
            live=live,
            links=tenant_links,
            actions=actions,
            percent=min(100, round(100 * used / quota)) if quota else 0,
            **{**view, "here": here},
        )

    async def act(request: Request, action: Any) -> Response:
        """Shared by every POST: operator check, CSRF check, the action, feedback."""
        ctx, away = await operator_ctx(request)
        if away is not None:
            return away
        fields = await front.form(ctx)
        if fields is None:
            return front.csrf_refused(ctx)
        name = request.path_params.get("name", "")
        default = client_url(name) if name else "/operator/links"
        try:
            message = await action(ctx, fields)
        except AllsetError as exc:
            return front.done(
                back_to(fields, default), ctx.t("operator.error", detail=exc.detail), "error"
            )
        return front.done(back_to(fields, default), message)

    async def suspend(request: Request) -> Response:
        async def do(ctx: Ctx, f: dict[str, str]) -> str:
            assert ctx.principal is not None
            reason = f.get("reason", "").strip()[:2000]
            name = request.path_params["name"]
            if not reason:
                return _raise(ctx.t("operator.reason.needed"))
            await run_in_threadpool(
                accounts.set_status, name, "suspended", reason, ctx.principal.email
            )
            return ctx.t("operator.suspend.done", name=name, reason=reason)

        return await act(request, do)

    async def resume(request: Request) -> Response:
        async def do(ctx: Ctx, f: dict[str, str]) -> str:
            assert ctx.principal is not None
            name = request.path_params["name"]
            note = f.get("reason", "").strip()[:2000]
            await run_in_threadpool(accounts.set_status, name, "active", note, ctx.principal.email)
            return ctx.t("operator.resume.done", name=name)

        return await act(request, do)

    async def bandwidth(request: Request) -> Response:
        async def do(ctx: Ctx, f: dict[str, str]) -> str:
            assert ctx.principal is not None
            name = request.path_params["name"]
            rate = parse_rate(f.get("rate", "").strip()[:40])
            why = f.get("reason", "").strip()[:2000]
            t = await run_in_threadpool(
                lambda: accounts.set_bandwidth(name, rate, rate, ctx.principal.email, why)  # type: ignore[union-attr]
            )
            reg = transfers_of(request)
            if reg is not None:
                reg.reload(t["id"])  # transfers in progress slow down now, not in 10 s
            return ctx.t("operator.limit.done", name=name, rate=format_rate(rate * 8))

        return await act(request, do)

    async def interrupt(request: Request) -> Response:
        async def do(ctx: Ctx, f: dict[str, str]) -> str:
            assert ctx.principal is not None
            name = request.path_params["name"]
            t = await run_in_threadpool(accounts.get_tenant, name)
            reg = transfers_of(request)
            if reg is None:
                return _raise(ctx.t("operator.interrupt.unavailable"))
            cut = reg.interrupt(t["id"])
            detail: dict[str, Any] = {"count": cut}
            if f.get("reason", "").strip():
                detail["reason"] = f["reason"].strip()[:2000]
            await run_in_threadpool(
                audit.record, t["id"], ctx.principal.email, "transfers.interrupt", detail
            )
            return ctx.t("operator.interrupt.done", n=cut)

        return await act(request, do)

    async def link_suspend(request: Request) -> Response:
        async def do(ctx: Ctx, f: dict[str, str]) -> str:
            reason = f.get("reason", "").strip()
            if not reason:
                return _raise(ctx.t("operator.reason.needed"))
            ref = request.path_params["ref"]
            await run_in_threadpool(links.suspend, ref, reason, ctx.principal)
            return ctx.t("operator.links.suspend.done", reason=reason[:2000])

        return await act(request, do)

    async def link_resume(request: Request) -> Response:
        async def do(ctx: Ctx, f: dict[str, str]) -> str:
            await run_in_threadpool(links.resume, request.path_params["ref"], ctx.principal)
            return ctx.t("operator.links.resume.done")

        return await act(request, do)

    async def link_find(request: Request) -> Response:
        ctx, away = await operator_ctx(request)
        if away is not None:
            return away
        ref = request.query_params.get("ref", "").strip()[:400]
        found: dict[str, Any] | None = None
        error = ""
        if ref:
            try:
                found = await run_in_threadpool(links.find, ref, ctx.principal)
            except NotFound:
                error = ctx.t("operator.links.notfound")
        return front.render(
            ctx,
            "operator_links.html",
            ref=ref,
            found=found,
            error=error,
            status=404 if error else 200,
        )

    async def audit_page(request: Request) -> Response:
        ctx, away = await operator_ctx(request)
        if away is not None:
            return away
        actions = await run_in_threadpool(audit.operator_actions, None, 300)
        return front.render(ctx, "operator_audit.html", actions=actions)

    return [
        Route("/operator", clients, methods=["GET"]),
        Route("/operator/clients/{name}", client, methods=["GET"]),
        Route("/operator/clients/{name}/suspend", suspend, methods=["POST"]),
        Route("/operator/clients/{name}/resume", resume, methods=["POST"]),
        Route("/operator/clients/{name}/bandwidth", bandwidth, methods=["POST"]),
        Route("/operator/clients/{name}/interrupt", interrupt, methods=["POST"]),
        Route("/operator/links", link_find, methods=["GET"]),
        Route("/operator/links/{ref}/suspend", link_suspend, methods=["POST"]),
        Route("/operator/links/{ref}/resume", link_resume, methods=["POST"]),
        Route("/operator/audit", audit_page, methods=["GET"]),
    ]


def _raise(message: str) -> str:
    """Refuse an action with a message for people (shown as an error after redirect)."""
    raise InvalidInput(message)
