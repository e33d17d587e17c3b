"""``/dav/``: WsgiDAV (the protocol) behind a2wsgi (WSGI in ASGI), fronted by our own ASGI
code for what must be the same in every protocol.

The ASGI front:
- authenticates with the same code as the REST API (Basic or Bearer over TLS, throttled
  failed logins, 429 with Retry-After) before any WebDAV code runs;
- gives each Client its own WsgiDAV application, whose locks (in the database, shared by
  every server process: locks.py) live in that Client's namespace: Client A locking
  ``/report.docx`` cannot block, or even reveal, Client B's ``/report.docx``;
- turns a client that disconnects mid-upload into an error inside the WSGI app (a2wsgi
  would otherwise end the body normally and a truncated file would be committed);
- adds ``Repr-Digest`` (the stored SHA-256) to the answer of a PUT, as proof of transfer.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote_to_bytes

from a2wsgi import WSGIMiddleware
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from wsgidav.dc.base_dc import BaseDomainController
from wsgidav.wsgidav_app import WsgiDAVApp

from allset.core.errors import AllsetError, MethodNotAllowed, NotFound
from allset.core.paths import RemotePath, decode_utf8, parse_path
from allset.core.principal import Principal
from allset.files.locks import has_live_locks
from allset.runtime import Runtime
from allset.server.auth import authenticate
from allset.server.dav.locks import DbLockStorage, SharedLockManager
from allset.server.dav.props import DeadProperties
from allset.server.dav.provider import AllsetProvider, is_apple_metadata
from allset.server.files_http import receive_file, send_file
from allset.server.problem import from_error
from allset.server.transfer import repr_digest

log = logging.getLogger("allset.dav")

MOUNT = "/dav"
BLOCK = 256 * 1024  # WsgiDAV's read/write piece (its default of 8 KiB costs CPU per byte)
# Each transfer holds a thread for its whole duration (WSGI is blocking).
WSGI_THREADS = 32


def dav_path(scope: Scope) -> RemotePath:
    """The remote path under /dav from the raw URL (strict UTF-8, like the REST API)."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    raw = raw.split(b"?", 1)[0]
    tail = raw[len(MOUNT) :] if raw.startswith(MOUNT.encode()) else raw
    return parse_path(decode_utf8(unquote_to_bytes(tail)))


class ClientGone(Exception):
    """The client disconnected before the request body was complete."""


class _Authenticated(BaseDomainController):  # type: ignore[misc]
    """The ASGI front has authenticated already; tell WsgiDAV who it is."""

    def __init__(self, wsgidav_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, config)

    def get_domain_realm(self, path_info: str, environ: dict[str, Any] | None) -> str:
        return "allset"

    def require_authentication(self, realm: str, environ: dict[str, Any] | None) -> bool:
        if environ is None:
            return True
        principal = (environ.get("asgi.scope") or {}).get("allset.principal")
        if principal is None:
            return True  # never reached: the front refuses unauthenticated requests
        environ["wsgidav.auth.user_name"] = principal.email
        environ["wsgidav.auth.roles"] = [principal.role]
        return False

    def basic_auth_user(
        self, realm: str, user_name: str, password: str, environ: dict[str, Any]
    ) -> bool:
        return False

    def supports_http_digest_auth(self) -> bool:
        return False


class DavFront:
    """The ASGI application mounted at ``/dav``."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.apple_files = runtime.settings.dav_apple_files
        AllsetProvider(runtime.files, self.apple_files)  # validate the setting at start-up
        self._apps: dict[str, WSGIMiddleware] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=WSGI_THREADS, thread_name_prefix="dav")
        # WsgiDAV's start-up chatter (and its "enable SSL" warning: TLS ends in uvicorn,
        # which WsgiDAV cannot see) would repeat for every Client's app.
        logging.getLogger("wsgidav").setLevel(logging.ERROR)

    def _app_for(self, tenant_id: str) -> WSGIMiddleware:
        with self._lock:
            app = self._apps.get(tenant_id)
            if app is None:
                files = self.runtime.files
                provider = AllsetProvider(files, self.apple_files)
                storage = DbLockStorage(self.runtime.db, tenant_id)
                config: dict[str, Any] = {
                    "provider_mapping": {"/": provider},
                    "mount_path": MOUNT,
                    "http_authenticator": {
                        "domain_controller": _Authenticated,
                        "accept_basic": True,
                        "accept_digest": False,
                        "default_to_digest": False,
                    },
                    "dir_browser": {"enable": False},
                    "lock_storage": storage,
                    "property_manager": DeadProperties(files),
                    "verbose": 1,
                    "logging": {"enable": False},
                    "block_size": BLOCK,
                    "add_header_MS_Author_Via": True,
                    "hotfixes": {"re_encode_path_info": True, "unquote_path_info": False},
                }
                dav = WsgiDAVApp(config)
                # WsgiDAV builds its own LockManager on the storage; ours asks the
                # database once per check instead of once per parent folder.
                dav.lock_manager = SharedLockManager(storage)
                provider.set_lock_manager(dav.lock_manager)
                app = WSGIMiddleware(dav)
                app.executor = self._executor
                self._apps[tenant_id] = app
            return app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            principal = await authenticate(HTTPConnection(scope), self.runtime.accounts)
            if principal.is_operator:  # R-STORE-6: the operator has no storage space
                raise NotFound("Operator accounts have no storage space.")
        except AllsetError as exc:
            await from_error(exc)(scope, receive, send)
            return
        scope["allset.principal"] = principal

        async def guarded_receive() -> Message:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise ClientGone("client disconnected")
            return msg

        async def proof_send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                digest = scope.get("allset.repr_digest")
                if digest and scope["method"] == "PUT":
                    msg["headers"] = [*msg.get("headers", []), (b"repr-digest", digest.encode())]
            await send(msg)

        if scope["method"] in ("GET", "HEAD", "PUT") and await self._native(
            scope, guarded_receive, send, principal
        ):
            return
        app: Any = self._app_for(principal.tenant_id)  # a2wsgi types ASGI more narrowly
        await app(scope, guarded_receive, proof_send)

    async def _native(
        self, scope: Scope, receive: Receive, send: Send, principal: Principal
    ) -> bool:
        """GET/HEAD/PUT of a file through the same code as the REST API (1.5-2x faster than
        through WsgiDAV, and one implementation of ranges and conditionals). WsgiDAV keeps
        everything that involves locks, folders or headers only it understands."""
        headers = dict(scope["headers"])
        if b"if" in headers or b"content-range" in headers or b"content-encoding" in headers:
            return False
        try:
            path = dav_path(scope)
        except AllsetError:
            return False
        if not path.parts:
            return False
        is_apple = is_apple_metadata(path.name)
        if scope["method"] == "PUT":
            if is_apple and self.apple_files == "refuse":
                return False
            # Any lock in this Client's space (taken through any process): the write goes
            # through WsgiDAV, which checks lock tokens. Locks are rare and short-lived;
            # the probe is one indexed query.
            if await run_in_threadpool(has_live_locks, self.runtime.db, principal.tenant_id):
                return False
        elif is_apple and self.apple_files == "refuse":
            return False
        request = Request(scope, receive)
        files = self.runtime.files
        try:
            if scope["method"] == "PUT":
                entry, created = await receive_file(request, files, principal, path)
                response = Response(
                    status_code=201 if created else 204,
                    headers={"ETag": entry.etag, "Repr-Digest": repr_digest(entry.sha256)},
                )
            else:
                response = await send_file(request, files, principal, path, None)
        except ClientGone:
            return True  # nobody to answer; the upload was aborted, nothing stored
        except AllsetError as exc:
            if exc.extra.get("is_folder"):
                if scope["method"] == "PUT":  # RFC 4918 §9.7.2
                    response = from_error(MethodNotAllowed("A folder cannot be replaced by PUT."))
                else:
                    return False  # WsgiDAV answers for folders
            else:
                response = from_error(exc)
        await response(scope, receive, send)
        return True


class DavRootAlias:
    """``/dav`` without the slash is the same collection as ``/dav/``: some clients (the
    Windows redirector among them) do not follow a redirect on PROPFIND or OPTIONS."""

    def __init__(self, front: DavFront) -> None:
        self.front = front

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # In place, not a copy: the middleware around the app reads the principal that
        # authentication stores in this scope (bandwidth shaping, transfer list).
        scope.update(path=MOUNT + "/", raw_path=(MOUNT + "/").encode())
        scope["root_path"] = scope.get("root_path", "") + MOUNT
        await self.front(scope, receive, send)


class ServerOptions:
    """``OPTIONS /``: the Windows redirector probes the server root before mapping a drive
    and gives up unless it sees a WebDAV server there. Reveals nothing about any Client."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"dav", b"1, 2"),
                    (b"ms-author-via", b"DAV"),
                    (b"allow", b"OPTIONS, GET, HEAD"),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
