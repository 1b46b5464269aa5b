"""Text tables exactly as patronictl prints them with prettytable: FRAME borders (ALL when a cell spans several
lines), one space of padding, per-column alignment applied to the header too, and a title written into the top
border. Pure."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any


def text_width(text: str) -> int:
    """Terminal columns: East Asian wide characters take two, combining marks none."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def _justify(text: str, width: int, align: str) -> str:
    excess = width - text_width(text)
    if align == "r":
        return " " * excess + text
    if align == "c":
        left = excess // 2
        return " " * left + text + " " * (excess - left)
    return text + " " * excess


def _cell_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _hrule(widths: Sequence[int]) -> str:
    return "+" + "+".join("-" * (width + 2) for width in widths) + "+"


def _with_title(line: str, title: str) -> str:
    """patronictl's header: the title replaces the start of the top border, cut to fit inside it."""
    title = title[: len(line) - 2]
    return line[0] + title + line[1 + len(title) :]


def _row_lines(cells: Sequence[str], widths: Sequence[int], aligns: Sequence[str]) -> list[str]:
    split = [cell.split("\n") for cell in cells]
    height = max((len(lines) for lines in split), default=1)
    out = []
    for y in range(height):
        parts = [
            " " + _justify(lines[y] if y < len(lines) else "", width, align) + " "
            for lines, width, align in zip(split, widths, aligns, strict=True)
        ]
        out.append("|" + "|".join(parts) + "|")
    return out


def render_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], align: Mapping[str, str] | None = None, title: str = ""
) -> str:
    """The table without a trailing newline, as str(PrettyTable) gives it."""
    aligns = [(align or {}).get(column, "l") for column in columns]
    text_rows = [[_cell_text(cell) for cell in row] for row in rows]
    multiline = any(isinstance(cell, str) and "\n" in cell for row in rows for cell in row)
    widths = [text_width(column) for column in columns]
    for row in text_rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], *(text_width(line) for line in cell.split("\n")))
    rule = _hrule(widths)
    lines = [_with_title(rule, title) if title else rule]
    lines.extend(_row_lines(list(columns), widths, aligns))
    lines.append(rule)
    for index, row in enumerate(text_rows):
        lines.extend(_row_lines(row, widths, aligns))
        if multiline and index < len(text_rows) - 1:
            lines.append(rule)
    lines.append(rule)
    return "\n".join(lines)
