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
