"""The gateway config's ``schemas:`` section."""

from __future__ import annotations

import pytest

from tidings.gateway import ConfigError, parse_config
from tidings.gateway.config import SchemasConfig


def test_the_section_and_its_defaults() -> None:
    assert parse_config([("a.yaml", "routes: []\n")]).schemas == SchemasConfig()
    config = parse_config(
        [("a.yaml", "schemas: {registry: true, validate: false, compatibility: full_transitive}\n")]
    )
    assert config.schemas == SchemasConfig(True, False, "FULL_TRANSITIVE")


def test_bad_values_are_listed_with_their_positions() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            [("a.yaml", "schemas:\n  registry: yes please\n  compatibility: SIDEWAYS\n  x: 1\n")]
        )
    problems = [str(p) for p in caught.value.problems]
    assert any("a.yaml:4:3: unknown key 'x' in schemas" in p for p in problems)
    assert any("a.yaml:2:13: schemas.registry must be true or false" in p for p in problems)
    assert any("a.yaml:3:18: schemas.compatibility 'SIDEWAYS' is none of" in p for p in problems)
