"""The dashboard's throughput chart as inline SVG, drawn on the server.

A few polylines need no charting library and no script: the page stays a
plain document that htmx swaps in whole, and nothing is fetched at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from jobs.services.overview import Throughput

WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 24
# Colour-blind-safe (Okabe-Ito), dark enough on white.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")


@dataclass(frozen=True)
class Line:
    model: str
    color: str
    points: str
    total: int
    peak: float


@dataclass(frozen=True)
class Tick:
    position: float
    label: str
    iso: str = ""  # for the page's script, which shows the time in the viewer's zone


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    bottom: float
    top: int
    right: float
    lines: list[Line]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    hours: int
    empty: bool


def _nice_ceiling(value: float) -> float:
    """The next 1, 2 or 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 1.0
    scale = 10 ** len(str(int(value))) / 10 if value >= 1 else 1.0
    for step in (1, 2, 5, 10):
        if step * scale >= value:
            return step * scale
    return 10 * scale


def throughput_chart(data: Throughput) -> Chart:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max((max(values) for values in data.series.values() if values), default=0.0)
    top_value = _nice_ceiling(peak)
    step_x = plot_w / max(data.minutes - 1, 1)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top_value)

    lines = []
    for index, (model, values) in enumerate(data.series.items()):
        points = " ".join(f"{LEFT + i * step_x:.1f},{y(v):.1f}" for i, v in enumerate(values))
        lines.append(Line(model, PALETTE[index % len(PALETTE)], points, round(sum(values)), max(values)))
    every = 15 if data.hours <= 1 else 60 if data.hours <= 6 else 180
    x_ticks = []
    for minute in range(data.minutes):
        moment = data.start + timedelta(minutes=minute)
        if (moment.hour * 60 + moment.minute) % every == 0:
            iso = moment.isoformat().replace("+00:00", "Z")
            x_ticks.append(Tick(LEFT + minute * step_x, moment.strftime("%H:%M"), iso))
    y_ticks = [Tick(y(top_value * f), f"{top_value * f:g}") for f in (0, 0.5, 1)]
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        bottom=TOP + plot_h,
        top=TOP,
        right=WIDTH - RIGHT,
        lines=lines,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        hours=data.hours,
        empty=not lines,
    )
