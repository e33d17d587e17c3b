"""Client admin area (owners and admins only; anyone else gets the same 404 as a page
that does not exist): the Client's users (invite by email, role, remove), each user's
folder access, and the Client's contact details (R-PRIV-1, R-PRIV-3).

The same façades as ``/api/v1/users``: ``accounts.invitations.Members`` for users,
``files.access`` for grants, ``accounts.contacts`` for contact details; every one of
them scopes by the caller's Client, so another Client's user ids are 404 here too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allset.accounts.contacts import BadPhone, Contacts, display_phone
from allset.accounts.invitations import Members, invitation_email, invite_link
from allset.core.errors import (
    AllsetError,
    AlreadyExists,
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidName,
    NotFound,
)
from allset.core.principal import Principal
from allset.files import access
from allset.files.locks import break_lock, client_locks
from allset.mail import Mailer, MailFailed
from allset.server.web import share_pages
from allset.server.web.account_pages import base_url
from allset.server.web.i18n import register

if TYPE_CHECKING:
    from allset.server.web.app import Ctx, WebFront

log = logging.getLogger("allset.web.admin")

register(
    {
        "nav.admin": ("Administration", "Admin"),
        "admin.title": ("Administration de votre organisation", "Your organisation's admin"),
        "admin.users": ("Utilisateurs", "Users"),
        "admin.email": ("Adresse e-mail", "Email address"),
        "admin.role": ("Rôle", "Role"),
        "admin.status": ("État", "Status"),
        "admin.role.owner": ("Propriétaire", "Owner"),
        "admin.role.admin": ("Administrateur", "Admin"),
        "admin.role.member": ("Membre", "Member"),
        "admin.status.active": ("actif", "active"),
        "admin.status.invited": ("invité", "invited"),
        "admin.status.invitation-expired": ("invitation expirée", "invitation expired"),
        "admin.status.removed": ("retiré", "removed"),
        "admin.manage": ("Gérer", "Manage"),
        "admin.manage.label": ("Gérer {email}", "Manage {email}"),
        "admin.invite.title": ("Inviter quelqu'un", "Invite someone"),
        "admin.invite.help": (
            "La personne reçoit un lien par e-mail, valable 7 jours, pour choisir son mot "
            "de passe. Un membre ne voit que les dossiers que vous lui ouvrez.",
            "They get a link by email, valid for 7 days, to choose their password. A member "
            "sees only the folders you open to them.",
        ),
        "admin.invite.submit": ("Inviter", "Invite"),
        "admin.invite.sent": ("Invitation envoyée à {email}.", "Invitation sent to {email}."),
        "admin.invite.link": (
            "Aucun serveur d'e-mail n'est configuré : transmettez vous-même ce lien à {email} "
            "(il ne sera plus affiché) :",
            "No mail server is configured: pass this link to {email} yourself (it will not "
            "be shown again):",
        ),
        "admin.invite.failed": (
            "L'invitation est créée mais l'e-mail n'est pas parti ({detail}). Réessayez "
            "avec « Renvoyer l'invitation ».",
            "The invitation exists but the email could not be sent ({detail}). Try again "
            "with “Send the invitation again”.",
        ),
        "admin.invite.exists": (
            "{email} a déjà un compte.",
            "{email} already has an account.",
        ),
        "admin.invite.bademail": (
            "« {email} » n'est pas une adresse e-mail.",
            "“{email}” is not an email address.",
        ),
        "admin.reinvite": ("Renvoyer l'invitation", "Send the invitation again"),
        "admin.user.title": ("Utilisateur {email}", "User {email}"),
        "admin.user.role.submit": ("Changer le rôle", "Change role"),
        "admin.user.role.done": (
            "{email} est maintenant {role}.",
            "{email} is now {role}.",
        ),
        "admin.user.remove": ("Retirer cet utilisateur", "Remove this user"),
        "admin.user.remove.help": (
            "Toutes ses sessions et tous ses mots de passe d'application cessent de "
            "fonctionner immédiatement ; ses accès aux dossiers sont retirés ; ses fichiers "
            "restent à votre organisation.",
            "Every session and app password of theirs stops working at once; their folder "
            "access is withdrawn; their files stay with your organisation.",
        ),
        "admin.user.remove.confirm": (
            "Je confirme le retrait de {email}",
            "I confirm removing {email}",
        ),
        "admin.user.remove.unconfirmed": (
            "Cochez la case de confirmation pour retirer cet utilisateur.",
            "Tick the confirmation box to remove this user.",
        ),
        "admin.user.removed": ("{email} a été retiré.", "{email} has been removed."),
        "admin.user.self": (
            "Vous ne pouvez pas modifier ni retirer votre propre compte ; demandez à un "
            "autre propriétaire.",
            "You cannot change or remove your own account; ask another owner.",
        ),
        "admin.user.owner_only": (
            "Seul un propriétaire peut faire cela.",
            "Only an owner can do this.",
        ),
        "admin.grants": ("Accès aux dossiers", "Folder access"),
        "admin.grants.help": (
            "Les propriétaires et administrateurs voient tout. Un membre voit les dossiers "
            "ouverts ici, et tout ce qu'ils contiennent.",
            "Owners and admins see everything. A member sees the folders opened here, and "
            "everything inside them.",
        ),
        "admin.grants.none": ("Aucun dossier ouvert.", "No folder opened."),
        "admin.grant.folder": ("Dossier", "Folder"),
        "admin.grant.access": ("Accès", "Access"),
        "admin.grant.read": ("lecture seule", "read only"),
        "admin.grant.write": ("lecture et écriture", "read and write"),
        "admin.grant.trashed": ("(dossier à la corbeille)", "(folder in the trash)"),
        "admin.grant.submit": ("Ouvrir ce dossier", "Open this folder"),
        "admin.grant.placeholder": ("ex. /Projets/2026", "e.g. /Projects/2026"),
        "admin.grant.done": (
            "{email} a accès à {path} ({access}).",
            "{email} has access to {path} ({access}).",
        ),
        "admin.grant.revoke": ("Retirer", "Withdraw"),
        "admin.grant.revoke.label": ("Retirer l'accès à {path}", "Withdraw access to {path}"),
        "admin.grant.revoked": ("Accès retiré.", "Access withdrawn."),
        "admin.grant.notfound": (
            "Il n'y a pas de dossier à « {path} ».",
            "There is no folder at “{path}”.",
        ),
        "admin.grant.badpath": (
            "Ce chemin de dossier n'est pas valable : {detail}",
            "This folder path is not valid: {detail}",
        ),
        "admin.grant.file": (
            "« {path} » est un fichier ; l'accès se donne à des dossiers.",
            "“{path}” is a file; access is given to folders.",
        ),
        "admin.contact": ("Coordonnées de l'organisation", "Organisation contact details"),
        "admin.contact.help": (
            "Tenez-les à jour : le contrat demande de signaler tout changement sous 48 heures, "
            "et des coordonnées fausses ou périmées peuvent entraîner une suspension.",
            "Keep them up to date: the contract asks you to report any change within 48 "
            "hours, and false or outdated details can lead to a suspension.",
        ),
        "admin.contact.company": ("Raison sociale", "Company name"),
        "admin.contact.address": ("Adresse postale", "Postal address"),
        "admin.contact.name": ("Nom du contact", "Contact name"),
        "admin.contact.email": ("E-mail du contact", "Contact email"),
        "admin.contact.phones": (
            "Téléphones (un par ligne ; hors de France, avec l'indicatif +)",
            "Phones (one per line; outside France, with the + country code)",
        ),
        "admin.contact.submit": ("Enregistrer les coordonnées", "Save contact details"),
        "admin.contact.saved": ("Coordonnées enregistrées.", "Contact details saved."),
        "admin.contact.unchanged": ("Rien n'a changé.", "Nothing changed."),
        "admin.contact.badphone": (
            "« {number} » n'est pas un numéro de téléphone valable. Écrivez un numéro "
            "français (01 23 45 67 89) ou un numéro avec son indicatif (+32 2 555 12 12). "
            "Rien n'a été enregistré.",
            "“{number}” is not a valid phone number. Write a French number "
            "(01 23 45 67 89) or a number with its country code (+32 2 555 12 12). Nothing "
            "was saved.",
        ),
        "admin.contact.bad": (
            "Coordonnées refusées : {detail} Rien n'a été enregistré.",
            "Contact details refused: {detail} Nothing was saved.",
        ),
        "admin.locks": ("Verrous WebDAV", "WebDAV locks"),
        "admin.locks.help": (
            "Un éditeur (Word, LibreOffice…) qui a planté garde son verrou jusqu'à son "
            "échéance, et les autres ne peuvent plus enregistrer le document. Lever le "
            "verrou rend la main aux autres ; l'éditeur qui le tenait ne pourra plus "
            "enregistrer sans rouvrir le document.",
            "An editor (Word, LibreOffice…) that crashed keeps its lock until it expires, "
            "and nobody else can save the document meanwhile. Breaking the lock lets the "
            "others save; the editor that held it must open the document again to save.",
        ),
        "admin.locks.none": ("Aucun document n'est verrouillé.", "No document is locked."),
        "admin.locks.path": ("Document", "Document"),
        "admin.locks.user": ("Verrouillé par", "Locked by"),
        "admin.locks.since": ("Depuis", "Since"),
        "admin.locks.until": ("Échéance", "Expires"),
        "admin.locks.break": ("Lever le verrou", "Break the lock"),
        "admin.locks.broken": ("Verrou levé : {path}", "Lock broken: {path}"),
        "admin.locks.gone": (
            "Ce verrou n'existe plus : il a été libéré ou il a expiré.",
            "That lock is gone: it was released or has expired.",
        ),
    }
)


def who(ctx: Ctx) -> Principal:
    """The signed-in manager (``manager`` has checked there is one)."""
    assert ctx.principal is not None
    return ctx.principal


def routes(front: WebFront) -> list[BaseRoute]:
    rt = front.runtime
    contacts = Contacts(rt.accounts)

    def members() -> Members:
        return Members(rt.accounts, rt.settings)

    def not_found(ctx: Ctx) -> Response:
        return front.render(ctx, "error.html", 404, message=ctx.t("files.notfound"))

    async def manager(request: Request) -> tuple[Ctx, Response | None]:
        """Owners and admins only; everyone else (members, operators) sees a 404."""
        ctx, away = await front.signed_in(request)
        if away is not None:
            return ctx, away
        p = ctx.principal
        if p is None or not p.is_manager:
            return ctx, not_found(ctx)
        return ctx, None

    def role_name(ctx: Ctx, role: str) -> str:
        return ctx.t(f"admin.role.{role}")

    async def send_invitation(ctx: Ctx, invited: dict[str, Any]) -> tuple[str, str, str]:
        """Email the one-time link: returns (message, kind, link to show or "")."""
        assert ctx.principal is not None
        # Behind no public_url, the address this owner reached us at is the one that
        # works (the settings' own host:port may be 0.0.0.0 or an ephemeral port).
        link = invite_link(rt.settings, invited["token"])
        if not rt.settings.public_url:
            link = f"{base_url(front, ctx.request)}/invite#token={invited['token']}"
        mailer = Mailer.from_settings(rt.settings)
        email = invited["email"]
        if not mailer.configured:
            return ctx.t("admin.invite.link", email=email), "ok", link
        subject, body = invitation_email(
            invited["tenant"], ctx.principal.email, link, invited["expires_at"]
        )
        try:
            await run_in_threadpool(mailer.send, email, subject, body)
        except MailFailed as exc:
            log.warning("invitation email not sent: %s", exc.detail)
            return ctx.t("admin.invite.failed", detail=exc.detail), "error", ""
        return ctx.t("admin.invite.sent", email=email), "ok", ""

    # ---- users -------------------------------------------------------------------
    async def overview(ctx: Ctx, status: int = 200, **extra: Any) -> Response:
        users = await run_in_threadpool(members().list_users, who(ctx))
        return front.render(ctx, "admin.html", status, users=users, **extra)

    async def admin(request: Request) -> Response:
        ctx, away = await manager(request)
        if away is not None:
            return away
        return await overview(ctx)

    async def invite(request: Request) -> Response:
        ctx, away = await manager(request)
        if away is not None:
            return away
        fields = await front.form(ctx)
        if fields is None:
            return front.csrf_refused(ctx)
        email, role = fields.get("email", "").strip()[:320], fields.get("role", "member")
        try:
            invited = await run_in_threadpool(members().invite, who(ctx), email, role)
        except AlreadyExists:
            msg = ctx.t("admin.invite.exists", email=email)
            return await overview(ctx, 409, invite_error=msg, email=email)
        except Forbidden:
            msg = ctx.t("admin.user.owner_only")
            return await overview(ctx, 403, invite_error=msg, email=email)
        except InvalidInput:
            msg = ctx.t("admin.invite.bademail", email=email)
            return await overview(ctx, 400, invite_error=msg, email=email)
        message, kind, link = await send_invitation(ctx, invited)
        if link:  # shown once, on this answer only (never in a cookie or a URL)
            return await overview(ctx, 201, invite_link=link, invite_message=message)
        return front.done("/admin", message, kind)

    async def user_page(ctx: Ctx, user_id: str, status: int = 200, **extra: Any) -> Response:
        try:
            user = await run_in_threadpool(members().get_user, who(ctx), user_id)
            grants = await run_in_threadpool(access.grants_of, rt.files, who(ctx), user_id)
        except NotFound:
            return not_found(ctx)
        return front.render(ctx, "admin_user.html", status, user=user, grants=grants, **extra)

    async def user(request: Request) -> Response:
        ctx, away = await manager(request)
        if away is not None:
            return away
        return await user_page(ctx, request.path_params["uid"])

    async def user_action(request: Request) -> Response:
        """One POST route per user for role, removal, re-invitation and grants: the
        ``action`` field says which (each form names its own)."""
        ctx, away = await manager(request)
        if away is not None or ctx.principal is None:
            return away or front.to_login(ctx)
        fields = await front.form(ctx)
        if fields is None:
            return front.csrf_refused(ctx)
        uid, action = request.path_params["uid"], fields.get("action", "")
        here = f"/admin/users/{uid}"
        m, p = members(), ctx.principal
        try:
            if action == "role":
                role = fields.get("role", "")
                view = await run_in_threadpool(m.set_role, p, uid, role)
                msg = ctx.t("admin.user.role.done", email=view["email"], role=role_name(ctx, role))
                return front.done(here, msg)
            if action == "remove":
                view = await run_in_threadpool(m.get_user, p, uid)
                if fields.get("confirm") != "1":
                    msg = ctx.t("admin.user.remove.unconfirmed")
                    return await user_page(ctx, uid, 400, error=msg)
                await run_in_threadpool(m.remove, p, uid)
                return front.done("/admin", ctx.t("admin.user.removed", email=view["email"]))
            if action == "reinvite":
                invited = await run_in_threadpool(m.reinvite, p, uid)
                message, kind, link = await send_invitation(ctx, invited)
                if link:
                    return await user_page(ctx, uid, 201, invite_link=link, invite_message=message)
                return front.done(here, message, kind)
            if action == "grant":
                path = fields.get("path", "").strip() or "/"
                level = fields.get("access", "read")
                view = await run_in_threadpool(m.get_user, p, uid)
                try:
                    g = await run_in_threadpool(access.set_grant, rt.files, p, uid, path, level)
                except NotFound:
                    msg = ctx.t("admin.grant.notfound", path=path)
                    return await user_page(ctx, uid, 404, grant_error=msg, grant_path=path)
                except InvalidName as exc:
                    msg = ctx.t("admin.grant.badpath", detail=exc.detail)
                    return await user_page(ctx, uid, 400, grant_error=msg, grant_path=path)
                except InvalidInput:
                    msg = ctx.t("admin.grant.file", path=path)
                    return await user_page(ctx, uid, 400, grant_error=msg, grant_path=path)
                msg = ctx.t(
                    "admin.grant.done",
                    email=view["email"],
                    path=g["path"],
                    access=ctx.t(f"admin.grant.{g['access']}"),
                )
                return front.done(here, msg)
            if action == "ungrant":
                gid = fields.get("grant", "")
                await run_in_threadpool(access.remove_grant, rt.files, p, uid, gid)
                return front.done(here, ctx.t("admin.grant.revoked"))
        except NotFound:
            return not_found(ctx)
        except Conflict:
            return await user_page(ctx, uid, 409, error=ctx.t("admin.user.self"))
        except Forbidden:
            return await user_page(ctx, uid, 403, error=ctx.t("admin.user.owner_only"))
        except AllsetError as exc:
            return await user_page(ctx, uid, exc.status, error=exc.detail)
        return not_found(ctx)

    # ---- contact details -----------------------------------------------------------
    async def contact_page(
        ctx: Ctx, values: dict[str, Any] | None = None, status: int = 200, error: str = ""
    ) -> Response:
        if values is None:
            values = await run_in_threadpool(contacts.get, who(ctx))
            values["phones_text"] = "\n".join(display_phone(x) for x in values["phones"])
        return front.render(ctx, "admin_contact.html", status, c=values, error=error)

    async def contact(request: Request) -> Response:
        ctx, away = await manager(request)
        if away is not None:
            return away
        return await contact_page(ctx)

    async def contact_save(request: Request) -> Response:
        ctx, away = await manager(request)
        if away is not None or ctx.principal is None:
            return away or front.to_login(ctx)
        fields = await front.form(ctx)
        if fields is None:
            return front.csrf_refused(ctx)
        values: dict[str, Any] = {
            "company": fields.get("company", ""),
            "postal_address": fields.get("postal_address", ""),
            "contact_name": fields.get("contact_name", ""),
            "contact_email": fields.get("contact_email", ""),
            "phones": fields.get("phones", "").replace(",", "\n").splitlines(),
        }
        try:
            saved = await run_in_threadpool(lambda: contacts.update(who(ctx), **values))
        except BadPhone as exc:
            shown = dict(values, phones_text=fields.get("phones", ""))
            msg = ctx.t("admin.contact.badphone", number=exc.extra.get("number", ""))
            return await contact_page(ctx, shown, 400, msg)
        except InvalidInput as exc:
            shown = dict(values, phones_text=fields.get("phones", ""))
            return await contact_page(
                ctx, shown, 400, ctx.t("admin.contact.bad", detail=exc.detail)
            )
        key = "admin.contact.saved" if saved["changed"] else "admin.contact.unchanged"
        return front.done("/admin/contact", ctx.t(key))

    # ---- WebDAV locks left behind (the same decisions as /api/v1/locks) -------------
    async def locks(request: Request) -> Response:
        ctx, away = await manager(request)
        if away is not None:
            return away
        held = await run_in_threadpool(client_locks, rt.db, who(ctx))
        return front.render(ctx, "admin_locks.html", 200, locks=held)

    async def lock_break(request: Request) -> Response:
        ctx, away = await manager(request)
        if away is not None:
            return away
        fields = await front.form(ctx)
        if fields is None:
            return front.csrf_refused(ctx)
        try:
            broken = await run_in_threadpool(break_lock, rt.db, who(ctx), fields.get("lock", ""))
        except NotFound:
            return front.done("/admin/locks", ctx.t("admin.locks.gone"), "error")
        return front.done("/admin/locks", ctx.t("admin.locks.broken", path=broken["path"]))

    # Public links are everyone's (members share what they may read), not admin-only;
    # their pages live in share_pages and are mounted here so that app.py's list of
    # areas stays as it is while several people edit it.
    return [
        *share_pages.routes(front),
        Route("/admin", admin, methods=["GET"]),
        Route("/admin/invite", invite, methods=["POST"]),
        Route("/admin/users/{uid}", user, methods=["GET"]),
        Route("/admin/users/{uid}", user_action, methods=["POST"]),
        Route("/admin/contact", contact, methods=["GET"]),
        Route("/admin/contact", contact_save, methods=["POST"]),
        Route("/admin/locks", locks, methods=["GET"]),
        Route("/admin/locks", lock_break, methods=["POST"]),
    ]
