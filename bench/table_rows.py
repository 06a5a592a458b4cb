"""Markdown table rows kept across bench runs that each measure only some of the rows.

A full results table takes hours to measure on CPU, so a run names
the rows it measures and keeps the others from the table it replaces. Rows are identified by
their leading cells (e.g. targets, method, balance).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

Key = tuple[str, ...]


def cells(row: str) -> list[str]:
    """`| a | b |` -> ["a", "b"]."""
    return [c.strip() for c in row.strip().strip("|").split("|")]


def row_key(row: str, key_cells: int) -> Key:
    """A row's identity: its first `key_cells` cells."""
    return tuple(cells(row)[:key_cells])


def table_rows(lines: Iterable[str]) -> list[str]:
    """The body rows of the first Markdown table in `lines` (header and separator left out)."""
    rows, seen_separator = [], False
    for line in lines:
        if not line.startswith("|"):
            if seen_separator:
                break
            continue
        if re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip()):
            seen_separator = True
        elif seen_separator:
            rows.append(line)
    return rows


def merge_rows(previous: Iterable[str], measured: Iterable[str], key_cells: int,
               order: Callable[[Key], tuple]) -> tuple[list[str], list[str]]:
    """All rows of `measured`, plus the rows of `previous` whose key none of them has, sorted by
    `order(key)`. Returns (rows, kept): kept are the rows taken from `previous`."""
    merged = {row_key(r, key_cells): r for r in previous}
    kept = dict(merged)
    for row in measured:
        merged[row_key(row, key_cells)] = row
        kept.pop(row_key(row, key_cells), None)
    rows = sorted(merged.values(), key=lambda r: order(row_key(r, key_cells)))
    return rows, [r for r in rows if row_key(r, key_cells) in kept]


def commands(lines: Iterable[str], program: str) -> list[str]:
    """The distinct back-quoted `program ...` commands quoted in `lines`, in order."""
    pattern = re.compile(r"`(" + re.escape(program) + r"[^`]*)`")
    found = [m.group(1) for line in lines for m in pattern.finditer(line)]
    return list(dict.fromkeys(found))
