"""RFC 9457 problem+json: the one error format of /api/v1 (and the fallback everywhere)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from allset.core.errors import AllsetError, RangeNotSatisfiable, TooManyAttempts

PROBLEM_BASE = "https://allset.example/problems/"


def problem_response(
    status: int, title: str, detail: str, slug: str = "about:blank", **extra: Any
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug if slug != "about:blank" else slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="allset", charset="UTF-8"'
    return Response(
        json.dumps(body, ensure_ascii=False),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def problem_body(exc: AllsetError) -> dict[str, Any]:
    """The problem+json members of an error, for answers that carry several (a batch
    commit's per-item results)."""
    body: dict[str, Any] = {
        "status": exc.status,
        "type": PROBLEM_BASE + exc.slug,
        "title": exc.title,
        "detail": exc.detail,
    }
    body.update({k: v for k, v in exc.extra.items() if v is not None and k not in body})
    return body


def from_error(exc: AllsetError) -> Response:
    resp = problem_response(exc.status, exc.title, exc.detail, exc.slug, **exc.extra)
    if isinstance(exc, TooManyAttempts):
        resp.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, RangeNotSatisfiable) and isinstance(exc.extra.get("size"), int):
        # RFC 9110 §15.5.17: a 416 says how long the representation is.
        resp.headers["Content-Range"] = f"bytes */{exc.extra['size']}"
    return resp
