"""``allset-server``: run and administer the service (INTERFACES.md, operator side).

Errors are printed as one line naming the fix, never a traceback; exit status 2 for
usage errors, 1 for refused operations.

The database, the store and the web app are imported inside the commands that use them,
never at the top: the supervisor of ``serve --workers N`` is this module too, lives as
long as the server and should hold only what supervising needs (about 30 MB, not 80).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import logging
import socket
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ParamSpec, TypeVar

import click

from allset.core.errors import AllsetError
from allset.core.units import format_size, parse_rate, parse_size
from allset.settings import Settings, load_settings

P = ParamSpec("P")
R = TypeVar("R")


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def friendly(fn: Callable[P, R]) -> Callable[P, R]:
    @wraps(fn)
    def inner(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except AllsetError as exc:
            _fail(exc.detail)
        except OSError as exc:
            _fail(f"{exc.strerror or exc} ({getattr(exc, 'filename', '') or ''})")
        raise AssertionError("unreachable")

    return inner


def _out(ctx: click.Context, data: Any, human: Callable[[Any], str]) -> None:
    if ctx.obj.get("json"):
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(human(data))


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    return load_settings(ctx.obj.get("data"), **overrides)


def _runtime(ctx: click.Context) -> Any:
    from allset.runtime import build_runtime, data_dir_ready, initialise

    settings = _settings(ctx)
    if not data_dir_ready(settings.data_dir):
        initialise(settings)
    return build_runtime(settings)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    help="Data directory (default $ALLSET_DATA or ./allset-data).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.version_option(package_name="allset")
@click.pass_context
def main(ctx: click.Context, data: Path | None, as_json: bool) -> None:
    """Operate an allset storage server."""
    ctx.ensure_object(dict)
    ctx.obj["data"] = data
    ctx.obj["json"] = as_json


def _data_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--data and --json are accepted after the sub-command too, as people type them."""

    def set_data(ctx: click.Context, _p: click.Parameter, value: Any) -> Any:
        if value is not None:
            ctx.ensure_object(dict)
            ctx.find_root().obj["data"] = value
        return value

    def set_json(ctx: click.Context, _p: click.Parameter, value: Any) -> Any:
        if value:
            ctx.find_root().obj["json"] = True
        return value

    fn = click.option(
        "--data",
        type=click.Path(file_okay=False, path_type=Path),
        expose_value=False,
        callback=set_data,
        help="Data directory.",
    )(fn)
    return click.option(
        "--json", is_flag=True, expose_value=False, callback=set_json, help="JSON output."
    )(fn)


def _print_init(result: Any, url: str | None = None) -> None:
    if result.fingerprint:
        click.echo(f"TLS certificate SHA-256 fingerprint: {result.fingerprint}")
    if result.operator_password:
        click.echo(
            f"Operator account {result.operator_email}, one-time password (shown once): "
            f"{result.operator_password}"
        )
    if url:  # last, so that a supervisor reading stdout knows the rest came before it
        click.echo(f"allset is serving {url}")


@main.command()
@_data_option
@click.pass_context
@friendly
def init(ctx: click.Context) -> None:
    """Initialise the data directory (idempotent)."""
    from allset.runtime import initialise

    result = initialise(_settings(ctx))
    _out(
        ctx,
        {
            "data": str(_settings(ctx).data_dir),
            "created": result.created,
            "fingerprint": result.fingerprint,
            "operator_email": result.operator_email,
            "operator_password": result.operator_password,
        },
        lambda d: (
            (f"Initialised {d['data']}" if d["created"] else f"{d['data']} was already initialised")
            + (
                f"\nTLS certificate SHA-256 fingerprint: {d['fingerprint']}"
                if d["fingerprint"]
                else ""
            )
            + (
                f"\nOperator {d['operator_email']}, one-time password (shown once): "
                f"{d['operator_password']}"
                if d["operator_password"]
                else ""
            )
        ),
    )


def _limit_malloc_arenas() -> None:
    """glibc gives threads their own malloc arenas, up to 8 per core; with dozens of worker
    threads passing 1 MiB blocks around, freed memory stays spread over them and the RSS
    grows well past what is live. Two arenas keep it close (M_ARENA_MAX = -8)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)


@main.command()
@_data_option
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8443; 0 picks a free one).")
@click.option(
    "--plain-http",
    is_flag=True,
    default=None,
    help="Serve plain HTTP; ONLY behind a TLS-terminating reverse proxy.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Server processes sharing the port (default 1; about one per core).",
)
@click.pass_context
@friendly
def serve(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    plain_http: bool | None,
    workers: int | None,
) -> None:
    """Serve HTTPS (initialising an empty data directory first)."""
    from allset.observability import configure_logging
    from allset.server.workers import Supervisor, listeners, worker_command

    settings = _settings(ctx, host=host, port=port, plain_http=plain_http, workers=workers)
    configure_logging(settings.log_json, settings.log_level)
    if settings.workers == 1:  # this process serves: it may as well initialise
        from allset.runtime import initialise

        result: Any = initialise(settings)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if settings.workers > 1:  # each worker gets its own socket on the port (workers.py)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        _fail(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}; "
            "choose another --port."
        )
    actual_port = sock.getsockname()[1]
    tls = not settings.plain_http
    scheme = "https" if tls else "http"
    shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    if not tls:
        click.echo(
            "WARNING: plain HTTP; only run this behind a TLS-terminating reverse proxy (R-SEC-1).",
            err=True,
        )
    if settings.workers == 1:
        _print_init(result, f"{scheme}://{shown_host}:{actual_port}/")
        sys.stdout.flush()
        _serve_on(settings, sock, None)
        return
    result = _startup_maintenance(settings)  # before any worker takes an upload
    socks = listeners(sock, settings.workers)
    _print_init(result, f"{scheme}://{shown_host}:{actual_port}/ ({settings.workers} workers)")
    sys.stdout.flush()
    command = worker_command(settings.data_dir, settings.plain_http)
    metrics = settings.run_dir / "metrics"
    sys.exit(Supervisor(command, [s.fileno() for s in socks]).run(metrics))


@main.command("serve-worker", hidden=True)
@_data_option
@click.option("--fd", type=int, required=True)
@click.option("--index", type=int, required=True)
@click.option("--plain-http", is_flag=True, default=None)
@click.pass_context
@friendly
def serve_worker(ctx: click.Context, fd: int, index: int, plain_http: bool | None) -> None:
    """One worker of ``serve --workers N``, on the socket its parent bound."""
    from allset.observability import configure_logging
    from allset.server.workers import die_with_parent

    die_with_parent()
    settings = _settings(ctx, plain_http=plain_http)
    configure_logging(settings.log_json, settings.log_level, worker=index)
    _serve_on(settings, socket.socket(fileno=fd), index)


def _startup_maintenance(settings: Settings) -> SimpleNamespace:
    """What a single server does when it starts (initialise the data dir, reclaim what a
    crash left behind), done once for all the workers before they start, in a process of
    its own: the supervisor stays small (the database, the store and the app it would
    import, ~50 MB, would stay in its memory for the server's life). Returns the
    initialisation's outcome, which the child prints as JSON on its stdout (the operator's
    one-time password goes through that pipe, never a command line or a file)."""
    import subprocess

    argv = [sys.executable, "-m", "allset.cli.server", "--data", str(settings.data_dir)]
    done = subprocess.run(
        [*argv, "startup-maintenance"], check=False, stdout=subprocess.PIPE, text=True
    )
    if done.returncode != 0:
        _fail("the server could not initialise or clean up its data dir (see above); not starting.")
    return SimpleNamespace(**json.loads(done.stdout.strip().splitlines()[-1]))


@main.command("startup-maintenance", hidden=True)
@_data_option
@click.pass_context
@friendly
def startup_maintenance(ctx: click.Context) -> None:
    """For ``serve --workers``: initialise, then the maintenance a server runs when it
    starts; the initialisation's outcome as one JSON line on stdout, for the supervisor."""
    from allset.files.maintenance import run_all
    from allset.observability import configure_logging
    from allset.runtime import build_runtime, initialise

    settings = _settings(ctx)
    configure_logging(settings.log_json, settings.log_level)
    init = initialise(settings)
    runtime = build_runtime(settings)
    try:
        report = run_all(runtime.files, settings.gc_grace_seconds, runtime.resumables)
        logging.getLogger("allset.workers").info(
            "startup maintenance", extra={"report": report.__dict__}
        )
    finally:
        runtime.close()
    click.echo(json.dumps(dataclasses.asdict(init)))


def _serve_on(settings: Settings, sock: socket.socket, index: int | None) -> None:
    """Build this process's runtime and app, and serve on ``sock`` until stopped."""
    import uvicorn

    from allset.runtime import build_runtime
    from allset.server.app import build_app
    from allset.tls import harden

    _limit_malloc_arenas()
    runtime = build_runtime(settings)
    tls = not settings.plain_http
    config = uvicorn.Config(
        build_app(runtime, tls=tls, worker=index),
        loop="uvloop",
        http="httptools",
        ssl_certfile=str(settings.cert_path) if tls else None,
        ssl_keyfile=str(settings.key_path) if tls else None,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
        server_header=False,
        h11_max_incomplete_event_size=64 * 1024,
    )
    config.load()
    if config.ssl is not None:
        harden(config.ssl)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        runtime.close()


# ---- tenants ---------------------------------------------------------------------------
@main.group()
def tenant() -> None:
    """Clients (tenants): create, list, show, limit, suspend, resume."""


def _tenant_line(t: dict[str, Any]) -> str:
    return (
        f"{t['name']:<20} {t['status']:<10} used {format_size(t['used_bytes'])} of "
        f"{format_size(t['quota_bytes'])}, bandwidth {t['bandwidth_down'] * 8 / 1e6:.0f} Mbit/s"
        + (f"  ({t['status_reason']})" if t["status_reason"] else "")
    )


@tenant.command("create")
@_data_option
@click.argument("name")
@click.option("--quota", default=None, help="Storage size, e.g. 100GiB (default from settings).")
@click.option(
    "--bandwidth", default=None, help="Rate each way, e.g. 100Mbit (default 100Mbit, R-BW-1)."
)
@click.option("--contact-email", default="", help="Contact email (R-PRIV-1).")
@click.option("--company", default="", help="Company name.")
@click.option("--contact-name", default="", help="Contact person.")
@click.option("--address", default="", help="Postal address.")
@click.option("--phone", multiple=True, help="Phone number (repeatable).")
@click.pass_context
@friendly
def tenant_create(
    ctx: click.Context,
    name: str,
    quota: str | None,
    bandwidth: str | None,
    contact_email: str,
    company: str,
    contact_name: str,
    address: str,
    phone: tuple[str, ...],
) -> None:
    """Create a Client."""
    rt = _runtime(ctx)
    s = rt.settings
    t = rt.accounts.create_tenant(
        name,
        parse_size(quota) if quota else s.default_quota,
        parse_rate(bandwidth) if bandwidth else s.default_bandwidth,
        contact_email=contact_email,
        company=company,
        contact_name=contact_name,
        postal_address=address,
        phones=list(phone),
    )
    _out(ctx, t, lambda t: f"Created Client {t['name']} (id {t['id']})")


@tenant.command("list")
@_data_option
@click.option(
    "--search",
    default="",
    help="Only Clients whose name, company, contact or email contains this (any case).",
)
@click.pass_context
@friendly
def tenant_list(ctx: click.Context, search: str) -> None:
    """List Clients with their usage."""
    rt = _runtime(ctx)
    if search.strip():  # the console's search (accounts.find_tenants), every match
        tenants, _ = rt.accounts.find_tenants(search, 0, 1 << 62)
        empty = f"No Client matches {search.strip()!r}."
    else:
        tenants, empty = rt.accounts.list_tenants(), "No Clients yet."
    _out(ctx, tenants, lambda ts: "\n".join(_tenant_line(t) for t in ts) or empty)


@tenant.command("show")
@_data_option
@click.argument("name")
@click.pass_context
@friendly
def tenant_show(ctx: click.Context, name: str) -> None:
    """Everything about one Client."""
    rt = _runtime(ctx)
    _out(ctx, rt.accounts.get_tenant(name), lambda t: "\n".join(f"{k}: {v}" for k, v in t.items()))


@tenant.command("limit")
@_data_option
@click.argument("name")
@click.option("--bandwidth", required=True, help="Rate each way, e.g. 20Mbit (R-BW-2).")
@click.option("--quota", default=None, help="Also change the storage size.")
@click.pass_context
@friendly
def tenant_limit(ctx: click.Context, name: str, bandwidth: str, quota: str | None) -> None:
    """Throttle a Client's bandwidth (and optionally change its quota)."""
    rt = _runtime(ctx)
    rate = parse_rate(bandwidth)
    t = rt.accounts.set_bandwidth(name, rate, rate, actor="operator-cli")
    if quota:
        t = rt.accounts.set_quota(name, parse_size(quota), actor="operator-cli")
    # A running server applies it to transfers in progress now, not in 10 s.
    from allset.server.control import ask_all

    ask_all(rt.settings.control_socket, {"cmd": "reload", "tenant_id": t["id"]})
    _out(ctx, t, _tenant_line)


@tenant.command("suspend")
@_data_option
@click.argument("name")
@click.option("--reason", required=True, help="Why (recorded, shown to the Client).")
@click.pass_context
@friendly
def tenant_suspend(ctx: click.Context, name: str, reason: str) -> None:
    """Suspend a Client's access; its data are kept (R-OPS-1)."""
    rt = _runtime(ctx)
    _out(ctx, rt.accounts.set_status(name, "suspended", reason, actor="operator-cli"), _tenant_line)


@tenant.command("resume")
@_data_option
@click.argument("name")
@click.pass_context
@friendly
def tenant_resume(ctx: click.Context, name: str) -> None:
    """Give a suspended Client its access back."""
    rt = _runtime(ctx)
    _out(ctx, rt.accounts.set_status(name, "active", "", actor="operator-cli"), _tenant_line)


# ---- live transfers (R-BW-2) -----------------------------------------------------------
@main.group()
def transfers() -> None:
    """Live transfers of the running server: list them, cut them."""


def _ask_server(ctx: click.Context, request: dict[str, Any]) -> dict[str, Any]:
    settings = _settings(ctx)
    from allset.server.control import ask_all

    answer = ask_all(settings.control_socket, request)
    if answer is None:
        _fail(
            f"No server is running on {settings.data_dir} (no answer on "
            f"{settings.control_socket}). Start it with 'allset-server serve'."
        )
        raise AssertionError("unreachable")
    if not answer.get("ok"):
        _fail(f"The server refused: {answer.get('error')}")
    return answer


def _transfer_line(t: dict[str, Any]) -> str:
    return (
        f"#{t['id']:<5} {t['tenant']:<16} {t['user']:<28} {t['method']:<8} "
        f"in {format_size(t['bytes_in'])} ({t['rate_in_bps'] / 1e6:.1f} Mbit/s)  "
        f"out {format_size(t['bytes_out'])} ({t['rate_out_bps'] / 1e6:.1f} Mbit/s)  "
        f"{t['seconds']}s  {t['path']}"
    )


@transfers.command("list")
@_data_option
@click.option("--tenant", "tenant_name", default=None, help="Only this Client's transfers.")
@click.pass_context
@friendly
def transfers_list(ctx: click.Context, tenant_name: str | None) -> None:
    """Transfers moving bytes right now, with their average rates."""
    tenant_id = _runtime(ctx).accounts.get_tenant(tenant_name)["id"] if tenant_name else None
    answer = _ask_server(ctx, {"cmd": "transfers", "tenant_id": tenant_id})
    _out(
        ctx,
        answer["transfers"],
        lambda ts: "\n".join(_transfer_line(t) for t in ts) or "no transfer in progress",
    )


@transfers.command("interrupt")
@_data_option
@click.option("--tenant", "tenant_name", required=True, help="The Client whose transfers to cut.")
@click.pass_context
@friendly
def transfers_interrupt(ctx: click.Context, tenant_name: str) -> None:
    """Cut a Client's transfers now: uploads are aborted cleanly (nothing half-stored; tus
    keeps what was durable so the client resumes), downloads are cut (clients resume with
    Range)."""
    rt = _runtime(ctx)
    tenant_id = rt.accounts.get_tenant(tenant_name)["id"]
    answer = _ask_server(ctx, {"cmd": "interrupt", "tenant_id": tenant_id})
    # R-OPS-4: an interrupt changes no row, so it is recorded here, as the console does.
    from allset.accounts.audit import Audit

    Audit(rt.db).record(
        tenant_id, "operator-cli", "transfers.interrupt", {"count": answer.get("interrupted")}
    )
    _out(ctx, answer, lambda a: f"interrupted {a['interrupted']} transfer(s) of {tenant_name}")


# ---- users and tokens ------------------------------------------------------------------
@main.group()
def user() -> None:
    """Users of a Client."""


@user.command("create")
@_data_option
@click.option("--tenant", "tenant_name", required=True, help="The Client's name.")
@click.argument("email")
@click.option(
    "--role", type=click.Choice(["owner", "admin", "member"]), default="member", show_default=True
)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.pass_context
@friendly
def user_create(
    ctx: click.Context, tenant_name: str, email: str, role: str, password_stdin: bool
) -> None:
    """Create a user (without a password, they sign in with app passwords only)."""
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    rt = _runtime(ctx)
    u = rt.accounts.create_user(tenant_name, email, role, password, actor="operator-cli")
    _out(ctx, u, lambda u: f"Created {u['role']} {u['email']} in {u['tenant']}")


@user.command("lost-password")
@_data_option
@click.argument("email")
@click.pass_context
@friendly
def user_lost(ctx: click.Context, email: str) -> None:
    """R-SEC-2: revoke every session and app password of the account at once."""
    rt = _runtime(ctx)
    rt.accounts.report_lost_password(email, actor="operator-cli")
    _out(
        ctx,
        {"email": email, "revoked": True},
        lambda d: f"All credentials of {email} revoked; the password must be reset.",
    )


@user.command("list")
@_data_option
@click.option("--tenant", "tenant_name", required=True, help="The Client's name.")
@click.pass_context
@friendly
def user_list(ctx: click.Context, tenant_name: str) -> None:
    """A Client's users, their roles and status (active, invited, removed), for support."""
    from allset.accounts.invitations import Members

    rt = _runtime(ctx)
    users = Members(rt.accounts, rt.settings).operator_list(tenant_name)
    _out(
        ctx,
        users,
        lambda us: (
            "\n".join(f"{u['email']:40} {u['role']:7} {u['status']}" for u in us) or "No users."
        ),
    )


@user.command("remove")
@_data_option
@click.argument("email")
@click.pass_context
@friendly
def user_remove(ctx: click.Context, email: str) -> None:
    """Remove a user on the Client's request: every session and app password is revoked
    at once and their folder access withdrawn; their files stay with the Client."""
    from allset.accounts.invitations import Members

    rt = _runtime(ctx)
    Members(rt.accounts, rt.settings).operator_remove(email, actor="operator-cli")
    _out(ctx, {"email": email, "removed": True}, lambda d: f"Removed {email}.")


@main.group()
def token() -> None:
    """App passwords for programs (WebDAV, sync)."""


@token.command("create")
@_data_option
@click.argument("email")
@click.option("--name", default="app password", help="A label saying what it is for.")
@click.pass_context
@friendly
def token_create(ctx: click.Context, email: str, name: str) -> None:
    """Print a new app password, once."""
    rt = _runtime(ctx)
    issued = rt.accounts.create_app_password(email, name, actor="operator-cli")
    _out(ctx, issued, lambda d: d["password"])


# ---- storage ---------------------------------------------------------------------------
@main.command()
@_data_option
@click.option("--repair", is_flag=True, help="Rewrite bad or missing copies from a good one.")
@click.pass_context
@friendly
def scrub(ctx: click.Context, repair: bool) -> None:
    """Verify every stored copy of every chunk (R-STORE-4)."""
    from allset.files.maintenance import scrub as do_scrub

    rt = _runtime(ctx)
    report = do_scrub(rt.files, repair)
    data = {
        "checked": report.checked,
        "problems": [p.__dict__ for p in report.problems],
        "unrecoverable": report.unrecoverable,
        "ok": report.ok,
    }

    def human(d: dict[str, Any]) -> str:
        lines = [
            f"{p['problem']} copy of {p['key']} on {p['replica']}"
            + (" — repaired" if p["repaired"] else "")
            for p in d["problems"]
        ]
        lines += [f"UNRECOVERABLE: {k} has no valid copy" for k in d["unrecoverable"]]
        lines.append(
            f"checked {d['checked']} chunks, {len(d['problems'])} bad copies, "
            f"{len(d['unrecoverable'])} unrecoverable"
        )
        return "\n".join(lines)

    _out(ctx, data, human)
    if report.unrecoverable or (report.problems and not repair):
        sys.exit(1)


@main.command()
@_data_option
@click.pass_context
@friendly
def maintenance(ctx: click.Context) -> None:
    """Run the server's maintenance now (it also runs it every maintenance interval):
    purge expired trash and versions, forget expired uploads and WebDAV locks, free the
    chunks nothing references and the files a crash left. Safe beside a running server:
    deletions wait for its commits (the interlock) and spare young files (the grace)."""
    from allset.files.maintenance import run_all

    rt = _runtime(ctx)
    report = run_all(rt.files, rt.settings.gc_grace_seconds, rt.resumables)
    _out(
        ctx,
        report.__dict__,
        lambda d: (
            f"purged {d['trashed_purged']} trashed items and {d['versions_purged']} old "
            f"versions, forgot {d['expired_uploads']} expired unfinished uploads and "
            f"{d['expired_dav_locks']} expired WebDAV locks, freed {d['chunks_freed']} "
            f"chunks ({format_size(d['bytes_freed'])}), removed {d['orphan_files']} orphan "
            f"and {d['temp_files']} temporary files"
        ),
    )


# ---- public links: takedown and observation (R-SHARE-4, R-SHARE-5, R-OPS-4) ----------
@main.group()
def link() -> None:
    """Public links: suspend (takedown), resume, list with counters, history, limit."""


def _link_line(x: dict[str, Any]) -> str:
    line = (
        f"{x['id']}  {x['tenant']:<16} {x['state']:<9} {x['kind']:<8} {x['token_hint']}…  "
        f"{x['downloads']} downloads, {format_size(x['bytes'])}, expires {x['expires']}"
    )
    if x.get("suspended_reason"):
        line += f"  [suspended by {x['suspended_by']}: {x['suspended_reason']}]"
    return line


@link.command("suspend")
@_data_option
@click.argument("token")
@click.option(
    "--reason", required=True, help="The complaint or cause (recorded, shown to the Client)."
)
@click.pass_context
@friendly
def link_suspend(ctx: click.Context, token: str, reason: str) -> None:
    """Take a link down at once (TOKEN: the token, the URL or the link id); 451 from now on."""
    rt = _runtime(ctx)
    _out(ctx, rt.links.suspend(token, reason), _link_line)


@link.command("resume")
@_data_option
@click.argument("token")
@click.pass_context
@friendly
def link_resume(ctx: click.Context, token: str) -> None:
    """Put a suspended link back (TOKEN: the token, the URL or the link id)."""
    rt = _runtime(ctx)
    _out(ctx, rt.links.resume(token), _link_line)


@link.command("list")
@_data_option
@click.option("--tenant", "tenant_name", default=None, help="Only this Client's links.")
@click.pass_context
@friendly
def link_list(ctx: click.Context, tenant_name: str | None) -> None:
    """Every link with its downloads and bytes served (R-SHARE-5)."""
    rt = _runtime(ctx)
    _out(
        ctx,
        rt.links.list_all(tenant_name),
        lambda xs: "\n".join(map(_link_line, xs)) or "No links.",
    )


@link.command("history")
@_data_option
@click.argument("token")
@click.pass_context
@friendly
def link_history(ctx: click.Context, token: str) -> None:
    """The audit trail of one link: created, revoked, suspended, resumed (R-OPS-4)."""
    rt = _runtime(ctx)
    _out(
        ctx,
        rt.links.history(token),
        lambda hs: "\n".join(f"{h['at']}  {h['kind']:<13} {h['actor']}  {h['detail']}" for h in hs),
    )


@link.command("limit")
@_data_option
@click.argument("tenant_name")
@click.option(
    "--bytes-per-day",
    required=True,
    help="Link traffic per UTC day above which the Client's links are throttled, e.g. 50GB; "
    "0 = none; 'default' = the server setting link_bytes_per_day.",
)
@click.pass_context
@friendly
def link_limit(ctx: click.Context, tenant_name: str, bytes_per_day: str) -> None:
    """R-SHARE-5: an operator threshold per Client; above it, downloads through its links
    are served at link_throttled_rate and the operator is alerted (log and metrics)."""
    rt = _runtime(ctx)
    value = None if bytes_per_day == "default" else parse_size(bytes_per_day)
    rt.links.set_tenant_threshold(tenant_name, value, actor="operator-cli")
    _out(
        ctx,
        {"tenant": tenant_name, "link_bytes_per_day": value},
        lambda d: (
            f"{d['tenant']}: link traffic threshold "
            + ("server default" if value is None else format_size(value) + " per day")
        ),
    )


if __name__ == "__main__":  # pragma: no cover
    main()
