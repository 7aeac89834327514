"""Config validation: every problem reported with file, line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings.gateway import ConfigError, load_config, parse_config

BAD = """\
routes:
  - name: big
    from: orders.placed
    when: data.amount > 100 && nosuch == 1
    to: [{topic: audit.big}, {bogus: 1}]
  - name: big
    from: orders..x
    to: [{topic: x.y}]
  - name: broken
    from: a.b
    colour: red
    when: data.amount >
    to: [{nats: subj}]
"""


def test_every_problem_is_listed_with_its_position() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config([("bad.yaml", BAD)])
    found = {(p.line, p.column): p.message for p in caught.value.problems}
    assert "nosuch" in found[(4, 11)]
    assert "unknown target kind 'bogus'" in found[(5, 31)]
    assert "duplicate route name 'big'" in found[(6, 5)]
    assert "token 2 is empty" in found[(7, 11)]
    assert "unknown key 'colour'" in found[(11, 5)]
    assert "does not compile" in found[(12, 11)]
    assert "nats target" in found[(9, 5)]
    assert len(caught.value.problems) == 7
    assert "bad.yaml:4:11:" in str(caught.value)


def test_a_redirect_cycle_between_routes_is_refused() -> None:
    text = (
        "routes:\n"
        "  - {name: a, from: x.>, to: [{topic: y.one}]}\n"
        "  - {name: b, from: y.*, to: [{topic: x.two}]}\n"
        "  - {name: c, from: z, to: [{topic: x.three}]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config([("c.yaml", text)])
    assert [(p.line, "redirect cycle" in p.message) for p in caught.value.problems] == [
        (2, True),
        (3, True),
    ]


def test_split_percentages_must_add_up_and_yaml_errors_have_positions() -> None:
    split = (
        "routes:\n"
        "  - name: s\n"
        "    from: t\n"
        "    split: {by: key, variants: [{percent: 30, to: []}, {percent: 30, to: []}]}\n"
    )
    with pytest.raises(ConfigError, match="add up to 60"):
        parse_config([("s.yaml", split)])
    with pytest.raises(ConfigError) as caught:
        parse_config([("y.yaml", "routes: [\n  - {name: a\n")])
    assert caught.value.problems[0].line >= 2
    assert "not valid YAML" in caught.value.problems[0].message


def test_a_directory_is_every_yaml_file_in_it_and_settings_belong_to_one_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.yaml").write_text("store: memory://\nroutes: [{name: a, from: x, to: []}]\n")
    (tmp_path / "b.yml").write_text("routes: [{name: b, from: y, to: []}]\n")
    (tmp_path / "notes.txt").write_text("ignored")
    config = load_config([tmp_path])
    assert [r.name for r in config.routes] == ["a", "b"]
    assert config.store == "memory://"
    (tmp_path / "c.yaml").write_text("store: sqlite:///x.db\n")
    with pytest.raises(ConfigError, match="'store' is already set in"):
        load_config([tmp_path])


def test_defaults() -> None:
    config = load_config()
    assert config.http.port == 8080
    assert config.http.max_body == 1 << 20
    assert config.routes == ()


def test_an_empty_file_is_refused_not_taken_for_no_routes(tmp_path: Path) -> None:
    # a watcher can see a file that is being written in place while it is still empty
    (tmp_path / "g.yaml").write_text("# only a comment\n")
    with pytest.raises(ConfigError, match="holds no config"):
        load_config([tmp_path / "g.yaml"])
