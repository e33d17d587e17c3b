"""WsgiDAV's dead-property manager interface, stored with the node in the database.

WsgiDAV keys properties by URL; we resolve the URL to the node each time and keep them
on the node (``FileService.properties``), so that a move keeps them without rewriting
keys, a copy copies them, the trash keeps them and a purge deletes them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from allset.core.errors import NotFound
from allset.files.service import FileService
from allset.server.dav.provider import as_dav_errors, principal_of, to_remote


def _path(norm_url: str) -> str:
    return unquote(norm_url).rstrip("/") or "/"


class DeadProperties:
    def __init__(self, files: FileService) -> None:
        self.files = files

    def _all(self, norm_url: str, environ: dict[str, Any] | None) -> dict[str, bytes]:
        if environ is None:
            return {}
        try:
            return self.files.properties(principal_of(environ), to_remote(_path(norm_url)))
        except NotFound:
            return {}

    def get_properties(self, norm_url: str, environ: dict[str, Any] | None = None) -> list[str]:
        return list(self._all(norm_url, environ))

    def get_property(
        self, norm_url: str, name: str, environ: dict[str, Any] | None = None
    ) -> bytes | None:
        return self._all(norm_url, environ).get(name)

    def _set(self, norm_url: str, name: str, value: bytes | None, environ: Any) -> None:
        with as_dav_errors():
            self.files.set_properties(
                principal_of(environ), to_remote(_path(norm_url)), {name: value}
            )

    def write_property(
        self,
        norm_url: str,
        name: str,
        property_value: bytes | str,
        dry_run: bool = False,
        environ: dict[str, Any] | None = None,
    ) -> None:
        if dry_run:
            return
        value = property_value.encode() if isinstance(property_value, str) else property_value
        self._set(norm_url, name, value, environ)

    def remove_property(
        self,
        norm_url: str,
        name: str,
        dry_run: bool = False,
        environ: dict[str, Any] | None = None,
    ) -> None:
        if not dry_run:
            self._set(norm_url, name, None, environ)

    # Deletes go to the trash with their properties; moves keep the node; copies copy
    # the rows (FileService.copy). Nothing to do on the URL-keyed hooks.
    def remove_properties(self, norm_url: str, environ: dict[str, Any] | None = None) -> None:
        return None

    def copy_properties(
        self, src_url: str, dest_url: str, environ: dict[str, Any] | None = None
    ) -> None:
        return None

    def move_properties(
        self,
        src_url: str,
        dest_url: str,
        with_children: bool,
        environ: dict[str, Any] | None = None,
    ) -> None:
        return None
