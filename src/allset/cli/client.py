"""``allset``: the Client's Software (R-STORE-2) — sign in, then transfer and manage files.

Every transfer is verified end to end: ``put`` sends only the chunks the server lacks and
compares the SHA-256 the server stored with its own; ``get`` checks every chunk and the
whole file before the file takes its name. A mismatch is an error, never a warning.
``allset sync`` keeps a local folder and a server folder in agreement (``allset.sync``);
``allset verify`` compares them by SHA-256.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote

import click
import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from allset.client import profile as profiles
from allset.client.transfer import (
    LockedOnServer,
    RateLimiter,
    TransferError,
    check_response,
    local_chunks,
    pull_file,
    push_file,
)
from allset.core.errors import AllsetError
from allset.core.units import parse_rate
from allset.sync.engine import Options, SyncEngine, SyncRefused
from allset.sync.ignore import IgnoreRules
from allset.sync.names import Platform
from allset.sync.progress import Reporter
from allset.sync.remote import Remote
from allset.sync.scanner import scan, sha256_file
from allset.sync.state import state_path

P = ParamSpec("P")
R = TypeVar("R")
API = "/api/v1"


def friendly(fn: Callable[P, R]) -> Callable[P, R]:
    """Errors as one line that says what to do, exit code 1; never a traceback."""

    @wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except SyncRefused as exc:
            click.echo(f"refused: {exc}", err=True)
            sys.exit(3)
        except LockedOnServer as exc:  # someone has the document open: what to do
            click.echo(f"locked: {exc}", err=True)
            sys.exit(1)
        except (profiles.ProfileError, TransferError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except httpx.ConnectError as exc:
            click.echo(f"error: cannot reach the server ({exc}).", err=True)
            sys.exit(1)
        except httpx.HTTPError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return run


def _out(as_json: bool, data: Any, human: Callable[[Any], str]) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False) if as_json else human(data))


def _remote(path: str) -> str:
    return "/" + path.strip("/") if path.strip("/") else "/"


json_option = click.option("--json", "as_json", is_flag=True, help="JSON output.")
bwlimit_option = click.option(
    "--bwlimit", default=None, help="Cap this transfer's rate, e.g. 20Mbit or 5MB (per second)."
)


@contextlib.contextmanager
def _bar(label: str, total: int | None, shown: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr when it is a terminal (and not --json): ``advance(n,
    total)`` adds ``n`` bytes done; a non-zero ``total`` sets the size once known."""
    if not shown or not sys.stderr.isatty():
        yield lambda _n, _t: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)

        def advance(n: int, new_total: int) -> None:
            if new_total:
                bar.update(task, total=new_total)
            bar.update(task, advance=n)

        yield advance


def _limiter(bwlimit: str | None) -> RateLimiter | None:
    if not bwlimit:
        return None
    try:
        return RateLimiter(parse_rate(bwlimit))
    except AllsetError as exc:
        raise profiles.ProfileError(f"--bwlimit: {exc.detail}") from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="allset")
def main() -> None:
    """Transfer and synchronise files with an allset server."""


@main.command()
@click.argument("url")
@click.option("--user", required=True, help="Your email address.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--fingerprint", default=None, help="SHA-256 of the server certificate (pin).")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@friendly
def login(
    url: str,
    user: str,
    password_stdin: bool,
    fingerprint: str | None,
    ca_file: Path | None,
    as_json: bool,
) -> None:
    """Sign in once: an app password is created for this computer and kept in the profile
    (your account password is not stored)."""
    if fingerprint and ca_file:
        raise profiles.ProfileError("Give --fingerprint or --ca-file, not both.")
    url = url.rstrip("/")
    directory = profiles.config_dir()
    directory.mkdir(parents=True, exist_ok=True)
    ca = ""
    if fingerprint:
        ca = str(profiles.pin_certificate(url, fingerprint, directory))
    elif ca_file:
        ca = str(directory / profiles.PINNED)
        shutil.copyfile(ca_file, ca)
    password = (
        sys.stdin.readline().rstrip("\n")
        if password_stdin
        else click.prompt("Password", hide_input=True)
    )
    probe = profiles.Profile(url, user, password, ca_file=ca)
    with probe.client() as http:
        issued = check_response(
            http.post(
                f"{API}/auth/app-passwords", json={"name": f"allset on {socket.gethostname()}"}
            ),
            "signing in",
        )
    prof = profiles.Profile(url, user, issued["password"], issued.get("id", ""), ca)
    with prof.client() as http:
        me = check_response(http.get(f"{API}/me"), "checking the new app password")
    path = profiles.save(prof, directory)
    _out(
        as_json,
        {"url": url, "user": me["email"], "profile": str(path)},
        lambda d: f"signed in to {d['url']} as {d['user']} (profile {d['profile']})",
    )


@main.command()
@click.argument("remote", default="/")
@json_option
@friendly
def ls(remote: str, as_json: bool) -> None:
    """List a folder (or show a file)."""
    prof = profiles.load()
    entries: list[dict[str, Any]] = []
    with prof.client() as http:
        after = ""
        for _ in range(100_000):  # pages of 1,000
            page = check_response(
                http.get(
                    f"{API}/tree{quote(_remote(remote))}", params={"after": after, "limit": 1000}
                ),
                f"listing {remote}",
            )
            if page.get("type") != "folder":
                entries = [page]
                break
            entries += page["entries"]
            if not page.get("next"):
                break
            after = page["next"]

    def human(es: list[dict[str, Any]]) -> str:
        lines = []
        for e in es:
            kind = "d" if e["type"] == "folder" else "-"
            size = e.get("size", "")
            lines.append(f"{kind} {size!s:>12}  {e['mtime'][:19]}  {e['name']}")
        return "\n".join(lines) or "(empty)"

    _out(as_json, entries, human)


@main.command()
@click.argument("local", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("remote")
@bwlimit_option
@json_option
@friendly
def put(local: Path, remote: str, bwlimit: str | None, as_json: bool) -> None:
    """Upload a file (only the chunks the server lacks travel); verified by SHA-256."""
    prof = profiles.load()
    target = _remote(remote)
    if remote.endswith("/"):
        target = target.rstrip("/") + "/" + local.name
    limiter = _limiter(bwlimit)
    with prof.client() as http, _bar(local.name, local.stat().st_size, not as_json) as advance:
        result = push_file(http, local, target, limiter=limiter, progress=lambda n: advance(n, 0))
    _out(
        as_json,
        result.__dict__,
        lambda r: (
            f"{r['path']}: {r['size']} bytes, sha256 {r['sha256']} verified by the server "
            f"({r['bytes_sent']} bytes sent, {r['chunks_sent']}/{r['chunks_total']} chunks)"
        ),
    )


@main.command()
@click.argument("remote")
@click.argument("local", type=click.Path(path_type=Path))
@bwlimit_option
@json_option
@friendly
def get(remote: str, local: Path, bwlimit: str | None, as_json: bool) -> None:
    """Download a file; every chunk and the whole file are checked before it is saved."""
    prof = profiles.load()
    source = _remote(remote)
    if local.is_dir():
        local = local / source.rsplit("/", 1)[-1]
    limiter = _limiter(bwlimit)
    # Resumable: chunks of an interrupted download, or of the file being replaced, are
    # taken from this computer instead of the network (each verified again).
    partial = local.with_name(local.name + ".allset-part")
    earlier = local.with_name(local.name + ".allset-resume")
    if partial.exists():
        partial.replace(earlier)
    with prof.client() as http:
        try:
            have = local_chunks(earlier, local)
            with _bar(source.rsplit("/", 1)[-1], None, not as_json) as advance:
                fetched = pull_file(http, source, local, have, limiter=limiter, progress=advance)
        finally:
            earlier.unlink(missing_ok=True)
        meta = check_response(http.get(f"{API}/tree{quote(source)}"), f"reading {remote}")
    data = {"path": str(local), "size": meta["size"], "sha256": meta["sha256"], "fetched": fetched}
    _out(as_json, data, lambda d: f"{d['path']}: {d['size']} bytes, sha256 {d['sha256']} verified")


@main.command()
@click.argument("remote")
@friendly
def rm(remote: str) -> None:
    """Move a file or folder to the trash (restorable for the retention period)."""
    prof = profiles.load()
    with prof.client() as http:
        check_response(http.delete(f"{API}/files{quote(_remote(remote))}"), f"deleting {remote}")
    click.echo(f"{_remote(remote)} moved to the trash")


@main.command()
@click.argument("src")
@click.argument("dst")
@friendly
def mv(src: str, dst: str) -> None:
    """Move or rename."""
    prof = profiles.load()
    with prof.client() as http:
        check_response(
            http.post(f"{API}/move", json={"from": _remote(src), "to": _remote(dst)}),
            f"moving {src}",
        )
    click.echo(f"{_remote(src)} -> {_remote(dst)}")


@main.command()
@click.argument("remote")
@friendly
def mkdir(remote: str) -> None:
    """Create a folder (and missing parents)."""
    prof = profiles.load()
    with prof.client() as http:
        check_response(
            http.post(f"{API}/mkdir", json={"path": _remote(remote), "parents": True}),
            f"creating {remote}",
        )
    click.echo(f"{_remote(remote)} created")


@main.command()
@click.argument("local", type=click.Path(file_okay=False, path_type=Path))
@click.argument("remote")
@click.option("--once", "mode", flag_value="once", default=True, help="One pass, then exit.")
@click.option("--watch", "mode", flag_value="watch", help="Keep syncing on every change.")
@click.option(
    "--allow-mass-delete",
    is_flag=True,
    help="Go ahead when a pass would delete more than half of the synced files.",
)
@click.option(
    "--reset",
    is_flag=True,
    help="Forget the last agreed state and merge both sides again (deletes nothing).",
)
@bwlimit_option
@json_option
@friendly
def sync(
    local: Path,
    remote: str,
    mode: str,
    allow_mass_delete: bool,
    reset: bool,
    bwlimit: str | None,
    as_json: bool,
) -> None:
    """Two-way sync of LOCAL with the server folder REMOTE (R-SYNC-1).

    Exit status: 0 in sync, 1 error, 2 some files could not be synced (listed: errors,
    or files locked on the server by someone editing them, left pending for the next
    run), 3 refused (mass delete, not enough room, folder missing) with nothing changed.
    """
    prof = profiles.load()
    local = local.absolute()
    options = Options(allow_mass_delete=allow_mass_delete, limiter=_limiter(bwlimit), reset=reset)
    reporter = Reporter(as_json=as_json)
    state_file = state_path(profiles.config_dir(), prof.url, prof.user, local, _remote(remote))
    with prof.client() as http:
        engine = SyncEngine(
            http, local, _remote(remote), state_file, options, reporter, server_id=prof.url
        )
        try:
            if mode == "watch":
                import threading

                stop = threading.Event()
                try:
                    engine.watch(stop)
                except KeyboardInterrupt:
                    stop.set()
                return
            result = engine.run_once()
        finally:
            engine.close()
    if result.outcome.errors or result.outcome.locked:
        sys.exit(2)


@main.command()
@click.argument("local", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("remote")
@json_option
@friendly
def verify(local: Path, remote: str, as_json: bool) -> None:
    """Compare LOCAL and the server folder REMOTE by SHA-256; exit 1 when they differ."""
    prof = profiles.load()
    rules = IgnoreRules.load(local)
    found = scan(local, {}, rules, Platform.current())
    with prof.client() as http:
        entries, _ = Remote(http, _remote(remote)).snapshot()
    diffs: list[dict[str, str]] = []
    for key in sorted(set(entries) | set(found.items)):
        r, item = entries.get(key), found.items.get(key)
        if r is not None and rules.ignored(key, r.kind == "dir"):
            continue
        if key in found.frozen:
            continue
        if item is None:
            diffs.append({"path": key, "difference": "only on the server"})
        elif r is None:
            diffs.append({"path": key, "difference": "only here"})
        elif r.kind != item.kind:
            diffs.append({"path": key, "difference": f"{item.kind} here, {r.kind} on the server"})
        elif r.kind == "file":
            sha = sha256_file(local.joinpath(*item.local.split("/")))
            if sha != r.sha256:
                diffs.append(
                    {"path": key, "difference": "content differs", "local": sha, "remote": r.sha256}
                )
    _out(
        as_json,
        {
            "same": not diffs,
            "differences": diffs,
            "files": sum(1 for e in entries.values() if e.kind == "file"),
        },
        lambda d: (
            "\n".join(f"{x['difference']}: {x['path']}" for x in d["differences"])
            or f"identical: {d['files']} files match by SHA-256"
        ),
    )
    if diffs:
        sys.exit(1)


# ---- public links (R-SHARE-2, R-SHARE-5) -----------------------------------------------
@main.group()
def share() -> None:
    """Public links: publish a file or folder, list your links, revoke one."""


def _share_line(x: dict[str, Any]) -> str:
    limit = f"/{x['max_downloads']}" if x.get("max_downloads") else ""
    line = (
        f"{x['id']}  {x['state']:<9} {x['kind']:<8} {x.get('path') or '(gone)'}  "
        f"expires {x['expires']}  {x['downloads']}{limit} downloads, {x['bytes']} bytes"
    )
    if x.get("suspended_reason"):
        line += f"  [suspended by the operator: {x['suspended_reason']}]"
    return line


@share.command("create")
@click.argument("remote")
@click.option("--expires", default=None, help="30m, 12h, 7d (default 7d) or an ISO 8601 instant.")
@click.option("--password-stdin", is_flag=True, help="Protect the link; password from stdin.")
@click.option("--max-downloads", type=click.IntRange(min=1), default=None)
@click.option("--drop", is_flag=True, help="An upload-only drop folder (REMOTE is a folder).")
@json_option
@friendly
def share_create(
    remote: str,
    expires: str | None,
    password_stdin: bool,
    max_downloads: int | None,
    drop: bool,
    as_json: bool,
) -> None:
    """Publish REMOTE and print its public URL (shown once: only a hash is kept)."""
    from allset.core.units import parse_deadline, parse_duration

    body: dict[str, Any] = {"path": _remote(remote), "drop": drop}
    if expires:
        try:
            parse_duration(expires)
            body["expires_in"] = expires
        except AllsetError:
            try:
                body["expires_at"] = parse_deadline(expires).isoformat()
            except AllsetError as exc:
                raise profiles.ProfileError(f"--expires: {exc.detail}") from exc
    if max_downloads is not None:
        body["max_downloads"] = max_downloads
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise profiles.ProfileError("--password-stdin: no password on standard input.")
        body["password"] = password
    prof = profiles.load()
    with prof.client() as http:
        made = check_response(http.post(f"{API}/links", json=body), f"sharing {remote}")
    data = {"id": made["id"], "url": made["url"], "expires": made["expires"], **made}
    _out(as_json, data, lambda d: d["url"])


@share.command("list")
@json_option
@friendly
def share_list(as_json: bool) -> None:
    """Your links with their counters, state and any takedown reason."""
    prof = profiles.load()
    with prof.client() as http:
        links = check_response(http.get(f"{API}/links"), "listing links")["links"]
    _out(as_json, links, lambda xs: "\n".join(_share_line(x) for x in xs) or "No links.")


@share.command("revoke")
@click.argument("link_id")
@json_option
@friendly
def share_revoke(link_id: str, as_json: bool) -> None:
    """Withdraw a link: it stops working at once."""
    prof = profiles.load()
    with prof.client() as http:
        done = check_response(http.delete(f"{API}/links/{quote(link_id, safe='')}"), "revoking")
    _out(as_json, done, lambda d: f"revoked {d['id']}")


# ---- WebDAV locks an editor left behind -------------------------------------------------
def _lock_line(x: dict[str, Any]) -> str:
    by = x["user"] + (f" ({x['owner']})" if x.get("owner") and x["owner"] != x["user"] else "")
    return f"{x['id']}  {x['path']}  locked by {by}  until {x['expires_at']}"


@main.command()
@json_option
@friendly
def locks(as_json: bool) -> None:
    """WebDAV locks you may see (owners and admins: the whole Client's; members: theirs)."""
    prof = profiles.load()
    with prof.client() as http:
        held = check_response(http.get(f"{API}/locks"), "listing locks")["locks"]
    _out(as_json, held, lambda xs: "\n".join(_lock_line(x) for x in xs) or "No locks.")


@main.command()
@click.argument("lock_id")
@json_option
@friendly
def unlock(lock_id: str, as_json: bool) -> None:
    """Break a lock an editor left behind (its ID from ``allset locks``): the document can
    be saved again; the editor holding it must open it again to save."""
    prof = profiles.load()
    with prof.client() as http:
        url = f"{API}/locks/{quote(lock_id, safe='')}"
        done = check_response(http.delete(url), "breaking the lock")
    _out(as_json, done, lambda d: f"unlocked {d['path']}")


if __name__ == "__main__":  # pragma: no cover
    main()
