"""What the façade returns: plain data, rendered by each adapter in its own format."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from allset.core.paths import RemotePath
    from allset.db.models import Node
    from allset.db.prepared import Record


@dataclass(slots=True)  # not frozen: a listing builds thousands, and frozen init is slow
class Entry:
    id: str
    name: str
    path: str
    kind: str  # "file" | "dir"
    size: int
    sha256: str
    mtime: datetime
    created_at: datetime
    version: str

    @property
    def etag(self) -> str:
        """Strong ETag of a file = its version id; folders change with their own mtime."""
        if self.kind == "file":
            return f'"{self.version}"'
        return f'W/"{self.id}-{int(self.mtime.timestamp() * 1000)}"'

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "path": self.path,
            "type": "folder" if self.kind == "dir" else "file",
            "mtime": self.mtime.isoformat(),
            "created_at": self.created_at.isoformat(),
            "etag": self.etag,
        }
        if self.kind == "file":
            data.update(size=self.size, sha256=self.sha256, version=self.version)
        return data


@dataclass(frozen=True, slots=True)
class ChunkRef:
    digest: str
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class Readable:
    """A file version ready to be read: its metadata and its manifest."""

    entry: Entry
    tenant_id: str
    chunks: tuple[ChunkRef, ...]


def entry_of(node: Node | Record, path: RemotePath | str) -> Entry:
    """An Entry from a node row (ORM or Core), at ``path``."""
    return Entry(
        id=node.id,
        name=node.name,
        path=path if isinstance(path, str) else str(path),
        kind=node.kind,
        size=node.size if node.kind == "file" else 0,
        sha256=node.sha256,
        mtime=node.mtime,
        created_at=node.created_at,
        version=node.version_id or "",
    )
