"""Shared fixtures: a bus; a sleeping child process to signal; a PostgreSQL server and schemas of a test's own on it; Node tools from npm (TypeScript, the AsyncAPI JSON Schema)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

import tidings
from tidings.testing.brokers import Mosquitto, RabbitNode


@pytest.fixture
def bus() -> Iterator[tidings.Bus]:
    """A fresh in-process bus, closed after the test."""
    with tidings.Bus() as bus:
        yield bus


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A child process sleeping for 60 s (to stop, continue or kill), killed after the test."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield child
    finally:
        child.kill()
        child.wait(10)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server: TIDINGS_TEST_POSTGRES_URL, or one started from pgserver."""
    url = os.environ.get("TIDINGS_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR in CI
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(  # type: ignore[attr-defined]
            tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop"
        )
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture
async def postgres_schema(postgres_url: str) -> AsyncIterator[str]:
    """The name of a PostgreSQL schema of the test's own on :func:`postgres_url` (what the
    test opens there creates it), dropped with everything in it afterwards."""
    import psycopg
    from psycopg import sql

    name = f"tidings_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
            )


@pytest.fixture
def postgres_schema_url(postgres_url: str, postgres_schema: str) -> str:
    """The store URL of an empty PostgreSQL log in :func:`postgres_schema`."""
    parts = urlsplit(postgres_url)
    query = urlencode([*parse_qsl(parts.query), ("schema", postgres_schema)])
    return urlunsplit(parts._replace(query=query))


NPM_PACKAGES = ("typescript@5.9.3", "@asyncapi/specs@6.11.1")
"""Installed from the npm registry into ``build/npm`` (a cache kept between runs)."""

_NPM_CACHE = Path(__file__).resolve().parents[1] / "build" / "npm"


def unavailable(reason: str) -> None:
    """Skip the test for ``reason`` (a tool or broker the machine lacks), or fail it under
    ``CI=true``, where everything the suite needs must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing tool or broker fails the run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``build/npm/node_modules`` with TypeScript and ``@asyncapi/specs``, installed with
    npm on first use; skipped (failed under ``CI=true``) when npm or the registry is
    missing."""
    marker = _NPM_CACHE / f".installed-{'-'.join(NPM_PACKAGES).replace('/', '_')}"
    if not marker.exists():
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            unavailable("node and npm are not installed (needed for tsc and @asyncapi/specs)")
        _NPM_CACHE.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(
                [str(npm), "install", "--prefix", str(_NPM_CACHE), "--no-audit", "--no-fund",
                 *NPM_PACKAGES],
                check=True, capture_output=True, timeout=600,
            )  # fmt: skip
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            unavailable(f"npm install {' '.join(NPM_PACKAGES)} failed: {exc}")
        marker.write_text("ok\n")
    return _NPM_CACHE / "node_modules"


@pytest.fixture(scope="session")
def asyncapi_validator(node_modules: Path) -> Any:
    """The official AsyncAPI 3.0.0 JSON Schema (``@asyncapi/specs``) as a validator."""
    import jsonschema

    schema = json.loads(
        (node_modules / "@asyncapi" / "specs" / "schemas" / "3.0.0.json").read_text()
    )
    return jsonschema.Draft7Validator(schema)


Tsc = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="session")
def tsc(node_modules: Path) -> Tsc:
    """``tsc(directory, *files)``: ``tsc --strict`` over ``files`` in ``directory`` (ES2022
    with the DOM's fetch), compiled into ``directory/out``."""

    def run(directory: Path, *files: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(node_modules / ".bin" / "tsc"), "--strict", "--target", "es2022", "--lib",
             "es2022,dom", "--module", "es2022", "--moduleResolution", "bundler", "--outDir",
             "out", *files],
            cwd=directory, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    return run


# -- brokers (bridge and gateway tests): skipped with the reason when missing, failed under CI

AMQP_URL = os.environ.get("TIDINGS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A Mosquitto of this test's own, started; the test may stop and start it again."""
    try:
        broker = Mosquitto()
    except FileNotFoundError as exc:
        unavailable(str(exc))
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
async def amqp_url() -> str:
    """The shared RabbitMQ's URL, after checking it answers (else skip, or fail under CI)."""
    import aio_pika

    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
    except Exception as exc:
        unavailable(f"no RabbitMQ at {AMQP_URL} ({type(exc).__name__}: {exc})")
    await connection.close()
    return AMQP_URL


@pytest.fixture
def rabbit_node() -> Iterator[RabbitNode]:
    """A RabbitMQ node of this test's own, started; the test may stop and start it again."""
    try:
        node = RabbitNode()
    except FileNotFoundError as exc:
        unavailable(str(exc))
    node.start()
    try:
        yield node
    finally:
        node.close()


@pytest.fixture
def unique() -> str:
    """A name unique to this test, for queues and exchanges."""
    return f"tidings-test-{uuid.uuid4().hex[:10]}"
