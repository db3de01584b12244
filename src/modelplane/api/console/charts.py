"""Charts drawn on the server as inline SVG: no chart library, no build step, and a page that is a
picture even without JavaScript. Colours come from classes in console.css."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape


@dataclass(frozen=True)
class Segment:
    value: float
    css: str
    title: str = ""


@dataclass(frozen=True)
class BarRow:
    label: str
    segments: tuple[Segment, ...]
    note: str = ""  # printed after the bar (the total, formatted)

    @property
    def total(self) -> float:
        return sum(max(s.value, 0.0) for s in self.segments)


def _f(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def bar_chart(rows: Sequence[BarRow], *, width: int = 640, label_w: int = 150, note_w: int = 110,
              row_h: int = 22, testid: str = "bar-chart") -> Markup:
    """Horizontal stacked bars, one per row, on a common scale (the largest row fills the width)."""
    if not rows:
        return Markup('<p class="empty">nothing to draw</p>')
    top = max((r.total for r in rows), default=0.0) or 1.0
    plot_w = width - label_w - note_w
    height = row_h * len(rows) + 4
    out = [f'<svg class="chart bars" data-testid="{escape(testid)}" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" xmlns="http://www.w3.org/2000/svg">']
    for i, row in enumerate(rows):
        y = 2 + i * row_h
        out.append(f'<g class="row" data-label="{escape(row.label)}">')
        out.append(f'<text class="label" x="{label_w - 6}" y="{y + row_h * 0.68:.1f}" '
                   f'text-anchor="end">{escape(row.label)}</text>')
        out.append(f'<rect class="track" x="{label_w}" y="{y + 3}" width="{plot_w}" height="{row_h - 6}"/>')
        x = float(label_w)
        for seg in row.segments:
            w = plot_w * max(seg.value, 0.0) / top
            if w <= 0:
                continue
            out.append(f'<rect class="{escape(seg.css)}" x="{_f(x)}" y="{y + 3}" width="{_f(w)}" '
                       f'height="{row_h - 6}"><title>{escape(seg.title or seg.css)}</title></rect>')
            x += w
        out.append(f'<text class="note" x="{label_w + plot_w + 6}" y="{y + row_h * 0.68:.1f}">'
                   f'{escape(row.note)}</text></g>')
    out.append("</svg>")
    return Markup("".join(out))


@dataclass(frozen=True)
class Series:
    name: str
    css: str
    points: Sequence[tuple[float, float]] = field(default_factory=tuple)  # (unix time, value)


def nice_scale(x: float, max_ticks: int = 5) -> tuple[float, float]:
    """(axis top, tick step): the step is 1, 2 or 5 x 10^n with at most ``max_ticks`` steps up to the top,
    so ticks read 0, 5, 10 ... rather than 0, 12.5, 25 ..."""
    if x <= 0:
        return 1.0, 1.0
    raw = x / max_ticks
    exp = math.floor(math.log10(raw))
    step = next(m * 10.0**exp for m in (1, 2, 5, 10) if m * 10.0**exp >= raw * (1 - 1e-9))
    return math.ceil(x / step - 1e-9) * step, step


def _hhmm(t: float) -> str:
    return time.strftime("%H:%M", time.gmtime(t))


def line_chart(series: Sequence[Series], *, since: float, until: float, width: int = 720, height: int = 220,
               y_label: str = "", fmt_x: Callable[[float], str] = _hhmm, testid: str = "line-chart") -> Markup:
    """Lines over a fixed time window [since, until] (UTC ticks), y from 0 to a readable top."""
    left, right, top_pad, bottom = 48, 12, 22, 26
    pw, ph = width - left - right, height - top_pad - bottom
    span = max(until - since, 1e-9)
    ymax, ystep = nice_scale(max((v for s in series for t, v in s.points if since <= t <= until), default=0.0))

    def sx(t: float) -> float:
        return left + pw * (min(max(t, since), until) - since) / span

    def sy(v: float) -> float:
        return top_pad + ph * (1 - max(v, 0.0) / ymax)

    out = [f'<svg class="chart lines" data-testid="{escape(testid)}" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" xmlns="http://www.w3.org/2000/svg">']
    for i in range(round(ymax / ystep) + 1):  # y grid at every tick
        v = i * ystep
        y = sy(v)
        out.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="tick" x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_f(v)}</text>')
    for i in range(5):  # x ticks
        t = since + span * i / 4
        x = sx(t)
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"  # the edge labels stay inside
        out.append(f'<text class="tick" x="{x:.1f}" y="{height - 8}" text-anchor="{anchor}">{escape(fmt_x(t))}</text>')
    if y_label:
        out.append(f'<text class="axis" x="4" y="12">{escape(y_label)}</text>')
    for s in series:
        pts = [(sx(t), sy(v)) for t, v in sorted(s.points) if since <= t <= until]
        if not pts:
            continue
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        out.append(f'<polyline class="{escape(s.css)}" data-series="{escape(s.name)}" fill="none" '
                   f'points="{coords}"><title>{escape(s.name)}</title></polyline>')
        if len(pts) == 1:  # a single sample is a dot, not an invisible line
            out.append(f'<circle class="{escape(s.css)}" cx="{pts[0][0]:.1f}" cy="{pts[0][1]:.1f}" r="3"/>')
    out.append("</svg>")
    return Markup("".join(out))
