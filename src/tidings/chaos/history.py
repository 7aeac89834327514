"""A history of operations: what was published (with its outcome) and what was delivered.

Each process of a scenario appends its own records to a JSON-lines file
(:class:`HistoryWriter`, one line per record, flushed per line so a SIGKILL loses at most
the line being written); :func:`read_history` merges the files. Times are
``time.time()`` seconds: every process of a scenario runs on one machine, one clock.

Records:

- :class:`Published`: ``id``, ``key``, ``seq`` (the publisher's order within the key),
  ``outcome`` (``ok``: acknowledged; ``failed``: the publisher was told it was not
  stored; ``unknown``: the publisher was told it may be), ``time``, ``process``;
- :class:`Delivered`: ``id``, ``key``, ``seq``, ``handler`` (the handler or consumer group
  that must see every event), ``process``, ``time``;
- :class:`FaultWindow`: ``name``, ``start``, ``end`` (when a fault was applied and healed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Literal

__all__ = (
    "Delivered",
    "FaultWindow",
    "History",
    "HistoryWriter",
    "Outcome",
    "Published",
    "read_history",
)

Outcome = Literal["ok", "failed", "unknown"]


@dataclass(frozen=True, slots=True)
class Published:
    id: str
    key: str
    seq: int
    outcome: Outcome
    time: float
    process: str = ""


@dataclass(frozen=True, slots=True)
class Delivered:
    id: str
    key: str
    seq: int
    handler: str
    process: str
    time: float


@dataclass(frozen=True, slots=True)
class FaultWindow:
    name: str
    start: float
    end: float


@dataclass
class History:
    """Everything recorded in one run."""

    published: list[Published] = field(default_factory=list)
    delivered: list[Delivered] = field(default_factory=list)
    faults: list[FaultWindow] = field(default_factory=list)


class HistoryWriter:
    """Appends records to one JSON-lines file, one flushed line per record."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._file: IO[str] = self.path.open("a", encoding="utf-8")

    def published(self, record: Published) -> None:
        self._write("published", record)

    def delivered(self, record: Delivered) -> None:
        self._write("delivered", record)

    def fault(self, record: FaultWindow) -> None:
        self._write("fault", record)

    def _write(self, op: str, record: Published | Delivered | FaultWindow) -> None:
        self._file.write(json.dumps({"op": op, **asdict(record)}, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_history(paths: Iterable[Path | str]) -> History:
    """Merge the records of ``paths`` into one :class:`History` (a torn last line, as a
    SIGKILL may leave, is skipped)."""
    history = History()
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            op = row.pop("op", None)
            if op == "published":
                history.published.append(Published(**row))
            elif op == "delivered":
                history.delivered.append(Delivered(**row))
            elif op == "fault":
                history.faults.append(FaultWindow(**row))
    return history
