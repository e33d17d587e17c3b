"""Account area: sessions and app passwords, password change, lost password."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from allset.server.web.app import WebFront


def routes(front: WebFront) -> list[BaseRoute]:
    return []
