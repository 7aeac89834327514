"""``tidings asyncapi``: the AsyncAPI 3.0 document of an application or a gateway config,
and optionally the TypeScript client generated from it.

::

    tidings asyncapi myapp.events            # the event classes of a module
    tidings asyncapi myapp.main:bus          # ... and what its bus subscribes to
    tidings asyncapi gateway.yaml -o asyncapi.yaml --typescript client.ts

A gateway config whose ``schemas:`` section is on has the schemas registered in its log
as payloads (read with ``create=False``: a log that does not exist yet is skipped).
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path
from typing import Any

import msgspec

try:
    import typer
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tidings asyncapi (tidings.contracts.cli) needs typer: install it with pip install 'tidings[cli]'"
    ) from exc

from tidings.contracts.asyncapi import application_document, event_classes, gateway_document
from tidings.contracts.typescript import typescript_client

__all__ = ("asyncapi",)


def _registered_schemas(store_url: str) -> dict[str, dict[str, Any]]:
    from tidings.contracts.registry import SchemaRegistry
    from tidings.exceptions import StoreError
    from tidings.store.url import open_store

    async def read() -> dict[str, dict[str, Any]]:
        try:
            store = open_store(store_url, create=False)
        except StoreError:
            return {}
        try:
            registry = SchemaRegistry(store)
            out: dict[str, dict[str, Any]] = {}
            for subject in await registry.subjects():
                latest = await registry.version(subject, "latest")
                if latest.schema_type == "JSON" and subject.endswith("-value"):
                    out[subject.removesuffix("-value")] = latest.parsed
            return out
        except StoreError:
            return {}
        finally:
            await store.aclose()

    return asyncio.run(read())


def _document(target: str, title: str | None, version: str) -> dict[str, Any]:
    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.is_dir():
        from tidings.gateway.config import load_config

        config = load_config([path])
        schemas = config.schemas
        known = _registered_schemas(config.store) if (schemas.registry or schemas.validate) else {}
        return gateway_document(config, schemas=known)
    module_name, _, attribute = target.partition(":")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise typer.BadParameter(
            f"cannot import {module_name!r} ({exc}); give a module, module:bus, or a "
            "gateway config file (.yaml)"
        ) from exc
    bus = None
    if attribute:
        bus = getattr(module, attribute, None)
        if bus is None:
            raise typer.BadParameter(f"module {module_name!r} has no attribute {attribute!r}")
    return application_document(
        title or module_name, event_classes(module), bus=bus, version=version
    )


def asyncapi(
    target: str = typer.Argument(
        ..., help="A module (pkg.mod), module:bus, or a gateway config (.yaml) or directory."
    ),
    output: Path | None = typer.Option(  # noqa: B008 - typer's declaration style
        None, "--output", "-o", help="Write the document here (.yaml/.yml: YAML, else JSON)."
    ),
    typescript: Path | None = typer.Option(  # noqa: B008 - typer's declaration style
        None, "--typescript", help="Also write a typed TypeScript client here."
    ),
    title: str | None = typer.Option(None, help="The document's title (default: the module)."),
    version: str = typer.Option("1.0.0", help="The document's API version."),
) -> None:
    """Write the AsyncAPI 3.0 document of an application or a gateway config."""
    doc = _document(target, title, version)
    if output is None:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(doc)).decode() + "\n")
    elif output.suffix in (".yaml", ".yml"):
        import yaml

        output.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    else:
        output.write_text(msgspec.json.format(msgspec.json.encode(doc)).decode() + "\n")
    if typescript is not None:
        typescript.write_text(typescript_client(doc))
