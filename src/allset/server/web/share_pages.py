"""Public links in the web interface (R-SHARE-2..5): create (a file or folder, expiry —
7 days unless chosen, at most the plan's maximum —, optional password, optional
download limit, drop folder), list with download counts and bytes, revoke, and see
when and why the operator suspended one.

``files.links.LinkService`` decides everything (expiry bounds, who sees which link:
owners and admins all of their Client's, members their own); this module renders. The
link's URL exists only in the answer to its creation: only a hash of its token is kept.
The files area links here as ``/shares/new?path=…``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from allset.core.errors import AllsetError, InvalidInput, NotFound
from allset.server.web.i18n import register

if TYPE_CHECKING:
    from allset.server.web.app import Ctx, WebFront

register(
    {
        "nav.shares": ("Partages", "Shares"),
        "shares.title": ("Liens publics", "Public links"),
        "shares.help": (
            "Un lien public donne accès à un fichier ou un dossier à toute personne qui le "
            "connaît, jusqu'à son expiration. Il n'est pas indexé par les moteurs de recherche.",
            "A public link gives anyone who knows it access to a file or folder until it "
            "expires. Search engines do not index it.",
        ),
        "shares.new": ("Nouveau lien public", "New public link"),
        "shares.none": ("Aucun lien public pour l'instant.", "No public links yet."),
        "shares.path": ("Fichier ou dossier", "File or folder"),
        "shares.path.placeholder": ("ex. /Rapports/bilan.pdf", "e.g. /Reports/summary.pdf"),
        "shares.days": ("Expire dans (jours)", "Expires in (days)"),
        "shares.days.help": ("{max} jours au plus.", "At most {max} days."),
        "shares.password": ("Mot de passe (facultatif)", "Password (optional)"),
        "shares.max": (
            "Nombre maximal de téléchargements (facultatif)",
            "Download limit (optional)",
        ),
        "shares.drop": (
            "Dépôt de fichiers : les visiteurs peuvent seulement envoyer des fichiers "
            "dans ce dossier",
            "Drop folder: visitors can only upload files into this folder",
        ),
        "shares.submit": ("Créer le lien", "Create the link"),
        "shares.created": ("Votre lien public", "Your public link"),
        "shares.once": (
            "Copiez-le maintenant : il ne sera plus jamais affiché (seule une empreinte "
            "est conservée).",
            "Copy it now: it will never be shown again (only a hash of it is kept).",
        ),
        "shares.back": ("Retour aux liens publics", "Back to public links"),
        "shares.col.path": ("Élément", "Item"),
        "shares.col.state": ("État", "State"),
        "shares.col.expires": ("Expire", "Expires"),
        "shares.col.downloads": ("Téléchargements", "Downloads"),
        "shares.col.bytes": ("Volume servi", "Bytes served"),
        "shares.col.by": ("Créé par", "Created by"),
        "shares.state.active": ("actif", "active"),
        "shares.state.expired": ("expiré", "expired"),
        "shares.state.exhausted": ("limite atteinte", "limit reached"),
        "shares.state.revoked": ("révoqué", "revoked"),
        "shares.state.suspended": ("suspendu", "suspended"),
        "shares.suspended": (
            "Suspendu par l'opérateur le {when} : {reason}",
            "Suspended by the operator on {when}: {reason}",
        ),
        "shares.gone": ("(élément supprimé)", "(item deleted)"),
        "shares.password.yes": ("protégé par mot de passe", "password protected"),
        "shares.drop.yes": ("dépôt", "drop folder"),
        "shares.uploads": ("{n} fichier(s) reçu(s)", "{n} file(s) received"),
        "shares.of": ("{n} sur {max}", "{n} of {max}"),
        "shares.revoke": ("Révoquer", "Revoke"),
        "shares.revoke.label": ("Révoquer le lien vers {path}", "Revoke the link to {path}"),
        "shares.revoked": (
            "Lien révoqué : il ne fonctionne plus.",
            "Link revoked: it no longer works.",
        ),
        "shares.notfound": (
            "Il n'y a rien à « {path} » (ou vous n'y avez pas accès).",
            "There is nothing at “{path}” (or you have no access to it).",
        ),
        "shares.baddays": (
            "La durée doit être un nombre de jours entre 1 et {max}.",
            "The duration must be a number of days between 1 and {max}.",
        ),
        "shares.badmax": (
            "La limite de téléchargements doit être un nombre entier positif.",
            "The download limit must be a positive whole number.",
        ),
        "shares.bad": ("Lien refusé : {detail}", "Link refused: {detail}"),
    }
)


def routes(front: WebFront) -> list[BaseRoute]:
    links = front.runtime.links

    async def member(request: Request) -> tuple[Ctx, Response | None]:
        ctx, away = await front.signed_in(request)
        if away is None and ctx.principal is not None and ctx.principal.is_operator:
            return ctx, front.render(ctx, "error.html", 404, message=ctx.t("files.notfound"))
        return ctx, away

    def form_page(ctx: Ctx, status: int = 200, error: str = "", **values: Any) -> Response:
        values.setdefault("days", links.default_days)
        return front.render(
            ctx,
            "share_new.html",
            status,
            error=error,
            max_days=links.max_days,
            v=values,
        )

    async def shares(request: Request) -> Response:
        ctx, away = await member(request)
        if away is not None:
            return away
        assert ctx.principal is not None
        found = await run_in_threadpool(links.list_mine, ctx.principal)
        found.reverse()  # newest first
        return front.render(ctx, "shares.html", links=found)

    async def new(request: Request) -> Response:
        ctx, away = await member(request)
        if away is not None:
            return away
        return form_page(ctx, path=request.query_params.get("path", "")[:8192])

    async def create(request: Request) -> Response:
        ctx, away = await member(request)
        if away is not None or ctx.principal is None:
            return away or front.to_login(ctx)
        fields = await front.form(ctx)
        if fields is None:
            return front.csrf_refused(ctx)
        path = fields.get("path", "").strip()[:8192]
        days_text, max_text = fields.get("days", "").strip(), fields.get("max", "").strip()
        drop = fields.get("drop") == "1"
        shown = {"path": path, "days": days_text, "max": max_text, "drop": drop}
        try:
            days = int(days_text) if days_text else links.default_days
            if not 1 <= days <= links.max_days:
                raise ValueError(days)
        except ValueError:
            msg = ctx.t("shares.baddays", max=links.max_days)
            return form_page(ctx, 400, msg, **shown)
        try:
            max_downloads = int(max_text) if max_text else None
            if max_downloads is not None and max_downloads < 1:
                raise ValueError(max_downloads)
        except ValueError:
            return form_page(ctx, 400, ctx.t("shares.badmax"), **shown)
        p = ctx.principal
        try:
            view, token = await run_in_threadpool(
                lambda: links.create(
                    p,
                    path or "/",
                    expires_in=timedelta(days=days),
                    password=fields.get("password") or None,
                    max_downloads=max_downloads,
                    drop=drop,
                )
            )
        except NotFound:
            return form_page(ctx, 404, ctx.t("shares.notfound", path=path), **shown)
        except InvalidInput as exc:
            return form_page(ctx, 400, ctx.t("shares.bad", detail=exc.detail), **shown)
        except AllsetError as exc:
            return form_page(ctx, exc.status, ctx.t("shares.bad", detail=exc.detail), **shown)
        base = front.runtime.settings.public_url.rstrip("/")
        url = f"{base or f'{request.url.scheme}://{request.url.netloc}'}/s/{token}"
        return front.render(ctx, "share_created.html", 201, link=view, url=url)

    async def revoke(request: Request) -> Response:
        ctx, away = await member(request)
        if away is not None or ctx.principal is None:
            return away or front.to_login(ctx)
        fields = await front.form(ctx)
        if fields is None:
            return front.csrf_refused(ctx)
        try:
            await run_in_threadpool(links.revoke, ctx.principal, request.path_params["lid"])
        except NotFound:
            return front.render(ctx, "error.html", 404, message=ctx.t("files.notfound"))
        return front.done("/shares", ctx.t("shares.revoked"))

    async def shares_slash(request: Request) -> Response:
        return RedirectResponse("/shares", status_code=308)

    return [
        Route("/shares", shares, methods=["GET"]),
        Route("/shares/", shares_slash, methods=["GET"]),
        Route("/shares/new", new, methods=["GET"]),
        Route("/shares", create, methods=["POST"]),
        Route("/shares/{lid}/revoke", revoke, methods=["POST"]),
    ]
