"""Account area: sessions and app passwords (revoke, create one shown once with the
WebDAV address and the certificate fingerprint), password change, and the public pages
that need no session: "I lost my password" (R-SEC-2), the reset link's page and the
invitation's page.

Policy lives in ``accounts.passwords`` and ``accounts.invitations``; this module parses
forms, calls them and renders. Forms of a signed-in user carry the session's CSRF token
(``front.form``); the public forms carry a double-submit token of their own (a random
value in a ``__Host-``, SameSite=Strict cookie and in the form), like the sign-in form.
One-time tokens (reset, invitation) travel in the link's fragment, which browsers never
send to a server nor put in a ``Referer``; ``static/fragment.js`` copies it into the
form, and without script the user pastes it.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from allset.accounts.invitations import Members
from allset.accounts.passwords import Passwords, ResetTicket
from allset.core.errors import (
    AllsetError,
    Gone,
    InvalidInput,
    NotFound,
    Suspended,
    TooManyAttempts,
    Unauthenticated,
)
from allset.mail import Mailer
from allset.server.auth import SESSION_COOKIE, client_ip
from allset.server.web.i18n import register
from allset.tls import fingerprint

if TYPE_CHECKING:
    from allset.server.web.app import Ctx, WebFront

log = logging.getLogger("allset.web.account")
FORM_COOKIE = "__Host-allset-form"  # double-submit token of the public forms

register(
    {
        "nav.account.title": ("Mon compte", "My account"),
        "account.sessions": (
            "Sessions et mots de passe d'application",
            "Sessions and app passwords",
        ),
        "account.sessions.help": (
            "Chaque appareil connecté apparaît ici. Révoquez ce que vous ne reconnaissez pas.",
            "Every signed-in device is listed here. Revoke anything you do not recognise.",
        ),
        "account.kind.session": ("Session web", "Web session"),
        "account.kind.app_password": ("Mot de passe d'application", "App password"),
        "account.name": ("Nom", "Name"),
        "account.kind": ("Type", "Type"),
        "account.created": ("Créé", "Created"),
        "account.lastused": ("Dernière utilisation", "Last used"),
        "account.never": ("jamais", "never"),
        "account.current": ("cette session", "this session"),
        "account.revoke": ("Révoquer", "Revoke"),
        "account.revoke.label": ("Révoquer « {name} »", "Revoke “{name}”"),
        "account.revoked": ("« {name} » ne fonctionne plus.", "“{name}” no longer works."),
        "account.none": ("Aucune autre session.", "No other sessions."),
        "account.new.title": ("Nouveau mot de passe d'application", "New app password"),
        "account.new.help": (
            "Pour le logiciel allset ou un client WebDAV (Explorateur Windows, Finder, "
            "rclone…) : il ne donne pas accès à ce site et se révoque seul.",
            "For the allset software or a WebDAV client (Windows Explorer, Finder, "
            "rclone…): it cannot sign in to this site and can be revoked on its own.",
        ),
        "account.new.name": ("Nom de l'appareil", "Device name"),
        "account.new.placeholder": ("ex. PC du bureau", "e.g. office PC"),
        "account.new.submit": ("Créer", "Create"),
        "account.new.noname": (
            "Donnez un nom à l'appareil (100 caractères au plus).",
            "Give the device a name (at most 100 characters).",
        ),
        "secret.title": ("Votre mot de passe d'application", "Your app password"),
        "secret.once": (
            "Copiez-le maintenant : il ne sera plus jamais affiché.",
            "Copy it now: it will never be shown again.",
        ),
        "secret.user": ("Identifiant", "User name"),
        "secret.password": ("Mot de passe", "Password"),
        "secret.dav": ("Adresse WebDAV", "WebDAV address"),
        "secret.server": (
            "Adresse du serveur (logiciel allset)",
            "Server address (allset software)",
        ),
        "secret.fingerprint": (
            "Empreinte SHA-256 du certificat du serveur",
            "Server certificate SHA-256 fingerprint",
        ),
        "secret.fingerprint.help": (
            "Collez-la dans le client : il vérifiera qu'il parle bien à ce serveur.",
            "Paste it into the client: it checks that it talks to this very server.",
        ),
        "secret.fingerprint.proxy": (
            "Aucune : ce serveur est derrière un proxy qui gère le TLS ; votre client "
            "vérifie le certificat du proxy comme un navigateur.",
            "None: this server sits behind a proxy that handles TLS; your client checks "
            "the proxy's certificate like a browser does.",
        ),
        "secret.fingerprint.missing": (
            "Indisponible : le fichier du certificat est illisible ; demandez-la à l'opérateur.",
            "Unavailable: the certificate file cannot be read; ask the operator.",
        ),
        "secret.copy": ("Copier", "Copy"),
        "secret.copied": ("Copié", "Copied"),
        "secret.back": ("Retour à mon compte", "Back to my account"),
        "password.title": ("Changer de mot de passe", "Change password"),
        "password.help": (
            "Vos autres sessions web seront fermées. Les mots de passe d'application "
            "continuent de fonctionner, sauf si vous cochez la case.",
            "Your other web sessions will be signed out. App passwords keep working "
            "unless you tick the box.",
        ),
        "password.current": ("Mot de passe actuel", "Current password"),
        "password.new": (
            "Nouveau mot de passe (10 caractères au moins)",
            "New password (at least 10 characters)",
        ),
        "password.confirm": ("Confirmez le nouveau mot de passe", "Confirm the new password"),
        "password.revoke_apps": (
            "Révoquer aussi tous mes mots de passe d'application",
            "Also revoke all my app passwords",
        ),
        "password.submit": ("Changer le mot de passe", "Change password"),
        "password.changed": (
            "Mot de passe changé ; {n} autre(s) accès révoqué(s).",
            "Password changed; {n} other access(es) revoked.",
        ),
        "password.wrong": (
            "Le mot de passe actuel est incorrect.",
            "The current password is wrong.",
        ),
        "password.short": (
            "Le nouveau mot de passe doit compter au moins 10 caractères.",
            "The new password needs at least 10 characters.",
        ),
        "password.mismatch": (
            "Les deux nouveaux mots de passe ne sont pas identiques.",
            "The two new passwords are not the same.",
        ),
        "lost.link": ("Mot de passe perdu ?", "Lost your password?"),
        "lost.title": ("J'ai perdu mon mot de passe", "I lost my password"),
        "lost.help": (
            "Indiquez l'adresse de votre compte. S'il existe, toutes ses sessions et tous ses "
            "mots de passe d'application sont révoqués immédiatement, et un lien pour choisir "
            "un nouveau mot de passe est envoyé à cette adresse.",
            "Enter your account's address. If the account exists, every session and app "
            "password of it is revoked at once, and a link to choose a new password is sent "
            "to that address.",
        ),
        "lost.submit": ("Signaler la perte", "Report the loss"),
        "lost.sent": (
            "Si un compte existe pour cette adresse, ses accès sont révoqués et un lien "
            "valable une heure vient d'y être envoyé. Pensez à vérifier les courriers "
            "indésirables.",
            "If an account exists for this address, its access has been revoked and a link "
            "valid for one hour has just been sent to it. Check your spam folder too.",
        ),
        "lost.throttled": (
            "Trop de demandes. Réessayez dans {seconds} secondes.",
            "Too many requests. Try again in {seconds} seconds.",
        ),
        "reset.title": ("Choisir un nouveau mot de passe", "Choose a new password"),
        "reset.submit": ("Enregistrer le mot de passe", "Save the password"),
        "reset.done": (
            "Votre nouveau mot de passe est enregistré. Connectez-vous.",
            "Your new password is saved. Sign in.",
        ),
        "reset.invalid": (
            "Ce lien n'est pas valable (déjà utilisé, remplacé ou expiré). Demandez-en un "
            "nouveau avec « Mot de passe perdu ? ».",
            "This link is not valid (already used, replaced or expired). Ask for a new one "
            "with “Lost your password?”.",
        ),
        "token.label": ("Code du lien", "Link code"),
        "token.help": (
            "Rempli automatiquement depuis le lien ; sinon, collez la partie après « token= ».",
            "Filled in from the link; otherwise paste the part after “token=”.",
        ),
        "invite.title": (
            "Rejoindre l'espace de votre organisation",
            "Join your organisation's space",
        ),
        "invite.help": (
            "Choisissez votre mot de passe pour activer votre compte.",
            "Choose your password to activate your account.",
        ),
        "invite.submit": ("Activer mon compte", "Activate my account"),
        "invite.invalid": (
            "Cette invitation n'est plus valable (déjà utilisée, remplacée ou expirée). "
            "Demandez-en une nouvelle à la personne qui vous a invité.",
            "This invitation is no longer valid (already used, replaced or expired). Ask "
            "the person who invited you for a new one.",
        ),
        "invite.welcome": (
            "Bienvenue ! Votre compte est actif.",
            "Welcome! Your account is active.",
        ),
        "mail.reset.subject": (
            "Réinitialisation de votre mot de passe allset",
            "Resetting your allset password",
        ),
    }
)


# ---- small shared pieces -------------------------------------------------------------
def base_url(front: WebFront, request: Request) -> str:
    """What clients should be given: ``public_url`` when set (behind a proxy the
    request's host may be internal), else the address this request came to."""
    base = front.runtime.settings.public_url.rstrip("/")
    return base or f"{request.url.scheme}://{request.url.netloc}"


def server_fingerprint(front: WebFront) -> str | None:
    """The SHA-256 fingerprint of the certificate this server serves; None in plain-HTTP
    (proxy) mode or when the file cannot be read."""
    settings = front.runtime.settings
    if settings.plain_http:
        return None
    try:
        return fingerprint(settings.cert_path.read_bytes())
    except (OSError, ValueError):
        return None


def public_form_token(request: Request) -> str:
    return request.cookies.get(FORM_COOKIE) or secrets.token_urlsafe(24)


def with_form_cookie(resp: Response, token: str) -> Response:
    resp.set_cookie(FORM_COOKIE, token, secure=True, httponly=True, samesite="strict")
    return resp


async def public_form(request: Request) -> dict[str, str] | None:
    """The posted fields if the double-submit token matches, else None."""
    data = await request.form()
    fields = {k: str(v) for k, v in data.items() if isinstance(v, str)}
    cookie = request.cookies.get(FORM_COOKIE, "")
    sent = fields.get("pre", "")
    return fields if cookie and secrets.compare_digest(cookie, sent) else None


def reset_email(ctx: Ctx, link: str, t: ResetTicket) -> tuple[str, str]:
    """Both languages in one message: we do not know which one the reader prefers."""
    when = t.expires_at.strftime("%Y-%m-%d %H:%M")
    body = (
        "Bonjour,\n\nLa perte du mot de passe de ce compte a été signalée : toutes ses "
        "sessions et tous ses mots de passe d'application ont été révoqués. Pour choisir un "
        f"nouveau mot de passe, ouvrez ce lien (une seule fois, jusqu'au {when} UTC) :\n\n"
        f"{link}\n\nSi vous n'êtes pas à l'origine de cette demande, ouvrez tout de même le "
        "lien pour retrouver l'accès, puis prévenez votre administrateur.\n\n---\n\n"
        "Hello,\n\nThe loss of this account's password was reported: every session and app "
        "password of it has been revoked. To choose a new password, open this link (once, "
        f"until {when} UTC):\n\n{link}\n\nIf you did not ask for this, still open the link "
        "to get your access back, then tell your administrator.\n"
    )
    return ctx.t("mail.reset.subject"), body


def routes(front: WebFront) -> list[BaseRoute]:
    passwords = Passwords(front.runtime.accounts)

    def not_found(ctx: Ctx) -> Response:
        return front.render(ctx, "error.html", 404, message=ctx.t("files.notfound"))

    # ---- the account page ----------------------------------------------------------
    async def account_page(ctx: Ctx, status: int = 200, **extra: Any) -> Response:
        assert ctx.principal is not None
        creds = await run_in_threadpool(front.runtime.accounts.list_credentials, ctx.principal)
        return front.render(ctx, "account.html", status, creds=creds, **extra)

    async def signed_in_user(request: Request) -> tuple[Ctx, Response | None]:
        ctx, away = await front.signed_in(request)
        if away is None and ctx.principal is not None and ctx.principal.is_operator:
            return ctx, not_found(ctx)
        return ctx, away

    async def account(request: Request) -> Response:
        ctx, away = await signed_in_user(request)
        if away is not None:
            return away
        return await account_page(ctx)

    async def create_app_password(request: Request) -> Response:
        ctx, away = await signed_in_user(request)
        if away is not None or ctx.principal is None:
            return away or front.to_login(ctx)
        fields = await front.form(ctx)
        if fields is None:
            return front.csrf_refused(ctx)
        name = fields.get("name", "").strip()
        if not name or len(name) > 100 or "\x00" in name:
            return await account_page(ctx, 400, app_error=ctx.t("account.new.noname"), name=name)
        issued = await run_in_threadpool(
            front.runtime.accounts.issue_for, ctx.principal, "app_password", name
        )
        base = base_url(front, request)
        fp = await run_in_threadpool(server_fingerprint, front)
        fp_note = ""
        if fp is None:
            proxy = front.runtime.settings.plain_http
            fp_note = ctx.t("secret.fingerprint.proxy" if proxy else "secret.fingerprint.missing")
        return front.render(
            ctx,
            "account_secret.html",
            name=name,
            secret=issued["password"],
            dav_url=f"{base}/dav/",
            server_url=base,
            fingerprint=fp,
            fingerprint_note=fp_note,
        )

    async def revoke(request: Request) -> Response:
        ctx, away = await signed_in_user(request)
        if away is not None or ctx.principal is None:
            return away or front.to_login(ctx)
        fields = await front.form(ctx)
        if fields is None:
            return front.csrf_refused(ctx)
        cid = request.path_params["cid"]
        name = fields.get("name", "")[:100]
        try:
            await run_in_threadpool(front.runtime.accounts.revoke_credential, ctx.principal, cid)
        except NotFound:
            return not_found(ctx)
        if cid == ctx.principal.credential_id:  # revoking this very session signs out
            resp = RedirectResponse("/login?m=out", status_code=303)
            resp.delete_cookie(SESSION_COOKIE, secure=True, httponly=True, samesite="lax")
            return resp
        return front.done("/account", ctx.t("account.revoked", name=name))

    async def change_password(request: Request) -> Response:
        ctx, away = await signed_in_user(request)
        if away is not None or ctx.principal is None:
            return away or front.to_login(ctx)
        fields = await front.form(ctx)
        if fields is None:
            return front.csrf_refused(ctx)
        new = fields.get("new", "")
        if new != fields.get("confirm", ""):
            return await account_page(ctx, 400, pw_error=ctx.t("password.mismatch"))
        try:
            n = await run_in_threadpool(
                passwords.change,
                ctx.principal,
                fields.get("current", ""),
                new,
                client_ip(request),
                fields.get("revoke_apps") == "1",
            )
        except Unauthenticated:
            return await account_page(ctx, 400, pw_error=ctx.t("password.wrong"))
        except TooManyAttempts as exc:
            msg = ctx.t("login.throttled", seconds=exc.retry_after)
            return await account_page(ctx, 429, pw_error=msg)
        except InvalidInput:
            return await account_page(ctx, 400, pw_error=ctx.t("password.short"))
        return front.done("/account", ctx.t("password.changed", n=n))

    # ---- lost password (no session) --------------------------------------------------
    async def lost_form(
        request: Request, status: int = 200, error: str = "", sent: bool = False
    ) -> Response:
        ctx = await front.context(request)
        pre = public_form_token(request)
        resp = front.render(ctx, "lost.html", status, pre=pre, error=error, sent=sent)
        return with_form_cookie(resp, pre)

    async def lost_get(request: Request) -> Response:
        return await lost_form(request)

    async def lost_post(request: Request) -> Response:
        ctx = await front.context(request)
        fields = await public_form(request)
        if fields is None:
            return front.csrf_refused(ctx)
        ip = client_ip(request)
        try:
            ticket = await run_in_threadpool(passwords.report, fields.get("email", ""), ip)
        except TooManyAttempts as exc:
            return await lost_form(request, 429, ctx.t("lost.throttled", seconds=exc.retry_after))
        if ticket is not None:
            link = f"{base_url(front, request)}/reset#token={ticket.token}"
            subject, body = reset_email(ctx, link, ticket)
            mailer = Mailer.from_settings(front.runtime.settings)
            try:
                await run_in_threadpool(mailer.send, ticket.email, subject, body)
            except AllsetError as exc:  # not configured or failed: the operator must know
                log.warning("password reset email not sent to %s: %s", ticket.email, exc.detail)
        # The same answer whatever happened: the page never tells whether the account exists.
        return await lost_form(request, sent=True)

    # ---- set a password from a one-time link (reset, invitation) ---------------------
    async def token_form(
        request: Request, kind: str, status: int = 200, error: str = "", token: str = ""
    ) -> Response:
        ctx = await front.context(request)
        pre = public_form_token(request)
        resp = front.render(
            ctx, "set_password.html", status, pre=pre, kind=kind, error=error, token=token
        )
        return with_form_cookie(resp, pre)

    async def reset_get(request: Request) -> Response:
        return await token_form(request, "reset")

    async def reset_post(request: Request) -> Response:
        ctx = await front.context(request)
        fields = await public_form(request)
        if fields is None:
            return front.csrf_refused(ctx)
        token, new = fields.get("token", "").strip(), fields.get("password", "")
        if new != fields.get("confirm", ""):
            return await token_form(request, "reset", 400, ctx.t("password.mismatch"), token)
        try:
            email = await run_in_threadpool(passwords.reset, token, new, client_ip(request))
        except InvalidInput:
            return await token_form(request, "reset", 400, ctx.t("password.short"), token)
        except TooManyAttempts as exc:
            msg = ctx.t("login.throttled", seconds=exc.retry_after)
            return await token_form(request, "reset", 429, msg, token)
        except (NotFound, Gone):
            return await token_form(request, "reset", 410, ctx.t("reset.invalid"))
        log.info("password reset for %s", email)
        return front.done("/login", ctx.t("reset.done"))

    async def invite_get(request: Request) -> Response:
        return await token_form(request, "invite")

    async def invite_post(request: Request) -> Response:
        ctx = await front.context(request)
        fields = await public_form(request)
        if fields is None:
            return front.csrf_refused(ctx)
        token, new = fields.get("token", "").strip(), fields.get("password", "")
        if new != fields.get("confirm", ""):
            return await token_form(request, "invite", 400, ctx.t("password.mismatch"), token)
        accounts, ip = front.runtime.accounts, client_ip(request)
        members = Members(accounts, front.runtime.settings)
        try:
            user = await run_in_threadpool(members.accept, token, new, ip)
            p = await run_in_threadpool(accounts.login_password, user["email"], new, ip)
            issued = await run_in_threadpool(
                accounts.issue_for, p, "session", request.headers.get("user-agent", "")[:200]
            )
        except InvalidInput:
            return await token_form(request, "invite", 400, ctx.t("password.short"), token)
        except TooManyAttempts as exc:
            msg = ctx.t("login.throttled", seconds=exc.retry_after)
            return await token_form(request, "invite", 429, msg, token)
        except Suspended as exc:
            msg = ctx.t("login.suspended", reason=str(exc.extra.get("reason") or ""))
            return await token_form(request, "invite", 403, msg)
        except (NotFound, Gone, Unauthenticated):
            return await token_form(request, "invite", 410, ctx.t("invite.invalid"))
        resp = front.done("/files/", ctx.t("invite.welcome"))
        resp.set_cookie(
            SESSION_COOKIE, issued["password"], secure=True, httponly=True, samesite="lax"
        )
        return resp

    return [
        Route("/account", account, methods=["GET"]),
        Route("/account/app-passwords", create_app_password, methods=["POST"]),
        Route("/account/credentials/{cid}/revoke", revoke, methods=["POST"]),
        Route("/account/password", change_password, methods=["POST"]),
        Route("/lost", lost_get, methods=["GET"]),
        Route("/lost", lost_post, methods=["POST"]),
        Route("/reset", reset_get, methods=["GET"]),
        Route("/reset", reset_post, methods=["POST"]),
        Route("/invite", invite_get, methods=["GET"]),
        Route("/invite", invite_post, methods=["POST"]),
    ]
