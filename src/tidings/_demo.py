"""The guided tour behind ``tidings demo`` (and ``make run``)."""

from __future__ import annotations


def run() -> int:
    """Run the tour, printing a readable log; return the process exit code."""
    print("tidings demo: coming together")
    return 0
