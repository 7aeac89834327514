"""A client of a schema registry's REST API (the gateway's ``/registry``, or Confluent's),
keeping what it read as a :class:`~tidings.contracts.registry.SchemaSource` for
validators in processes that do not hold the log.

Guarantees:

- :meth:`RegistryClient.load` reads every subject's versions; a registry that cannot be
  reached then raises :class:`~tidings.contracts.errors.RegistryUnavailableError` (a
  process should not start validating against nothing).
- :meth:`RegistryClient.refresh` reads them again; when the registry cannot be reached
  mid-run, the schemas read before stay in force, :attr:`RegistryClient.stale_since` says
  since when, and a warning says so once. The next successful refresh clears it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tidings.contracts.client needs httpx: install it with pip install 'tidings[gateway]'"
    ) from exc
import msgspec

from tidings.contracts.errors import RegistryUnavailableError
from tidings.contracts.registry import RegisteredSchema, pick

__all__ = ("RegistryClient",)

logger = logging.getLogger("tidings.contracts")


class RegistryClient:
    """Reads a registry at ``url`` (e.g. ``http://127.0.0.1:8080/registry``).

    Args:
        url: the registry's base URL.
        token: a gateway token, sent as ``Authorization: Bearer``.
        timeout: seconds per request.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 5.0) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._subjects: dict[str, list[RegisteredSchema]] = {}
        self.loaded = False
        self.stale_since: float | None = None
        """Wall-clock time since which the registry could not be reached (``None``: it could)."""

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str) -> Any:
        response = self._http.get(path)
        response.raise_for_status()
        return msgspec.json.decode(response.content)

    def _read(self) -> dict[str, list[RegisteredSchema]]:
        out: dict[str, list[RegisteredSchema]] = {}
        for subject in self._get("/subjects"):
            entries = []
            for version in self._get(f"/subjects/{subject}/versions"):
                found = self._get(f"/subjects/{subject}/versions/{version}")
                text = found["schema"]
                entries.append(
                    RegisteredSchema(
                        subject,
                        int(found["version"]),
                        int(found["id"]),
                        found.get("schemaType", "AVRO"),
                        text,
                        msgspec.json.decode(text),
                    )
                )
            out[subject] = entries
        return out

    def load(self) -> None:
        """Read every subject's versions.

        Raises:
            RegistryUnavailableError: if the registry cannot be reached or answers an error.
        """
        try:
            self._subjects = self._read()
        except (httpx.HTTPError, msgspec.DecodeError, KeyError, TypeError) as exc:
            raise RegistryUnavailableError(
                f"the schema registry at {self.url} cannot be read ({exc!r}); start it, or "
                "check the URL and the token"
            ) from exc
        self.loaded = True

    def refresh(self) -> None:
        """Read the registry again; keep the cached schemas when it cannot be reached.

        Raises:
            RegistryUnavailableError: only if nothing was loaded before.
        """
        if not self.loaded:
            self.load()
            return
        try:
            self._subjects = self._read()
        except (httpx.HTTPError, msgspec.DecodeError, KeyError, TypeError) as exc:
            if self.stale_since is None:
                self.stale_since = time.time()
                logger.warning(
                    "the schema registry at %s cannot be reached (%r); validating with the "
                    "schemas of %d subjects cached before",
                    self.url,
                    exc,
                    len(self._subjects),
                )
            return
        if self.stale_since is not None:
            logger.info("the schema registry at %s is reachable again", self.url)
            self.stale_since = None

    def cached(self, subject: str, version: int | None = None) -> RegisteredSchema | None:
        """The version (``None``: the latest) of ``subject`` read so far, or ``None``."""
        return pick(self._subjects.get(subject), version)
