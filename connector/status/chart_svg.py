"""Charts drawn on the server as SVG, put inline in the page: no JavaScript library, nothing to
load from elsewhere, and nothing the Content-Security-Policy refuses (colours come from status.css
by class; sizes are SVG attributes, which style-src does not govern).

Each chart has a title, a y axis with its unit and round ticks, a time axis in UTC, a legend, and
one hover target per interval whose <title> the browser shows as a tooltip and screen readers read
(https://developer.mozilla.org/en-US/docs/Web/SVG/Element/title).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

from markupsafe import Markup



@dataclass(frozen=True)
class Layout:
    """One drawing of a chart: wide for a desk, narrow for a phone (status.css shows one of them, by the
    window's width), so the text stays readable without scrolling sideways."""

    css: str
    width: int
    height: int
    ticks: int  # about how many time labels
    legend_rows: int  # the legend's items per row, right-aligned
    left: int = 64
    right: int = 12
    bottom: int = 46

    @property
    def top(self) -> int:
        return 14 + 14 * self.legend_rows

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> int:
        return self.height - self.top - self.bottom


WIDE = Layout("wide", 720, 250, 6, 1)
NARROW = Layout("narrow", 380, 300, 3, 3, left=52)


@dataclass
class Series:
    name: str
    css: str  # a class of status.css: its colour
    values: Sequence[float | None]  # one per interval; None: nothing measured then
    dashed: bool = False


def nice_ceiling(value: float) -> float:
    """The round number (1, 2 or 5 times a power of ten) at or above value: the top of the y axis."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def plain_number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:,.1f}"


def duration(seconds: float) -> str:
    """Seconds in the unit a person reads: 45 s, 12 min, 3.5 h, 2.0 days."""
    if seconds < 10:
        return f"{seconds:.1f} s" if seconds != int(seconds) else f"{seconds:.0f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _time_label(moment: datetime, width: timedelta) -> str:
    return moment.strftime("%a %d %H:%M" if width >= timedelta(hours=1) else "%H:%M")


def _x_ticks(starts: Sequence[datetime], ticks: int) -> list[int]:
    """Indexes of the intervals that get a time label: about `ticks` of them, evenly spaced."""
    every = max(1, round(len(starts) / ticks))
    return [i for i in range(0, len(starts), every)]


def chart(title: str, y_label: str, starts: Sequence[datetime], width: timedelta, series: Sequence[Series], *,
          kind: str = "bars", value_text: Callable[[float], str] = plain_number, test_id: str = "") -> Markup:
    """A bar chart (series stacked, one bar per interval) or a line chart (one line per series), drawn
    wide and narrow."""
    return Markup("").join(_draw(layout, title, y_label, starts, width, series, kind, value_text,
                                 test_id + ("" if layout is WIDE else "-narrow") if test_id else "")
                           for layout in (WIDE, NARROW))


def _draw(layout: Layout, title: str, y_label: str, starts: Sequence[datetime], width: timedelta,
          series: Sequence[Series], kind: str, value_text: Callable[[float], str], test_id: str) -> Markup:
    left, top, plot_w, plot_h = layout.left, layout.top, layout.plot_w, layout.plot_h
    n = len(starts)
    step = plot_w / max(n, 1)
    if kind == "bars":
        peak = max([sum(s.values[i] or 0 for s in series) for i in range(n)] or [0])
    else:
        peak = max([v for s in series for v in s.values if v is not None] or [0])
    ceiling = nice_ceiling(peak)

    def y(value: float) -> float:
        return top + plot_h - plot_h * value / ceiling

    out: list[str] = [
        f'<svg class="plot {layout.css}" viewBox="0 0 {layout.width} {layout.height}" role="img" aria-label="{escape(title)}"'
        f'{f" data-test={chr(34)}{escape(test_id)}{chr(34)}" if test_id else ""}>',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="{left}" y="16">{escape(title)}</text>',
    ]
    # The y axis: 0, half and the top, with grid lines, and its unit written along it.
    for fraction in (0, 0.5, 1):
        value = ceiling * fraction
        out.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}"/>')
        out.append(f'<text class="tick" data-axis="y" x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">'
                   f"{escape(value_text(value))}</text>")
    out.append(f'<text class="axis-label" data-axis="y" transform="translate(14 {top + plot_h / 2:.0f}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_label)}</text>')
    # The series.
    if kind == "bars":
        for i in range(n):
            base = 0.0
            for s in series:
                value = s.values[i] or 0
                if value:
                    out.append(f'<rect class="{s.css}" x="{left + i * step + step * 0.1:.1f}" y="{y(base + value):.1f}" '
                               f'width="{step * 0.8:.1f}" height="{y(base) - y(base + value):.1f}"/>')
                base += value
    else:
        for s in series:
            points = [(left + (i + 0.5) * step, y(v)) for i, v in enumerate(s.values) if v is not None]
            if points:
                dash = ' stroke-dasharray="5 4"' if s.dashed else ""
                out.append(f'<polyline class="line {s.css}"{dash} points="'
                           + " ".join(f"{px:.1f},{py:.1f}" for px, py in points) + '"/>')
                if len(points) == 1:
                    out.append(f'<circle class="{s.css}" cx="{points[0][0]:.1f}" cy="{points[0][1]:.1f}" r="3"/>')
    # The time axis.
    out.append(f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    out.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}"/>')
    for i in _x_ticks(starts, layout.ticks):
        x = left + i * step
        out.append(f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}"/>')
        out.append(f'<text class="tick" data-axis="x" x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="start">'
                   f"{escape(_time_label(starts[i], width))}</text>")
    out.append(f'<text class="axis-label" data-axis="x" x="{left + plot_w / 2:.0f}" y="{layout.height - 6}" '
               f'text-anchor="middle">time (UTC), one {escape(_width_words(width))} per {"bar" if kind == "bars" else "point"}</text>')
    # The legend, right-aligned under the title, `legend_rows` rows at most (the narrow drawing's are
    # shared out among them).
    per_row = max(1, -(-len(series) // layout.legend_rows)) if layout.legend_rows > 1 else len(series)
    for row, first in enumerate(range(0, len(series), per_row)):
        x = left + plot_w
        y = 7 + 14 * (row + (1 if layout.legend_rows > 1 else 0))
        for s in reversed(series[first:first + per_row]):
            x -= 14 + 7 * len(s.name)
            out.append(f'<rect class="{s.css}" x="{x:.0f}" y="{y}" width="10" height="10"/>'
                       f'<text class="legend" x="{x + 13:.0f}" y="{y + 9}">{escape(s.name)}</text>')
    # One hover target per interval: its <title> holds every series' value then.
    for i in range(n):
        end = starts[i] + width
        values = "; ".join(f"{s.name} {value_text(s.values[i]) if s.values[i] is not None else '–'}" for s in series)
        out.append(f'<rect class="hover" data-start="{starts[i].isoformat()}" x="{left + i * step:.1f}" y="{top}" '
                   f'width="{step:.1f}" height="{plot_h}"><title>{escape(_time_label(starts[i], width))}'
                   f"–{escape(end.strftime('%H:%M'))} UTC: {escape(values)}</title></rect>")
    out.append("</svg>")
    return Markup("".join(out))


def _width_words(width: timedelta) -> str:
    minutes = int(width.total_seconds() // 60)
    if minutes < 60:
        return "minute" if minutes == 1 else f"{minutes} minutes"
    return "hour" if minutes == 60 else f"{minutes // 60} hours"
