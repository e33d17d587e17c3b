"""Bar charts as server-side SVG: usage over time (storage, transfers) for people who
would rather look at a chart than read numbers.

Why SVG written here rather than a chart library: the page needs no script (the CSP
forbids inline script, and the chart must work without any), the markup is small (one
``<rect>`` per bar), and accessibility is under our control: the ``<svg>`` is an image
with a title and a one-sentence summary, every bar has a ``<title>`` (its date and
value, read by screen readers and shown on hover), and the caller puts the same figures
in a ``<table>`` beside it. Colours are CSS classes in ``app.css`` (≥ 3:1 against white
for graphics, WCAG 1.4.11); the series are also told apart by the legend's words.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import count

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 78, 8, 12, 30
_UNITS = (("B", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40))
_ids = count(1)


@dataclass(frozen=True)
class Series:
    label: str  # shown in the legend and in each bar's title
    css: str  # class giving its colour (``s1``, ``s2``)
    values: Sequence[int]


def axis(max_value: int) -> tuple[str, int, float, float]:
    """(unit name, unit size, step, top) so that ticks 0, step, … top (in the unit) are
    round numbers and top ≥ the largest value."""
    name, size = _UNITS[0]
    for name_, size_ in _UNITS:
        if max_value >= size_:
            name, size = name_, size_
    biggest = max(max_value / size, 1e-9)
    raw = biggest / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if size == 1:
        step = max(1.0, round(step))  # no fractions of a byte
    top = math.ceil(biggest / step - 1e-9) * step
    return name, size, step, max(top, step)


def _num(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


def bar_chart(
    title: str,
    summary: str,
    days: Sequence[date],
    series: Sequence[Series],
    fmt: Callable[[int], str],
    day_label: Callable[[date], str] = lambda d: d.strftime("%d/%m"),
) -> Markup:
    """Grouped bars, one group per day. ``fmt`` writes a value for people (bar titles)."""
    uid = f"chart{next(_ids)}"
    peak = max((v for s in series for v in s.values), default=0)
    unit, size, step, top = axis(peak)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    group = plot_w / max(1, len(days))
    bar = max(1.0, group * 0.8 / max(1, len(series)))
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{uid}-t {uid}-d" preserveAspectRatio="xMidYMid meet">',
        f'<title id="{uid}-t">{escape(title)}</title>',
        f'<desc id="{uid}-d">{escape(summary)}</desc>',
    ]
    ticks = round(top / step)
    for i in range(ticks + 1):
        y = TOP + plot_h - plot_h * i / ticks
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_num(y)}" y2="{_num(y)}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{_num(y + 4)}" text-anchor="end">'
            f"{escape(_num(step * i))} {unit}</text>"
        )
    label_every = max(1, math.ceil(len(days) / 8))
    for i, d in enumerate(days):
        x0 = LEFT + group * i + group * 0.1
        for j, s in enumerate(series):
            v = s.values[i]
            h = plot_h * (v / size) / top if top else 0
            if v and h < 1:
                h = 1.0  # a non-zero day stays visible
            x = x0 + bar * j
            parts.append(
                f'<rect class="{s.css}" x="{_num(x)}" y="{_num(TOP + plot_h - h)}" '
                f'width="{_num(bar)}" height="{_num(h)}">'
                f"<title>{escape(day_label(d))} — {escape(s.label)} : {escape(fmt(v))}</title>"
                "</rect>"
            )
        if (len(days) - 1 - i) % label_every == 0:
            parts.append(
                f'<text class="tick" x="{_num(LEFT + group * (i + 0.5))}" y="{HEIGHT - 10}" '
                f'text-anchor="middle">{escape(day_label(d))}</text>'
            )
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" '
        f'y2="{TOP + plot_h}"/></svg>'
    )
    legend = "".join(
        f'<li><span class="key {s.css}" aria-hidden="true"></span>{escape(s.label)}</li>'
        for s in series
    )
    # Safe: every text that comes from outside (titles, labels, values) went through
    # escape() above; the rest is numbers and our own markup.
    return Markup("".join(parts) + f'<ul class="legend">{legend}</ul>')  # noqa: S704
