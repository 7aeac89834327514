"""The postgres extra: a PostgresStore appends and replays (server URL in argv[1])."""

from __future__ import annotations

import asyncio
import sys
import uuid

import psycopg
from psycopg import sql

import tidings


async def main(url: str) -> None:
    schema = f"smoke_{uuid.uuid4().hex[:12]}"
    try:
        async with tidings.Bus(store=tidings.PostgresStore(url, schema=schema)) as bus:
            for n in range(3):
                await bus.emit({"n": n}, topic="smoke.counted")
            total = await bus.replay(lambda acc, event: acc + event["n"], 0)
            assert total == 3, total
    finally:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


asyncio.run(main(sys.argv[1]))
print("ok")
