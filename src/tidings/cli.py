"""The ``tidings`` command.

``tidings serve [CONFIG ...]`` runs the event gateway (:mod:`tidings.server.serve`);
``tidings demo`` runs the guided tour on embedded defaults (no server needed). Further
command groups are mounted here as the project grows.
"""

from __future__ import annotations

try:
    import typer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise SystemExit("the tidings command needs its extra: pip install 'tidings[cli]'") from exc

__all__ = ("app", "main")

app = typer.Typer(
    name="tidings",
    help="tidings: a typed event bus for Python, from one process to a cluster.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """tidings: a typed event bus for Python, from one process to a cluster."""


from tidings.store.cli import log_app  # noqa: E402 - mounted once typer is known present

app.add_typer(log_app)

from tidings.chaos.cli import chaos_app  # noqa: E402 - mounted once typer is known present

app.add_typer(chaos_app)
from tidings.contracts.cli import asyncapi  # noqa: E402 - mounted once typer is known present

app.command()(asyncapi)


@app.command()
def serve(
    config: list[str] = typer.Argument(  # noqa: B008 - typer's declaration style
        None, help="Config files or directories (YAML); none: the embedded default."
    ),
    listen: str | None = typer.Option(
        None, help="host:port to listen on instead of the config's http.listen (port 0: any)."
    ),
) -> None:
    """Run the event gateway (CloudEvents over HTTP, hot-reloaded YAML routes) until Ctrl-C."""
    from tidings.server.serve import serve as run_gateway

    raise typer.Exit(run_gateway(config or [], listen=listen))


@app.command()
def demo() -> None:
    """Run a short tour of tidings on embedded defaults (no server to start)."""
    from tidings._demo import run

    raise typer.Exit(run())


def main() -> None:
    """Entry point of the ``tidings`` console script."""
    app()


if __name__ == "__main__":
    main()
