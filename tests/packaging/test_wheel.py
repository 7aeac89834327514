"""The built distributions install and work: what a user gets from ``pip install tidings``.

The sdist and wheel are built once (``python -m build``: the wheel from the sdist, as
``make dist`` does) and pass ``twine check --strict``. Then the wheel is installed into
fresh virtual environments, with dependencies from the package index (pip's cache makes
this quick), and nothing of this source tree on the path:

- **without extras**: every public module either imports or fails naming the extra to
  install (``tidings[X]``, as in ``pip install 'tidings[X]'``); each extra of pyproject.toml is named by at least
  one module (its import guard); ``mypy --strict`` accepts tests/typing's correct usage and
  refuses its wrong usage, reading the wheel's types (``py.typed``), not src/;
- **with each extra**, one environment per extra, read from pyproject.toml (``dev`` and
  ``bench`` are this repository's, not features): every module whose guard named the
  extra now imports, and the extra's smoke script (``smoke_<extra>.py`` beside this file,
  when there is one) shows the feature working. An extra added to pyproject.toml is
  covered at once by the import checks; give it a smoke script for its feature.

Environments are made with ``venv --without-pip`` and filled by this interpreter's pip
(``pip --python``), so no pip is installed into each.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidings.testing.nats_server import NatsServer

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NOT_FEATURES = {"dev", "bench"}
EXTRAS = sorted(
    set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    - NOT_FEATURES
)
# Public modules that need something no extra provides, and why.
NEEDS_NO_EXTRA = {
    "tidings.testing.store_conformance": "pytest: the user's test runner",
    "tidings.testing.transport_conformance": "pytest: the user's test runner",
}
GUARD = re.compile(r"tidings\[(?P<extra>[\w-]+)\]")  # as in: pip install 'tidings[nats]'
# Every run has a deadline: an install or a smoke script that hangs fails the test.
INSTALL_TIMEOUT = 300
RUN_TIMEOUT = 120


def execute(
    args: list[str | Path], cwd: Path, timeout: float = RUN_TIMEOUT, status: int = 0
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` without this tree on the path; it must exit with ``status``."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert done.returncode == status, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done


def run(args: list[str | Path], cwd: Path, timeout: float = RUN_TIMEOUT) -> str:
    return execute(args, cwd, timeout).stdout


def make_venv(path: Path, requirement: str) -> Path:
    """A fresh environment at ``path`` with ``requirement`` installed; its python."""
    run([sys.executable, "-m", "venv", "--without-pip", path], path.parent)
    python = path / "bin" / "python"
    run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", requirement],
        path.parent,
        timeout=INSTALL_TIMEOUT,
    )
    return python


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built sdist and wheel (checked by twine); the wheel's path."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", out, ROOT], out, timeout=INSTALL_TIMEOUT)
    files = sorted(out.iterdir())
    run([sys.executable, "-m", "twine", "check", "--strict", *files], out)
    [wheel] = [f for f in files if f.suffix == ".whl"]
    return wheel


@pytest.fixture(scope="module")
def bare(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of an environment with the wheel and no extras."""
    return make_venv(tmp_path_factory.mktemp("venv") / "bare", str(dist))


def probe(python: Path, cwd: Path) -> dict[str, str | None]:
    outcome: dict[str, str | None] = json.loads(run([python, HERE / "probe_modules.py"], cwd))
    return outcome


@pytest.fixture(scope="module")
def without_extras(bare: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    return probe(bare, tmp_path_factory.mktemp("probe"))


@pytest.fixture(scope="module")
def services() -> Iterator[dict[str, str]]:
    """URLs for the smoke scripts that need a server: NATS; PostgreSQL is asked for lazily."""
    with NatsServer() as server:
        yield {"nats": server.url}


def test_the_version_comes_from_one_place(dist: Path) -> None:
    import tidings

    assert dist.name.startswith(f"tidings-{tidings.__version__}-")
    assert "version =" not in (ROOT / "pyproject.toml").read_text().split("[project]")[1].split(
        "[project.optional-dependencies]"
    )[0].replace('dynamic = ["version"]', "")


def test_the_wheel_ships_its_types_and_no_tests(dist: Path) -> None:
    import zipfile

    names = zipfile.ZipFile(dist).namelist()
    assert "tidings/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "docs/", "examples/"))]


def test_a_wheel_with_the_compiled_fast_path_runs_it(dist: Path, bare: Path) -> None:
    # hatch_build.py compiles tidings/_fastpath.py when the build machine has a C compiler;
    # without one the wheel is pure Python (py3-none-any) and runs the module as it is.
    import zipfile

    names = zipfile.ZipFile(dist).namelist()
    compiled = any(n.startswith("tidings/_fastpath_c.") for n in names)
    assert compiled == (not dist.name.endswith("-py3-none-any.whl"))
    assert "tidings/_fastpath.py" in names
    used = run([bare, "-c", "import tidings; print(tidings.__speedups__)"], bare.parent)
    assert used.strip() == str(compiled)


def test_without_extras_each_module_imports_or_names_its_extra(
    without_extras: dict[str, str | None],
) -> None:
    assert without_extras["tidings.bus"] is None
    assert without_extras["tidings.store.sqlite"] is None
    unexplained = {
        module: error
        for module, error in without_extras.items()
        if error is not None
        and module not in NEEDS_NO_EXTRA
        and not ((found := GUARD.search(error)) and found["extra"] in EXTRAS)
    }
    assert not unexplained, f"failing without naming an extra of pyproject.toml: {unexplained}"


def test_without_extras_each_extra_has_an_import_guard(
    without_extras: dict[str, str | None],
) -> None:
    named = {
        found["extra"]
        for error in without_extras.values()
        if error and (found := GUARD.search(error))
    }
    assert set(EXTRAS) <= named, f"extras no missing-extra message names: {set(EXTRAS) - named}"


def test_mypy_reads_the_types_of_the_installed_wheel(bare: Path, tmp_path: Path) -> None:
    # tests/typing's cases, checked here against the wheel instead of src/
    cases = ROOT / "tests" / "typing" / "cases"
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    mypy: list[str | Path] = [sys.executable, "-m", "mypy", "--config-file", "mypy.ini"]
    mypy += ["--no-incremental", "--python-executable", bare]
    checked = execute([*mypy, "--verbose", cases / "ok_usage.py"], tmp_path)
    [found] = set(re.findall(r"Parsing (\S+/tidings/__init__\.py) \(tidings\)", checked.stderr))
    assert Path(found).is_relative_to(bare.parent.parent), found  # the wheel's copy, not src/
    bad = cases / "bad_usage.py"
    refused = execute([*mypy, bad], tmp_path, status=1)
    marked = len(re.findall(r"# E: [a-z-]+$", bad.read_text(), re.M))
    assert len(re.findall(r"bad_usage\.py:\d+: error:", refused.stdout)) >= marked, refused.stdout


@pytest.mark.parametrize("extra", EXTRAS)
def test_each_extra_installs_and_its_feature_works(
    extra: str,
    dist: Path,
    without_extras: dict[str, str | None],
    services: dict[str, str],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    python = make_venv(tmp_path / f"venv-{extra}", f"{dist}[{extra}]")
    with_extra = probe(python, tmp_path)
    guarded = [
        module
        for module, error in without_extras.items()
        if error and (found := GUARD.search(error)) and found["extra"] == extra
    ]
    still = {
        module: with_extra[module]
        for module in guarded
        # a module that needs a second extra too may name that one now
        if with_extra[module] is not None and f"tidings[{extra}]" in str(with_extra[module])
    }
    assert not still, f"with tidings[{extra}] installed these still fail: {still}"
    smoke = HERE / f"smoke_{extra}.py"
    if smoke.exists():
        args: list[str | Path] = [python, smoke]
        if extra == "nats":
            args.append(services["nats"])
        if extra == "postgres":
            args.append(request.getfixturevalue("postgres_url"))
        assert run(args, tmp_path).strip().endswith("ok")
