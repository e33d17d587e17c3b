"""The web interface at ``/`` (R-STORE-1): server-rendered pages, French by default.

A thin adapter like the others: pages call the same façade (``files.FileService``,
``accounts.Accounts``) and render Jinja2 templates with autoescaping on (user file
names are always escaped). Progressive enhancement: every page works without script;
``static/app.js`` only adds conveniences, and no script is ever inline, so the
Content-Security-Policy can forbid inline script entirely.

Sessions are the API's session tokens in a ``__Host-`` cookie (``server.auth``); every
state-changing form carries the session's CSRF token, and the sign-in form (no session
yet) a double-submit token of its own.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from allset.core.errors import (
    AllsetError,
    Suspended,
    TooManyAttempts,
    Unauthenticated,
)
from allset.core.principal import Principal
from allset.core.units import format_size
from allset.runtime import Runtime
from allset.server.auth import SESSION_COOKIE, client_ip, csrf_ok, csrf_token
from allset.server.web import (
    account_pages,
    admin_pages,
    files_pages,
    operator_pages,
    usage_pages,
)
from allset.server.web.i18n import LANG_COOKIE, LANGS, pick_language, translator

STATIC = Path(__file__).parent / "static"
PRE_COOKIE = "__Host-allset-pre"  # the sign-in form's double-submit CSRF token
FLASH_COOKIE = "allset-flash"

# No inline script or style anywhere; nothing from other origins; never framed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"strict-transport-security", b"max-age=31536000"),
]


@dataclass
class Ctx:
    """What every page needs: who, in which language, and the CSRF token."""

    request: Request
    lang: str
    principal: Principal | None
    csrf: str
    # The Client's suspension reason when the session is valid but the Client is
    # suspended (R-OPS-1): the pages say why instead of just signing the user out.
    suspended: str | None = None

    def t(self, message_id: str, **values: Any) -> str:
        return translator(self.lang)(message_id, **values)


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no scheme, no host, no '//'): no open redirect."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/files/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/files/"


class WebFront:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.env = Environment(
            loader=PackageLoader("allset.server.web", "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["size"] = format_size
        self.router = Router(
            routes=[
                Route("/", self.home, methods=["GET"]),
                Route("/login", self.login_form, methods=["GET"]),
                Route("/login", self.login, methods=["POST"]),
                Route("/logout", self.logout, methods=["POST"]),
                Route("/lang", self.set_language, methods=["POST"]),
                Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
            ]
        )
        # One module per area of the interface, each adding its routes and its words.
        for area in (files_pages, account_pages, admin_pages, operator_pages, usage_pages):
            self.router.routes.extend(area.routes(self))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in present
                ]
            await send(message)

        await self.router(scope, receive, secured)

    # ---- plumbing ------------------------------------------------------------------
    async def context(self, request: Request) -> Ctx:
        lang = pick_language(
            request.cookies.get(LANG_COOKIE), request.headers.get("accept-language")
        )
        token = request.cookies.get(SESSION_COOKIE, "")
        principal = None
        suspended = None
        if token:
            try:
                principal = await run_in_threadpool(
                    self.runtime.accounts.authenticate_token, token, client_ip(request)
                )
            except Suspended as exc:
                suspended = str(exc.extra.get("reason") or "")
            except Unauthenticated:
                principal = None
        return Ctx(request, lang, principal, csrf_token(token) if principal else "", suspended)

    def render(self, ctx: Ctx, template: str, status: int = 200, **values: Any) -> Response:
        flash = unquote(ctx.request.cookies.get(FLASH_COOKIE, ""))
        kind, _, message = flash.partition(":")
        html = self.env.get_template(template).render(
            flash=message,
            flash_kind="error" if kind == "error" else "ok",
            t=ctx.t,
            lang=ctx.lang,
            langs=LANGS,
            me=ctx.principal,
            csrf=ctx.csrf,
            path=ctx.request.url.path,
            **values,
        )
        resp = HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
        if flash:
            resp.delete_cookie(FLASH_COOKIE, secure=True, httponly=True, samesite="lax")
        return resp

    def to_login(self, ctx: Ctx, message: str = "") -> Response:
        target = ctx.request.url.path
        if ctx.request.url.query:
            target += "?" + ctx.request.url.query
        url = "/login?next=" + quote(target, safe="")
        if message:
            url += "&m=" + message
        return RedirectResponse(url, status_code=303)

    def _form_error(self, ctx: Ctx) -> Response:
        return self.render(ctx, "error.html", 403, message=ctx.t("error.csrf"))

    # ---- what every area's handlers use ----------------------------------------------
    async def signed_in(self, request: Request) -> tuple[Ctx, Response | None]:
        """(ctx, None) for a signed-in caller, else (ctx, a redirect to the sign-in page
        that comes back here)."""
        ctx = await self.context(request)
        if ctx.suspended is not None:
            return ctx, self.render(ctx, "suspended.html", 403, reason=ctx.suspended)
        if ctx.principal is None:
            return ctx, self.to_login(ctx, "expired" if SESSION_COOKIE in request.cookies else "")
        return ctx, None

    async def form(self, ctx: Ctx) -> dict[str, str] | None:
        """The posted form's fields if it carries this session's CSRF token, else None
        (the caller answers ``self.csrf_refused(ctx)``)."""
        data = await ctx.request.form()
        fields = {k: str(v) for k, v in data.items() if isinstance(v, str)}
        token = ctx.request.cookies.get(SESSION_COOKIE, "")
        return fields if csrf_ok(token, fields.get("csrf")) else None

    def csrf_refused(self, ctx: Ctx) -> Response:
        return self._form_error(ctx)

    def done(self, url: str, message: str, kind: str = "ok") -> Response:
        """Redirect after a successful (or refused) action, with a message to show on the
        next page: every action gives feedback, and a reload never repeats it."""
        resp = RedirectResponse(url, status_code=303)
        resp.set_cookie(
            FLASH_COOKIE,
            quote(f"{kind}:{message}"[:600]),
            secure=True,
            httponly=True,
            samesite="lax",
            max_age=60,
        )
        return resp

    # ---- sign-in -------------------------------------------------------------------
    async def home(self, request: Request) -> Response:
        ctx = await self.context(request)
        if ctx.principal is None:
            return RedirectResponse("/login", status_code=303)
        return RedirectResponse(self._landing(ctx.principal), status_code=303)

    @staticmethod
    def _landing(p: Principal) -> str:
        return "/operator" if p.is_operator else "/files/"

    async def login_form(
        self, request: Request, error: str = "", status: int = 200, email: str = ""
    ) -> Response:
        ctx = await self.context(request)
        pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
        notice = {"expired": ctx.t("login.expired"), "out": ctx.t("login.signedout")}.get(
            request.query_params.get("m", ""), ""
        )
        if ctx.suspended is not None and not error:
            error = ctx.t("login.suspended", reason=ctx.suspended)
        resp = self.render(
            ctx,
            "login.html",
            status,
            pre=pre,
            error=error,
            email=email,
            notice=notice,
            next=_safe_next(request.query_params.get("next")),
        )
        resp.set_cookie(PRE_COOKIE, pre, secure=True, httponly=True, samesite="strict")
        return resp

    async def login(self, request: Request) -> Response:
        form = await request.form()
        ctx = await self.context(request)
        pre = request.cookies.get(PRE_COOKIE, "")
        if not pre or not secrets.compare_digest(pre, str(form.get("pre", ""))):
            return self._form_error(ctx)
        email = str(form.get("email", "")).strip()
        password = str(form.get("password", ""))
        accounts = self.runtime.accounts
        try:
            p = await run_in_threadpool(
                accounts.login_password, email, password, client_ip(request)
            )
            issued = await run_in_threadpool(
                accounts.issue_for, p, "session", request.headers.get("user-agent", "")[:200]
            )
        except TooManyAttempts as exc:
            return await self.login_form(
                request, ctx.t("login.throttled", seconds=exc.retry_after), 429, email
            )
        except Suspended as exc:
            reason = str(exc.extra.get("reason") or "")
            return await self.login_form(
                request, ctx.t("login.suspended", reason=reason), 403, email
            )
        except (Unauthenticated, AllsetError):
            return await self.login_form(request, ctx.t("login.wrong"), 401, email)
        target = _safe_next(str(form.get("next", "")))
        if p.is_operator and not target.startswith("/operator"):
            target = "/operator"
        resp = RedirectResponse(target, status_code=303)
        resp.set_cookie(
            SESSION_COOKIE, issued["password"], secure=True, httponly=True, samesite="lax"
        )
        resp.delete_cookie(PRE_COOKIE, secure=True, httponly=True, samesite="strict")
        return resp

    async def logout(self, request: Request) -> Response:
        form = await request.form()
        ctx = await self.context(request)
        token = request.cookies.get(SESSION_COOKIE, "")
        if ctx.principal is not None:
            if not csrf_ok(token, str(form.get("csrf", ""))):
                return self._form_error(ctx)
            await run_in_threadpool(
                self.runtime.accounts.revoke_credential, ctx.principal, ctx.principal.credential_id
            )
        resp = RedirectResponse("/login?m=out", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, secure=True, httponly=True, samesite="lax")
        return resp

    async def set_language(self, request: Request) -> Response:
        """Changing the display language changes nothing on the server: no CSRF token is
        needed, and it works before signing in."""
        form = await request.form()
        lang = str(form.get("lang", ""))
        resp = RedirectResponse(_safe_next(str(form.get("next", ""))), status_code=303)
        if lang in LANGS:
            resp.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, secure=True, samesite="lax")
        return resp
