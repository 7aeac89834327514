"""Opening a store from a URL: :func:`open_store`."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tidings.exceptions import InvalidStoreURLError
from tidings.store.base import EventStore

__all__ = ("open_store",)

_FORMS = (
    "memory://, sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    "or postgresql://user@host:5432/dbname[?schema=name]"
)


def open_store(url: str, *, create: bool = True) -> EventStore:
    """The store a URL names; it opens its files or connections on first use.

    - ``memory://``: a new :class:`~tidings.store.MemoryStore`;
    - ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``: a
      :class:`~tidings.store.SQLiteStore` on that file (``sqlite://`` alone: the default
      file ``.tidings/events.db``);
    - ``postgresql://...`` or ``postgres://...``: a :class:`~tidings.store.PostgresStore`;
      a ``schema`` query parameter picks the schema (default ``public``), the rest of the
      URL goes to libpq unchanged.

    With ``create=False`` (read-only uses, such as ``tidings log``), a SQLite file or
    PostgreSQL log that does not exist raises
    :class:`~tidings.exceptions.StoreNotFoundError` (SQLite: here; PostgreSQL: on opening)
    and nothing is created.

    SQLite and PostgreSQL URLs take ``?allow_broken_chain=1`` to append to a log whose hash
    chain is known to be broken (see "Tamper evidence" in :mod:`tidings.store.base`).

    Raises:
        InvalidStoreURLError: for anything else, naming the accepted forms.
        MissingExtraError: for a PostgreSQL URL without the ``tidings[postgres]`` extra.
    """
    if not isinstance(url, str):
        raise InvalidStoreURLError(
            f"a store URL is a str, not {type(url).__name__}; use {_FORMS}", url=repr(url)
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidStoreURLError(
            f"malformed store URL {url!r}: {exc}; use {_FORMS}", url=url
        ) from None
    scheme = parts.scheme.lower()
    if "://" not in url or not scheme:
        raise InvalidStoreURLError(
            f"malformed store URL {url!r}: it names no scheme; use {_FORMS}", url=url
        )
    if "#" in url:
        raise InvalidStoreURLError(
            f"malformed store URL {url!r}: a store URL has no '#fragment' (a '#' in a file "
            "name must be written %23)",
            url=url,
        )
    if scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise InvalidStoreURLError(
                f"malformed store URL {url!r}: a memory store takes no host, path or "
                "parameters; use memory://",
                url=url,
            )
        from tidings.store.memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        return _sqlite(url, parts.netloc, parts.path, parts.query, create=create)
    if scheme in ("postgresql", "postgres"):
        if not parts.netloc and not parts.path.strip("/") and not parts.query:
            raise InvalidStoreURLError(
                f"malformed store URL {url!r}: it names no server or database; "
                "use postgresql://user@host:5432/dbname",
                url=url,
            )
        query = parse_qsl(parts.query, keep_blank_values=True)
        schema = "public"
        allow_broken_chain = False
        rest = []
        for name, value in query:
            if name == "allow_broken_chain":
                allow_broken_chain = _flag(url, name, value)
            elif name == "schema":
                if not value:
                    raise InvalidStoreURLError(
                        f"malformed store URL {url!r}: the schema parameter is empty", url=url
                    )
                schema = value
            else:
                rest.append((name, value))
        from tidings.store.postgres import PostgresStore

        conninfo = urlunsplit(parts._replace(query=urlencode(rest)))
        return PostgresStore(
            conninfo, schema=schema, allow_broken_chain=allow_broken_chain, create=create
        )
    raise InvalidStoreURLError(
        f"unknown kind of store {parts.scheme!r} in {url!r}; use {_FORMS}", url=url
    )


def _sqlite(url: str, host: str, path: str, query: str, *, create: bool) -> EventStore:
    from tidings.store.sqlite import DEFAULT_PATH, SQLiteStore

    if host:
        raise InvalidStoreURLError(
            f"malformed store URL {url!r}: a SQLite URL has no host ({host!r}); use "
            "sqlite:///relative/path.db (three slashes) or sqlite:////absolute/path.db (four)",
            url=url,
        )
    allow_broken_chain = False
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name != "allow_broken_chain":
            raise InvalidStoreURLError(
                f"malformed store URL {url!r}: SQLite URLs take only the parameter "
                f"allow_broken_chain, not {name!r}",
                url=url,
            )
        allow_broken_chain = _flag(url, name, value)
    file = path[1:] if path.startswith("/") else path
    if path and not file:
        raise InvalidStoreURLError(
            f"malformed store URL {url!r}: the file path is empty; use "
            "sqlite:///relative/path.db, or sqlite:// for the default file",
            url=url,
        )
    return SQLiteStore(file or DEFAULT_PATH, allow_broken_chain=allow_broken_chain, create=create)


def _flag(url: str, name: str, value: str) -> bool:
    if value not in ("0", "1", "true", "false"):
        raise InvalidStoreURLError(
            f"malformed store URL {url!r}: {name} is 1 (or true) or 0 (or false), not {value!r}",
            url=url,
        )
    return value in ("1", "true")
