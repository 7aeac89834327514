"""``tidings chaos``: run fault scenarios against real processes on loopback.

``tidings chaos run SCENARIO`` (a YAML file, or the name of a shipped scenario: see
``tidings chaos list``) starts the topology, drives the workload, applies the faults, runs
the checker, prints the verdict and writes ``report.json`` and ``plot.png`` to ``--out``.

Exit codes: 0 every promise held; 1 a violation (lost, phantom, out of order, charged
twice...); 2 bad input: a malformed scenario (file, line, what) or a fault that cannot be
applied, reported before anything started; 130 interrupted (everything started was
stopped, every fault healed).
"""

from __future__ import annotations

import asyncio
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

try:
    import typer
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"tidings chaos's command line needs {exc.name}: install it with pip install 'tidings[cli]'"
    ) from exc

from tidings.chaos.errors import ChaosError

if TYPE_CHECKING:
    from tidings.chaos.scenario import Scenario

__all__ = ("chaos_app", "find_scenario", "shipped_scenarios")

chaos_app = typer.Typer(
    name="chaos",
    help="Inject partitions, stalls and crashes; check nothing acknowledged is lost.",
    no_args_is_help=True,
)


def shipped_scenarios() -> dict[str, Path]:
    """The scenarios shipped with tidings, by name."""
    folder = resources.files("tidings.chaos") / "scenarios"
    return {
        Path(str(entry)).stem: Path(str(entry))
        for entry in folder.iterdir()
        if str(entry).endswith(".yaml")
    }


def find_scenario(name_or_path: str) -> Scenario:
    """Load a scenario file, or a shipped scenario by name.

    Raises:
        ScenarioError: as :func:`~tidings.chaos.scenario.load_scenario`.
    """
    from tidings.chaos.scenario import load_scenario

    shipped = shipped_scenarios()
    if not Path(name_or_path).exists() and name_or_path in shipped:
        return load_scenario(shipped[name_or_path])
    return load_scenario(name_or_path)


@chaos_app.command("list")
def list_scenarios() -> None:
    """List the shipped scenarios."""
    for name, path in sorted(shipped_scenarios().items()):
        sys.stdout.write(f"{name}\t{path}\n")


@chaos_app.command("run")
def run(
    scenario: Annotated[str, typer.Argument(help="A scenario YAML file or a shipped name.")],
    out: Annotated[
        Path | None, typer.Option(help="Where to write the report (default: chaos-out/NAME).")
    ] = None,
    scale: Annotated[
        float, typer.Option(help="Stretch the workload and fault timeline (soak runs).")
    ] = 1.0,
    plot: Annotated[bool, typer.Option(help="Write plot.png (needs matplotlib).")] = True,
) -> None:
    """Run SCENARIO; exit 1 on a violation, 2 on bad input."""
    from tidings.chaos.runner import run_scenario

    def say(message: str) -> None:
        sys.stderr.write(f"chaos: {message}\n")

    try:
        loaded = find_scenario(scenario)
        if scale != 1.0:
            loaded = loaded.scaled(scale)
        target = out if out is not None else Path("chaos-out") / loaded.name
        result = asyncio.run(run_scenario(loaded, target, plot=plot, log=say))
    except ChaosError as exc:
        sys.stderr.write(f"tidings chaos: {exc}\n")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        sys.stderr.write("tidings chaos: interrupted; every fault healed, every process stopped\n")
        raise typer.Exit(130) from None
    sys.stdout.write(f"{loaded.name}: {result.verdict.summary()}\n")
    sys.stdout.write(f"report: {result.report_path}\n")
    if result.plot_path is not None:
        sys.stdout.write(f"plot: {result.plot_path}\n")
    raise typer.Exit(0 if result.ok else 1)
