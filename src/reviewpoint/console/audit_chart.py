"""The audit page's chart: exports per UTC day, stacked by outcome, over rows sent per day.

The numbers come from the audit service's one GROUP BY (`daily_totals`); this
module only lays them out, so the template draws an inline SVG with no script
and no inline style (the console's Content-Security-Policy allows neither).
Colours are classes of console.css, one per outcome.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from reviewpoint.audit.repository import DayTotal
from reviewpoint.audit.schemas import OUTCOMES

# The SVG's own coordinates (viewBox); CSS scales it to the page's width.
WIDTH = 720
LEFT = 56  # room for the y axes' labels
RIGHT = 8
EXPORTS_TOP = 8
EXPORTS_HEIGHT = 150
ROWS_TOP = EXPORTS_TOP + EXPORTS_HEIGHT + 30
ROWS_HEIGHT = 60
AXIS_Y = ROWS_TOP + ROWS_HEIGHT
HEIGHT = AXIS_Y + 22
# A quarter: past it the bars get thinner than the labels can tell apart, and the
# page (a bar and a row of numbers per day) heavier than the table it sits over.
MAX_DAYS = 92
# Day labels under the axis: about this many, so they never overlap.
DAY_LABELS = 8


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css_class: str
    title: str


@dataclass(frozen=True)
class Tick:
    x: float
    text: str


@dataclass(frozen=True)
class DayRow:
    """One day that had exports, for the chart's table of numbers."""

    day: date
    by_outcome: dict[str, int]
    exports: int
    rows: int


@dataclass(frozen=True)
class Chart:
    first_day: date
    last_day: date
    outcomes: tuple[str, ...]  # those that occur, in the audit's order
    totals: dict[str, int]  # attempts per outcome
    exports: int
    rows: int
    days: list[DayRow]
    export_bars: list[Bar]
    row_bars: list[Bar]
    ticks: list[Tick]
    exports_max: int
    rows_max: int
    summary: str

    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT
    exports_top: int = EXPORTS_TOP
    exports_bottom: int = EXPORTS_TOP + EXPORTS_HEIGHT
    rows_top: int = ROWS_TOP
    rows_bottom: int = AXIS_Y


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (at least 1),
    so an axis' top label is a round number."""
    if value <= 1:
        return 1
    power: int = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def build(totals: Sequence[DayTotal], *, first_day: date, last_day: date) -> Chart:
    """Lay out `totals` over every day from `first_day` to `last_day`, both included."""
    span = (last_day - first_day).days + 1
    by_day: dict[date, dict[str, DayTotal]] = {}
    for total in totals:
        by_day.setdefault(total.day, {})[total.outcome] = total
    present = {total.outcome for total in totals}
    outcomes: tuple[str, ...] = tuple(outcome for outcome in OUTCOMES if outcome in present)
    # An outcome this code does not know yet still counts, after the known ones.
    outcomes += tuple(sorted(present - set(outcomes)))

    days = [
        DayRow(
            day=day,
            by_outcome={
                outcome: found[outcome].exports for outcome in outcomes if outcome in found
            },
            exports=sum(item.exports for item in found.values()),
            rows=sum(item.rows for item in found.values()),
        )
        for day, found in sorted(by_day.items())
    ]
    exports_max = nice_ceiling(max((row.exports for row in days), default=0))
    rows_max = nice_ceiling(max((row.rows for row in days), default=0))

    step = (WIDTH - LEFT - RIGHT) / span
    bar_width = max(step * 0.8, 0.5)
    export_bars: list[Bar] = []
    row_bars: list[Bar] = []
    for row in days:
        x = LEFT + (row.day - first_day).days * step + (step - bar_width) / 2
        bottom = float(EXPORTS_TOP + EXPORTS_HEIGHT)
        for outcome in outcomes:
            count = row.by_outcome.get(outcome, 0)
            if not count:
                continue
            height = EXPORTS_HEIGHT * count / exports_max
            bottom -= height
            export_bars.append(
                Bar(x, bottom, bar_width, height, f"o-{outcome}", f"{row.day}: {count} {outcome}")
            )
        if row.rows:
            height = ROWS_HEIGHT * row.rows / rows_max
            row_bars.append(
                Bar(
                    x,
                    AXIS_Y - height,
                    bar_width,
                    height,
                    "rows-bar",
                    f"{row.day}: {row.rows:,} rows exported",
                )
            )

    every = max(1, math.ceil(span / DAY_LABELS))
    ticks = [
        Tick(LEFT + (index + 0.5) * step, (first_day + timedelta(days=index)).strftime("%b %d"))
        for index in range(0, span, every)
    ]
    per_outcome = {
        outcome: sum(row.by_outcome.get(outcome, 0) for row in days) for outcome in outcomes
    }
    exports = sum(per_outcome.values())
    rows = sum(row.rows for row in days)
    return Chart(
        first_day=first_day,
        last_day=last_day,
        outcomes=outcomes,
        totals=per_outcome,
        exports=exports,
        rows=rows,
        days=days,
        export_bars=export_bars,
        row_bars=row_bars,
        ticks=ticks,
        exports_max=exports_max,
        rows_max=rows_max,
        summary=_summary(first_day, last_day, per_outcome, exports, rows, days),
    )


def _summary(
    first_day: date,
    last_day: date,
    per_outcome: dict[str, int],
    exports: int,
    rows: int,
    days: list[DayRow],
) -> str:
    """The chart in one sentence, for screen readers (the SVG's description)."""
    period = f"from {first_day} to {last_day} (UTC)"
    if not exports:
        return f"No export attempts {period}."
    split = ", ".join(f"{count:,} {outcome}" for outcome, count in per_outcome.items())
    busiest = max(days, key=lambda row: (row.exports, row.day))
    return (
        f"{exports:,} export {'attempt' if exports == 1 else 'attempts'} {period}: {split}; "
        f"{rows:,} rows exported. Busiest day: {busiest.day}, with {busiest.exports:,}."
    )
