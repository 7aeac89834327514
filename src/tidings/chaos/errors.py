"""The errors of the chaos toolkit.

::

    TidingsError
     └── ChaosError                  the toolkit could not do what it was asked
          ├── ScenarioError (also ValueError)  a scenario file is malformed (file, line, what)
          └── FaultError                       a fault cannot be applied (port in use, ...)
               └── FaultTimeoutError (also TimeoutError)  a signalled process did not
                                                          stop, continue or end in time

Each is raised before anything was started, or after everything started was stopped.
"""

from __future__ import annotations

from tidings.exceptions import TidingsError

__all__ = ("ChaosError", "FaultError", "FaultTimeoutError", "ScenarioError")


class ChaosError(TidingsError):
    """The chaos toolkit could not do what it was asked."""


class ScenarioError(ChaosError, ValueError):
    """A scenario file is malformed: the message lists each problem with file and line.

    Attributes:
        problems: ``(file, line, message)`` for each problem found.
    """

    def __init__(self, problems: list[tuple[str, int, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {file}:{line}: {message}" for file, line, message in problems)
        super().__init__(
            f"the scenario has {len(problems)} problem(s); fix them and run again:\n{lines}"
        )


class FaultError(ChaosError):
    """A fault cannot be applied (a port in use, no permission to signal a process, an
    unknown target); raised before the run starts, with nothing left running."""


class FaultTimeoutError(FaultError, TimeoutError):
    """A process fault was signalled but the kernel did not report it taken in time: the
    process was not stopped (SIGSTOP), continued (SIGCONT) or ended (SIGKILL) within the
    fault's ``timeout``. A :class:`~tidings.chaos.Stop` that raises it has been undone."""
