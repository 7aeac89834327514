"""open_store: the URL forms, and clear errors for malformed ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings.exceptions import InvalidStoreURLError
from tidings.store import MemoryStore, PostgresStore, SQLiteStore, open_store


async def test_memory_url() -> None:
    store = open_store("memory://")
    assert isinstance(store, MemoryStore)
    await store.aclose()


async def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == tmp_path / "abs.db"
    await absolute.aclose()
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///rel/events.db")
    assert isinstance(relative, SQLiteStore)
    assert relative.path == Path("rel/events.db")
    await relative.aclose()
    default = open_store("sqlite://")
    assert isinstance(default, SQLiteStore)
    assert default.path == Path(".tidings/events.db")
    await default.aclose()


async def test_postgres_url_keeps_the_schema_apart() -> None:
    store = open_store("postgresql://user@db.example:5433/app?schema=audit&sslmode=disable")
    assert isinstance(store, PostgresStore)
    assert store.schema == "audit"
    assert "schema" not in store.url
    assert "sslmode=disable" in store.url
    assert "db.example:5433/app" in repr(store)
    plain = open_store("postgres://localhost/app")
    assert isinstance(plain, PostgresStore)
    assert plain.schema == "public"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("events.db", "names no scheme"),
        ("", "names no scheme"),
        ("mysql://localhost/db", "unknown kind of store 'mysql'"),
        ("sqlite://host/events.db", "has no host"),
        ("sqlite:///", "file path is empty"),
        ("sqlite:///x.db?mode=ro", "only the parameter allow_broken_chain"),
        ("memory://somewhere", "takes no host"),
        ("memory://#x", "has no '#fragment'"),
        ("sqlite:///runs/run#2.db", "must be written %23"),
        ("postgresql://", "names no server"),
        ("postgresql://localhost/db?schema=", "schema parameter is empty"),
    ],
)
def test_a_malformed_url_gets_a_clear_typed_error(url: str, fragment: str) -> None:
    with pytest.raises(InvalidStoreURLError, match=fragment) as caught:
        open_store(url)
    assert caught.value.url == url
    assert isinstance(caught.value, ValueError)


def test_a_non_string_url_is_rejected() -> None:
    with pytest.raises(InvalidStoreURLError, match="str"):
        open_store(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url", ["postgresql://127.0.0.1:notaport/db", "postgresql://127.0.0.1:5432,x:y/db"]
)
def test_a_postgres_url_with_a_bad_port_is_invalid_at_once(url: str) -> None:
    with pytest.raises(InvalidStoreURLError, match="is not a number") as caught:
        open_store(url)
    assert caught.value.url == url


async def test_open_store_with_create_false_creates_nothing(tmp_path: Path) -> None:
    from tidings.exceptions import StoreNotFoundError

    with pytest.raises(StoreNotFoundError, match="no SQLite log"):
        open_store(f"sqlite:///{tmp_path}/typo/events.db", create=False)
    assert not (tmp_path / "typo").exists()
    async with open_store(f"sqlite:///{tmp_path}/events.db") as created:
        await created.last_position()
    async with open_store(f"sqlite:///{tmp_path}/events.db", create=False) as existing:
        assert await existing.last_position() == 0
