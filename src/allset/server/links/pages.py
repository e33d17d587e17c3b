"""The small HTML pages of public links: Jinja2 with autoescape, no script at all.

Every page carries the robots meta tag (R-SHARE-3) and is served with a strict CSP that
allows only the one stylesheet below, by its hash: no inline script can ever run, even
if a file name tried to inject one (and autoescape already stops that).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from jinja2 import DictLoader, Environment, select_autoescape

from allset.core.units import format_size

ROBOTS = "noindex, nofollow, noarchive, nosnippet"

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;"
    "color:#222}h1{font-size:1.3rem;word-break:break-all}table{border-collapse:collapse;"
    "width:100%}td{padding:.3rem .5rem;border-bottom:1px solid #eee;word-break:break-all}"
    "td.n{text-align:right;white-space:nowrap}.btn{display:inline-block;padding:.5rem 1rem;"
    "background:#1a5fb4;color:#fff;text-decoration:none;border-radius:4px;border:0;"
    "font-size:1rem}code{font-size:.8rem;word-break:break-all}.err{color:#a51d2d}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
PAGE_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="robots" content="{{ robots }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title><style>{{ style }}</style></head>
<body>{% block body %}{% endblock %}</body></html>
"""

_TEMPLATES = {
    "base.html": _BASE,
    "file.html": """{% extends "base.html" %}{% block body %}
<h1>{{ name }}</h1>
<p>{{ size }}</p>
<p>SHA-256: <code>{{ sha256 }}</code></p>
<p><a class="btn" href="{{ download }}">Download</a></p>
{% endblock %}""",
    "folder.html": """{% extends "base.html" %}{% block body %}
<h1>{% for label, href in crumbs %}{% if not loop.first %} / {% endif %}
<a href="{{ href }}">{{ label }}</a>{% endfor %}</h1>
<p><a class="btn" href="{{ zip }}">Download all as zip</a></p>
<table>
{% for e in entries %}<tr>
<td><a href="{{ e.href }}">{{ e.name }}{% if e.folder %}/{% endif %}</a></td>
<td class="n">{{ e.size }}</td></tr>
{% else %}<tr><td>This folder is empty.</td></tr>{% endfor %}
</table>
{% if more %}<p><a href="{{ more }}">Next page</a></p>{% endif %}
{% endblock %}""",
    "drop.html": """{% extends "base.html" %}{% block body %}
<h1>Send files</h1>
<p>Files you send here go to {{ name }}. You cannot see what others sent.</p>
<form method="post" action="{{ action }}" enctype="multipart/form-data">
<input type="hidden" name="csrf" value="{{ csrf }}">
<p><input type="file" name="file" multiple required></p>
<p><button class="btn" type="submit">Send</button></p>
</form>
{% endblock %}""",
    "received.html": """{% extends "base.html" %}{% block body %}
<h1>Received</h1>
<ul>{% for f in received %}
<li>{{ f.name }} ({{ f.size }}, SHA-256 <code>{{ f.sha256 }}</code>)</li>{% endfor %}</ul>
<p><a href="{{ back }}">Send more</a></p>
{% endblock %}""",
    "password.html": """{% extends "base.html" %}{% block body %}
<h1>This link is protected by a password</h1>
{% if error %}<p class="err">{{ error }}</p>{% endif %}
<form method="post" action="{{ action }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
<p><label>Password <input type="password" name="password" required autofocus></label></p>
<p><button class="btn" type="submit">Open</button></p>
</form>
{% endblock %}""",
    "error.html": """{% extends "base.html" %}{% block body %}
<h1>{{ title }}</h1>
<p>{{ message }}</p>
{% endblock %}""",
}

_env = Environment(
    loader=DictLoader(_TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def render(template: str, title: str, **values: Any) -> str:
    return _env.get_template(template).render(title=title, robots=ROBOTS, style=STYLE, **values)


def human_size(n: int) -> str:
    return f"{n} bytes" if n < 1024 else f"{format_size(n)} ({n:,} bytes)"
