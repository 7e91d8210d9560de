"""Printing the summary table shared by the benchmarks."""

from __future__ import annotations


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Rows of strings, the first a header, as aligned columns with a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))
