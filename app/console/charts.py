"""Small SVG charts drawn on the server: the geometry here, the markup in
`templates/_chart.html`. No script, no library: a bar or a point per hour."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 560, 170
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 10, 22
Format = Callable[[float], str]


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    title: str


@dataclass(frozen=True)
class Line:
    name: str  # also its CSS class
    segments: list[str]  # SVG polyline points; a gap where a slot has no value
    dots: list[Dot]


@dataclass(frozen=True)
class Tick:
    at: float
    text: str


@dataclass(frozen=True)
class Chart:
    summary: str  # what a screen reader says, and the figure's caption
    bars: list[Bar]
    lines: list[Line]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    bottom: int = HEIGHT - BOTTOM


@dataclass(frozen=True)
class Frame:
    """The plot area and the value scale of one chart with `slots` slots along x."""

    slots: int
    top_value: float

    @property
    def slot_width(self) -> float:
        return (WIDTH - LEFT - RIGHT) / self.slots

    def x(self, slot: int) -> float:
        return LEFT + slot * self.slot_width

    def y(self, value: float) -> float:
        plot = HEIGHT - TOP - BOTTOM
        return HEIGHT - BOTTOM - plot * (value / self.top_value)


def bar_chart(
    values: Sequence[float], labels: Sequence[str], *, fmt: Format, summary: str
) -> Chart:
    frame = Frame(len(values), nice_ceiling(max(values, default=0)))
    gap = frame.slot_width * 0.2
    bars = [
        Bar(
            x=round(frame.x(i) + gap / 2, 1),
            y=round(frame.y(v), 1),
            width=round(frame.slot_width - gap, 1),
            height=round(frame.y(0) - frame.y(v), 1),
            title=f"{labels[i]}: {fmt(v)}",
        )
        for i, v in enumerate(values)
        if v > 0
    ]
    return Chart(summary, bars, [], _y_ticks(frame, fmt), _x_ticks(frame, labels))


def line_chart(
    series: dict[str, Sequence[float | None]],
    labels: Sequence[str],
    *,
    fmt: Format,
    summary: str,
) -> Chart:
    present = [v for values in series.values() for v in values if v is not None]
    frame = Frame(len(labels), nice_ceiling(max(present, default=0)))
    lines = [_line(name, values, labels, frame, fmt) for name, values in series.items()]
    return Chart(summary, [], lines, _y_ticks(frame, fmt), _x_ticks(frame, labels))


def _line(
    name: str, values: Sequence[float | None], labels: Sequence[str], frame: Frame, fmt: Format
) -> Line:
    segments: list[list[str]] = [[]]
    dots = []
    for i, value in enumerate(values):
        if value is None:
            segments.append([])
            continue
        x, y = round(frame.x(i) + frame.slot_width / 2, 1), round(frame.y(value), 1)
        segments[-1].append(f"{x},{y}")
        dots.append(Dot(x, y, f"{labels[i]}: {name} {fmt(value)}"))
    return Line(name, [" ".join(points) for points in segments if len(points) > 1], dots)


def _y_ticks(frame: Frame, fmt: Format) -> list[Tick]:
    values = (0.0, frame.top_value / 2, frame.top_value)
    return [Tick(round(frame.y(v), 1), fmt(v)) for v in values]


def _x_ticks(frame: Frame, labels: Sequence[str], every: int = 6) -> list[Tick]:
    return [Tick(round(frame.x(i), 1), labels[i]) for i in range(0, len(labels), every)]


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above `value` (1 for nothing), so the top of the
    scale is a round number."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)
