"""Client admin area (owners and admins): users, folder access, public links,
contact details, usage charts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from allset.server.web.app import WebFront


def routes(front: WebFront) -> list[BaseRoute]:
    return []
