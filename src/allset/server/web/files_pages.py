"""Files area: browsing (breadcrumbs, sorting, keyset paging, the quota bar), uploads,
downloads (a file, or a folder as a zip), a details page per item (SHA-256, rename, move,
copy, delete, versions) and the trash.

Handlers are plain functions of the ``WebFront`` (``front``) and the request; they call
the façade and render, nothing else (policy lives in ``files/``). Every change is a POST
form carrying the session's CSRF token and answers with a redirect and a message
(``front.done``), so every action gives feedback and a reload never repeats it.

Uploads go over tus (``/tus/``) from ``static/files.js`` with the vendored tus-js-client
(resumable after a dropped connection or a reload); without script, the same form posts
to ``/files-do/upload`` as multipart. Words live in ``MESSAGES`` below, in French and
English, registered with ``i18n``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from allset.core.errors import (
    AllsetError,
    AlreadyExists,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    ResourceLocked,
)
from allset.core.paths import RemotePath, parse_path
from allset.core.principal import Principal
from allset.core.units import format_size
from allset.files.listing import SORTS
from allset.files.maintenance import purge_trash
from allset.files.upload import begin_upload
from allset.server.rest.deps import path_after
from allset.server.web.i18n import register

if TYPE_CHECKING:
    from allset.server.web.app import Ctx, WebFront

PAGE = 200
UPLOAD_BLOCK = 1 << 20

MESSAGES: dict[str, tuple[str, str]] = {
    "files.sort.by": ("Trier par {column}", "Sort by {column}"),
    "files.sort.asc": ("croissant", "ascending"),
    "files.sort.desc": ("décroissant", "descending"),
    "files.sort": ("Trier", "Sort"),
    "files.sort.column": ("Trier par", "Sort by"),
    "files.sort.order": ("Ordre", "Order"),
    "files.details": ("Détails", "Details"),
    "files.details.of": ("Détails de {name}", "Details of {name}"),
    "files.zip": ("Télécharger le dossier (zip)", "Download the folder (zip)"),
    "files.trash": ("Corbeille", "Trash"),
    "files.newfolder": ("Nouveau dossier", "New folder"),
    "files.newfolder.name": ("Nom du nouveau dossier", "New folder's name"),
    "files.create": ("Créer", "Create"),
    "files.actions": ("Actions", "Actions"),
    "files.badcursor": (
        "Ce lien de page n'est plus valable ; reprenez à la première page.",
        "This page link is no longer valid; start again from the first page.",
    ),
    "upload.title": ("Envoyer des fichiers", "Upload files"),
    "upload.drop": (
        "Déposez ici des fichiers ou des dossiers, ou choisissez-les :",
        "Drop files or folders here, or choose them:",
    ),
    "upload.files": ("Choisir des fichiers", "Choose files"),
    "upload.folder": ("Choisir un dossier", "Choose a folder"),
    "upload.send": ("Envoyer", "Upload"),
    "upload.overall": ("Progression totale", "Overall progress"),
    "upload.waiting": ("En attente", "Waiting"),
    "upload.resuming": ("Reprise là où l'envoi s'était arrêté…", "Resuming where it stopped…"),
    "upload.retrying": (
        "Connexion perdue, nouvel essai…",
        "Connection lost, trying again…",
    ),
    "upload.done": ("Envoyé", "Uploaded"),
    "upload.failed": ("Échec : {reason}", "Failed: {reason}"),
    "upload.progress": (
        "{percent} % · {sent} sur {total}",
        "{percent}% · {sent} of {total}",
    ),
    "upload.speed": (
        "{speed}/s · reste environ {left}",
        "{speed}/s · about {left} left",
    ),
    "upload.alldone": (
        "Tous les envois sont terminés.",
        "All uploads are finished.",
    ),
    "upload.show": ("Afficher les fichiers envoyés", "Show the uploaded files"),
    "upload.leave": (
        "Des envois sont en cours ; ils reprendront si vous revenez et choisissez à nouveau "
        "les mêmes fichiers.",
        "Uploads are in progress; they resume if you come back and choose the same files again.",
    ),
    "upload.none": ("Choisissez au moins un fichier.", "Choose at least one file."),
    "upload.stored": ("{n} fichier(s) envoyé(s).", "{n} file(s) uploaded."),
    "unit.s": ("{n} s", "{n} s"),
    "unit.min": ("{n} min", "{n} min"),
    "unit.h": ("{n} h", "{n} h"),
    "item.type": ("Type", "Type"),
    "item.share": ("Partager par un lien public", "Share with a public link"),
    "item.file": ("Fichier", "File"),
    "item.sha256": ("Empreinte SHA-256", "SHA-256 fingerprint"),
    "item.sha256.show": ("Afficher l'empreinte SHA-256", "Show the SHA-256 fingerprint"),
    "item.sha256.why": (
        "Comparez-la avec celle de votre copie pour vérifier qu'elle est identique.",
        "Compare it with your copy's to check that they are identical.",
    ),
    "item.rename": ("Renommer", "Rename"),
    "item.noname": (
        "donnez un nom, sans « / ».",
        "give a name, without “/”.",
    ),
    "item.newname": ("Nouveau nom", "New name"),
    "item.move": ("Déplacer", "Move"),
    "item.copy": ("Copier", "Copy"),
    "item.to": ("Vers le dossier (par exemple /Projets/2026)", "To folder (e.g. /Projects/2026)"),
    "item.copyname": ("Nom de la copie", "Name of the copy"),
    "item.delete": ("Mettre à la corbeille", "Move to the trash"),
    "item.back": ("Retour au dossier", "Back to the folder"),
    "item.versions": ("Versions", "Versions"),
    "item.version.when": ("Enregistrée le", "Saved on"),
    "item.version.current": ("actuelle", "current"),
    "item.version.restore": ("Restaurer cette version", "Restore this version"),
    "item.version.download": ("Télécharger cette version", "Download this version"),
    "item.notfound": (
        "Ce fichier ou dossier n'existe pas (ou plus).",
        "This file or folder does not exist (any more).",
    ),
    "done.renamed": ("« {name} » a été renommé en « {new} ».", "“{name}” was renamed “{new}”."),
    "done.moved": ("« {name} » a été déplacé dans {to}.", "“{name}” was moved to {to}."),
    "done.copied": ("« {name} » a été copié vers {to}.", "“{name}” was copied to {to}."),
    "done.deleted": (
        "« {name} » est dans la corbeille ; vous pouvez l'y restaurer.",
        "“{name}” is in the trash; you can restore it from there.",
    ),
    "done.mkdir": ("Le dossier « {name} » a été créé.", "The folder “{name}” was created."),
    "done.version": (
        "La version du {when} est de nouveau la version actuelle (l'ancienne est gardée).",
        "The version of {when} is the current one again (the previous one is kept).",
    ),
    "done.restored": ("« {name} » a été restauré dans {to}.", "“{name}” was restored to {to}."),
    "done.purged": ("« {name} » a été supprimé définitivement.", "“{name}” was deleted for good."),
    "done.emptied": (
        "La corbeille a été vidée ({n} élément(s) supprimé(s)).",
        "The trash was emptied ({n} item(s) deleted).",
    ),
    "trash.title": ("Corbeille", "Trash"),
    "trash.intro": (
        "Les éléments supprimés sont gardés {days} jours, puis effacés.",
        "Deleted items are kept for {days} days, then erased.",
    ),
    "trash.empty": ("La corbeille est vide.", "The trash is empty."),
    "trash.where": ("Emplacement d'origine", "Original location"),
    "trash.when": ("Supprimé le", "Deleted on"),
    "trash.until": ("Effacé le", "Erased on"),
    "trash.restore": ("Restaurer", "Restore"),
    "trash.purge": ("Supprimer définitivement", "Delete for good"),
    "trash.emptyall": ("Vider la corbeille", "Empty the trash"),
    "trash.confirm.empty": (
        "Vider la corbeille ? Tout ce qu'elle contient sera effacé pour de bon.",
        "Empty the trash? Everything in it will be erased for good.",
    ),
    "trash.confirm.purge": (
        "Supprimer « {name} » définitivement ? Cela ne peut pas être annulé.",
        "Delete “{name}” for good? This cannot be undone.",
    ),
    "trash.restore.of": ("Restaurer {name}", "Restore {name}"),
    "trash.purge.of": ("Supprimer définitivement {name}", "Delete {name} for good"),
    "err.quota": (
        "Espace plein : {used} utilisés sur {quota}. Videz la corbeille ou supprimez des "
        "fichiers, ou demandez plus d'espace.",
        "Storage full: {used} used of {quota}. Empty the trash or delete files, or ask "
        "for more space.",
    ),
    "err.exists": (
        "Un fichier ou dossier porte déjà ce nom à cet endroit.",
        "A file or folder with this name is already there.",
    ),
    "err.notfound": (
        "Introuvable : l'élément ou le dossier de destination n'existe pas (ou plus).",
        "Not found: the item or the destination folder does not exist (any more).",
    ),
    "err.forbidden": (
        "Vous n'avez pas le droit de modifier cet endroit.",
        "You may not change anything there.",
    ),
    "err.name": ("Ce nom ou ce chemin n'est pas valable : {detail}", "Not a valid name: {detail}"),
    "err.nofolder": (
        "Le dossier {folder} n'existe pas ; créez-le d'abord.",
        "The folder {folder} does not exist; create it first.",
    ),
    "err.conflict": ("Impossible : {detail}", "Not possible: {detail}"),
    "err.locked": (
        "{path} est verrouillé par {holder} jusqu'au {until} UTC : le document est ouvert "
        "dans un éditeur (Word, LibreOffice…). Fermez le document ou attendez ; un "
        "propriétaire ou un administrateur peut lever le verrou (Administration → Verrous "
        "WebDAV).",
        "{path} is locked by {holder} until {until} UTC: the document is open in an editor "
        "(Word, LibreOffice…). Close the document or wait; an owner or admin can break the "
        "lock (Admin → WebDAV locks).",
    ),
    "lock.someone": ("un éditeur WebDAV", "a WebDAV editor"),
    "err.other": ("L'opération a échoué : {detail}", "That did not work: {detail}"),
}
register(MESSAGES)

# What files.js needs, in the page's language (the script itself has no words).
SCRIPT_WORDS = (
    "upload.waiting",
    "upload.resuming",
    "upload.retrying",
    "upload.done",
    "upload.failed",
    "upload.progress",
    "upload.speed",
    "upload.alldone",
    "upload.leave",
    "err.quota",
    "err.forbidden",
    "err.notfound",
    "err.other",
    "err.locked",
    "lock.someone",
    "unit.s",
    "unit.min",
    "unit.h",
)


LABELS = {"name": "files.name", "size": "files.size", "mtime": "files.modified"}


def url_of(prefix: str, path: RemotePath | str) -> str:
    """``prefix`` + the path, each name percent-encoded (``/a b`` -> ``PREFIX/a%20b``)."""
    parts = path.parts if isinstance(path, RemotePath) else [x for x in path.split("/") if x]
    return prefix + "".join("/" + quote(x, safe="") for x in parts)


def zip_url(path: RemotePath) -> str:
    """The root's zip is ``/api/v1/zip/`` (the route needs the slash)."""
    return url_of("/api/v1/zip", path) if path.parts else "/api/v1/zip/"


def folder_url(path: RemotePath | str) -> str:
    return url_of("/files", path) + "/"


def plain_error(ctx: Ctx, exc: AllsetError) -> str:
    """A façade error in the reader's language: quota with the figures, the usual cases
    in plain words, anything else with the façade's own (English) detail."""
    if isinstance(exc, QuotaExceeded):
        return ctx.t(
            "err.quota",
            used=format_size(int(exc.extra.get("used_bytes", 0))),
            quota=format_size(int(exc.extra.get("quota_bytes", 0))),
        )
    if isinstance(exc, AlreadyExists):
        return ctx.t("err.exists")
    if isinstance(exc, NotFound):
        return ctx.t("err.notfound")
    if isinstance(exc, Forbidden):
        return ctx.t("err.forbidden")
    if isinstance(exc, InvalidInput):
        return ctx.t("err.name", detail=exc.detail)
    if isinstance(exc, ResourceLocked):  # R-SHARE-1: a document open in an editor
        return locked_message(ctx, exc)
    if isinstance(exc, Conflict) and exc.extra.get("missing"):
        return ctx.t("err.nofolder", folder=str(exc.extra["missing"]))
    if isinstance(exc, Conflict):
        return ctx.t("err.conflict", detail=exc.detail)
    return ctx.t("err.other", detail=exc.detail)


def locked_message(ctx: Ctx, exc: ResourceLocked) -> str:
    """The 423 of a WebDAV lock in the reader's language: which path, who holds it,
    until when, and what to do (the same members as the API's problem+json)."""
    x = exc.extra
    return ctx.t(
        "err.locked",
        path=x.get("lock_path") or x.get("path") or "",
        holder=x.get("lock_owner") or x.get("lock_user") or ctx.t("lock.someone"),
        until=_when(str(x.get("lock_expires_at") or "")),
    )


def _back(fields: dict[str, str], default: str) -> str:
    """Where to return after an action: a path on this site only (no open redirect)."""
    target = fields.get("back", "")
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def _when(iso: str) -> str:
    return iso[:16].replace("T", " ")


def _copy_name(name: str, lang: str) -> str:
    word = "copie" if lang == "fr" else "copy"
    stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    return f"{stem} ({word}){dot}{ext}"


Handler = Callable[[Request], Awaitable[Response]]


def routes(front: WebFront) -> list[BaseRoute]:
    svc = front.runtime.files

    async def signed(request: Request) -> tuple[Ctx, Principal | None, Response | None]:
        """The caller if they have a storage space; else where to send them."""
        ctx, away = await front.signed_in(request)
        if away is not None or ctx.principal is None:
            return ctx, None, away or front.to_login(ctx)
        if ctx.principal.is_operator:  # the operator has no storage space (R-STORE-6)
            return ctx, None, RedirectResponse("/operator", status_code=303)
        return ctx, ctx.principal, None

    async def files_root(request: Request) -> Response:
        return RedirectResponse("/files/", status_code=308)

    async def files(request: Request) -> Response:
        ctx, p, away = await signed(request)
        if p is None:
            return away or front.to_login(ctx)
        path = path_after(request, "/files")
        q = request.query_params
        sort = q.get("sort", "name") if q.get("sort", "name") in SORTS else "name"
        desc = q.get("order") == "desc"
        after = q.get("after", "")
        try:
            entry, entries, nxt = await run_in_threadpool(
                svc.list_sorted, p, path, sort, desc, after, PAGE
            )
        except NotFound:
            return front.render(ctx, "error.html", 404, message=ctx.t("files.notfound"))
        except InvalidInput:
            return front.render(ctx, "error.html", 400, message=ctx.t("files.badcursor"))
        if entry.kind != "dir":
            return RedirectResponse(url_of("/api/v1/files", path), status_code=303)
        usage = await run_in_threadpool(svc.usage, p)
        crumbs = [(ctx.t("files.root"), "/files/")]
        for i, part in enumerate(path.parts):
            crumbs.append((part, folder_url(RemotePath(path.parts[: i + 1]))))
        here = folder_url(path)

        def sort_link(column: str) -> str:
            flip = column == sort and not desc
            return here + "?" + urlencode({"sort": column, "order": "desc" if flip else "asc"})

        columns = [
            {
                "id": c,
                "label": ctx.t(LABELS[c]),
                "href": sort_link(c),
                "aria": ("descending" if desc else "ascending") if c == sort else "none",
            }
            for c in SORTS
        ]
        words = {k: ctx.t(k) for k in SCRIPT_WORDS}
        order = {"sort": sort, "order": "desc" if desc else "asc"}
        return front.render(
            ctx,
            "files.html",
            folder=entry,
            folder_path=str(path),
            entries=entries,
            crumbs=crumbs,
            columns=columns,
            sort=sort,
            desc=desc,
            next_href=here + "?" + urlencode({**order, "after": nxt}) if nxt else "",
            first_href=here + "?" + urlencode(order) if after else "",
            here=here,
            item_base=url_of("/item", path),
            api=url_of("/api/v1/files", path),
            zip_href=zip_url(path),
            used=usage.used,
            quota=usage.quota,
            percent=min(100, round(100 * usage.used / usage.quota)) if usage.quota else 0,
            words=json.dumps(words, ensure_ascii=False),
            is_root=path.is_root,
        )

    async def item(request: Request) -> Response:
        ctx, p, away = await signed(request)
        if p is None:
            return away or front.to_login(ctx)
        path = path_after(request, "/item")
        try:
            entry = await run_in_threadpool(svc.stat, p, path)
            versions = (
                await run_in_threadpool(svc.versions, p, path) if entry.kind == "file" else []
            )
        except (NotFound, Forbidden):
            return front.render(ctx, "error.html", 404, message=ctx.t("item.notfound"))
        parent = path.parent
        return front.render(
            ctx,
            "item.html",
            e=entry,
            item_path=str(path),
            parent_path=str(parent),
            parent_href=folder_url(parent),
            self_href=url_of("/item", path),
            download=url_of("/api/v1/files", path),
            zip_href=zip_url(path),
            versions=versions,
            copy_name=_copy_name(entry.name, ctx.lang),
            when=_when,
            is_root=path.is_root,
        )

    def action(
        work: Callable[[Ctx, Principal, dict[str, str]], Awaitable[tuple[str, str]]],
    ) -> Handler:
        """A POST form: CSRF checked, the work done, then back with a message; a façade
        error comes back as a plain-words message, never a server error."""

        async def handler(request: Request) -> Response:
            ctx, p, away = await signed(request)
            if p is None:
                return away or front.to_login(ctx)
            fields = await front.form(ctx)
            if fields is None:
                return front.csrf_refused(ctx)
            fallback = folder_url(fields.get("path", "/").rsplit("/", 1)[0] or "/")
            try:
                url, message = await work(ctx, p, fields)
            except AllsetError as exc:
                return front.done(_back(fields, fallback), plain_error(ctx, exc), "error")
            return front.done(url, message)

        return handler

    def src(fields: dict[str, str]) -> RemotePath:
        return parse_path(fields.get("path", ""))

    def dest_folder(fields: dict[str, str]) -> RemotePath:
        to = fields.get("to", "").strip() or "/"
        return parse_path(to if to.startswith("/") else "/" + to)

    async def do_rename(ctx: Ctx, p: Principal, f: dict[str, str]) -> tuple[str, str]:
        sp = src(f)
        new = f.get("name", "").strip()
        if not new or "/" in new:
            raise InvalidInput(ctx.t("item.noname"))
        dp = sp.parent.child(new)  # validated like every name
        if dp != sp:
            await run_in_threadpool(svc.move, p, sp, dp)
        return url_of("/item", dp), ctx.t("done.renamed", name=sp.name, new=dp.name)

    async def do_move(ctx: Ctx, p: Principal, f: dict[str, str]) -> tuple[str, str]:
        sp, to = src(f), dest_folder(f)
        dp = to.child(sp.name)
        await run_in_threadpool(svc.move, p, sp, dp)
        return url_of("/item", dp), ctx.t("done.moved", name=sp.name, to=str(to))

    async def do_copy(ctx: Ctx, p: Principal, f: dict[str, str]) -> tuple[str, str]:
        sp, to = src(f), dest_folder(f)
        name = f.get("name", "").strip() or sp.name
        if "/" in name:
            raise InvalidInput(ctx.t("item.noname"))
        dp = to.child(name)
        await run_in_threadpool(svc.copy, p, sp, dp)
        return url_of("/item", dp), ctx.t("done.copied", name=sp.name, to=str(dp))

    async def do_delete(ctx: Ctx, p: Principal, f: dict[str, str]) -> tuple[str, str]:
        sp = src(f)
        await run_in_threadpool(svc.delete, p, sp)
        return folder_url(sp.parent), ctx.t("done.deleted", name=sp.name)

    async def do_mkdir(ctx: Ctx, p: Principal, f: dict[str, str]) -> tuple[str, str]:
        name = f.get("name", "").strip()
        if not name or "/" in name:
            raise InvalidInput(ctx.t("item.noname"))
        folder = parse_path(f.get("folder", "/") or "/")
        rp = folder.child(name)
        await run_in_threadpool(svc.mkdir, p, rp)
        return folder_url(folder), ctx.t("done.mkdir", name=name)

    async def do_version(ctx: Ctx, p: Principal, f: dict[str, str]) -> tuple[str, str]:
        sp = src(f)
        await run_in_threadpool(svc.restore_version, p, sp, f.get("version", ""))
        return url_of("/item", sp), ctx.t("done.version", when=f.get("when", ""))

    async def do_trash_restore(ctx: Ctx, p: Principal, f: dict[str, str]) -> tuple[str, str]:
        entry = await run_in_threadpool(svc.trash_restore, p, f.get("id", ""))
        rp = parse_path(entry.path)
        return "/trash", ctx.t("done.restored", name=entry.name, to=str(rp.parent))

    async def do_trash_purge(ctx: Ctx, p: Principal, f: dict[str, str]) -> tuple[str, str]:
        await run_in_threadpool(purge_trash, svc, p, f.get("id", ""))
        return "/trash", ctx.t("done.purged", name=f.get("name", ""))

    async def do_trash_empty(ctx: Ctx, p: Principal, f: dict[str, str]) -> tuple[str, str]:
        items = await run_in_threadpool(svc.trash_list, p)
        await run_in_threadpool(purge_trash, svc, p, None)
        return "/trash", ctx.t("done.emptied", n=len(items))

    async def upload(request: Request) -> Response:
        """The no-script fallback: a multipart form of files (a folder picker sends each
        file's relative path as its name), stored like any upload, in constant memory."""
        ctx, p, away = await signed(request)
        if p is None:
            return away or front.to_login(ctx)
        fields = await front.form(ctx)
        if fields is None:
            return front.csrf_refused(ctx)
        form = await request.form()
        folder_text = fields.get("folder", "/") or "/"
        stored = 0
        try:
            folder = parse_path(folder_text)
            back = folder_url(folder)
            for item_ in form.getlist("files"):
                if not isinstance(item_, UploadFile) or not item_.filename:
                    continue
                rel = [x for x in item_.filename.replace("\\", "/").split("/") if x]
                rp = parse_path("/".join((*folder.parts, *rel)))
                if len(rel) > 1:
                    await run_in_threadpool(svc.mkdir, p, rp.parent, True)
                await store_upload(p, rp, item_)
                stored += 1
        except AllsetError as exc:
            return front.done(folder_url(folder_text), plain_error(ctx, exc), "error")
        if not stored:
            return front.done(back, ctx.t("upload.none"), "error")
        return front.done(back, ctx.t("upload.stored", n=stored))

    async def store_upload(p: Principal, rp: RemotePath, f: UploadFile) -> None:
        up = await run_in_threadpool(begin_upload, svc, p, rp, expected_size=f.size)
        try:
            while block := await f.read(UPLOAD_BLOCK):
                await run_in_threadpool(up.write, block)
            await run_in_threadpool(up.commit)
        except BaseException:
            await run_in_threadpool(up.abort)
            raise

    async def trash(request: Request) -> Response:
        ctx, p, away = await signed(request)
        if p is None:
            return away or front.to_login(ctx)
        items: list[dict[str, Any]] = await run_in_threadpool(svc.trash_list, p)
        return front.render(
            ctx,
            "trash.html",
            items=items,
            when=_when,
            days=svc.retention.days,
            folder_url=folder_url,
        )

    actions = {
        "rename": do_rename,
        "move": do_move,
        "copy": do_copy,
        "delete": do_delete,
        "mkdir": do_mkdir,
        "restore-version": do_version,
        "trash-restore": do_trash_restore,
        "trash-purge": do_trash_purge,
        "trash-empty": do_trash_empty,
    }
    return [
        Route("/files", files_root, methods=["GET"]),
        Route("/files/{path:path}", files, methods=["GET"]),
        Route("/item/{path:path}", item, methods=["GET"]),
        Route("/trash", trash, methods=["GET"]),
        Route("/files-do/upload", upload, methods=["POST"]),
        *(
            Route(f"/files-do/{name}", action(work), methods=["POST"])
            for name, work in actions.items()
        ),
    ]
