"""Build hook: compile ``src/tidings/_fastpath.py`` with mypyc, when this machine can.

The wheel (and an editable install) gets ``tidings._fastpath_c``: a copy of ``_fastpath.py``
that records the copied source's SHA-256 (``SOURCE_SHA256``, which :mod:`tidings._speedups`
checks before using the build), compiled by mypyc. Any failure (no C compiler, no Python
headers, mypyc unable to build on this interpreter) is reported and the install goes on
without it: tidings then runs the same module as pure Python. mypyc's ``-Werror`` is dropped
(warnings are still shown): a warning that a newer C compiler adds must not cost the build.
On CI (``CI=true``) with a C compiler, ``tests/test_speedups.py`` fails when the build is
missing, so that a lost build is noticed. ``TIDINGS_PURE_PYTHON=1`` at
build time skips the compile. A wheel with the build is tagged for this interpreter and
platform; one without stays ``py3-none-any``.

The compile sees a copy of the one module in a scratch package (an empty ``tidings``), so it
needs neither tidings' dependencies nor its other modules.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.config import BuilderConfig
from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("src/tidings/_fastpath.py")
MODULE = "_fastpath_c"


class MypycBuildHook(BuildHookInterface[BuilderConfig]):
    PLUGIN_NAME = "custom"

    _scratch: Path | None = None
    """The compile's scratch directory, removed in :meth:`finalize`."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        if os.environ.get("TIDINGS_PURE_PYTHON", "") not in ("", "0"):
            self.app.display_info("TIDINGS_PURE_PYTHON is set: tidings._fastpath not compiled")
            return
        root = Path(self.root)
        scratch = Path(tempfile.mkdtemp(prefix="tidings-mypyc-"))
        try:
            built = _compile(root / SOURCE, scratch)
        except (Exception, SystemExit) as exc:  # mypyc reports its own errors by exiting
            self.app.display_warning(
                f"tidings._fastpath not compiled ({type(exc).__name__}: {exc}); "
                "the pure-Python module will be used"
            )
            shutil.rmtree(scratch, ignore_errors=True)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        for path, name in built.items():
            if version == "editable":  # the editable install imports from src/: put it there
                shutil.copyfile(path, root / "src" / name)
            else:
                build_data["force_include"][str(path)] = name
            self.app.display_info(f"compiled {name}")
        self._scratch = scratch  # removed in finalize, after the wheel took the file

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def _compile(source: Path, scratch: Path) -> dict[Path, str]:
    """Compile a copy of ``source`` as ``tidings._fastpath_c`` under ``scratch``; return each
    extension module built (mypyc's runtime library beside the module) with its path in the
    wheel."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    text = source.read_bytes()
    package = scratch / "src" / "tidings"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    digest = hashlib.sha256(text).hexdigest()
    copy = package / f"{MODULE}.py"
    copy.write_bytes(text + f'\n\nSOURCE_SHA256: Final = "{digest}"\n'.encode())
    cwd = os.getcwd()
    os.chdir(scratch)  # mypy reads no project configuration here, and writes its C here
    try:
        extensions = mypycify(
            ["--config-file=", "--follow-imports=silent", f"src/tidings/{MODULE}.py"],
            opt_level="3",
            target_dir="build",
        )
        for extension in extensions:  # a newer compiler's new warning must not drop the build
            extension.extra_compile_args = [
                flag for flag in extension.extra_compile_args if flag != "-Werror"
            ]
        distribution = Distribution({"ext_modules": extensions, "name": "tidings-fastpath"})
        build_ext = distribution.get_command_obj("build_ext")
        build_ext.build_lib = str(scratch / "lib")
        build_ext.build_temp = str(scratch / "temp")
        build_ext.ensure_finalized()
        build_ext.run()
        outputs = [Path(path) for path in build_ext.get_outputs()]
    finally:
        os.chdir(cwd)
    lib = scratch / "lib"
    return {path: path.relative_to(lib).as_posix() for path in outputs}
