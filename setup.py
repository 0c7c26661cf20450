"""Build the Cython fast paths.

Metadata lives in pyproject.toml; this file only declares the extensions.

Every ``_*.pyx`` under ``protocols/`` and ``acd_core/`` becomes an extension
module of the same dotted name, so adding a fast path needs no edit here.
A module written in Cython's pure-Python mode (``_name.py`` plus an augmenting
``_name.pxd`` beside it) is compiled too, under its own name: the extension
then shadows the ``.py`` on import, and a selector that wants the reference
loads the ``.py`` by path (see the selector modules of each package).

Environment switches:
  TELACD_DEBUG=1         build with CYTHON_TRACE and the TELACD_DEBUG define
                         (invariant checks that compile away in release builds)
  TELACD_ANNOTATE=1      write Cython's HTML annotation next to each source
  TELACD_NO_EXTENSIONS=1 build nothing (pure-Python install)
  TELACD_BUILD_ONLY=pkg  build only the extensions under these packages
                         (comma-separated, e.g. "protocols" or "acd_core")
"""

import os
import pathlib

from setuptools import setup

ROOT = pathlib.Path(__file__).parent
PACKAGES = ("protocols", "acd_core")


def _extensions():
    if os.environ.get("TELACD_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize
    from setuptools import Extension

    debug = bool(os.environ.get("TELACD_DEBUG"))
    macros = [("CYTHON_TRACE", "1"), ("TELACD_DEBUG", "1")] if debug else []
    cflags = ["-O0", "-g"] if debug else ["-O3"]
    only = [p for p in os.environ.get("TELACD_BUILD_ONLY", "").split(",") if p]
    packages = [p for p in PACKAGES if not only or p in only]
    sources = []
    for pkg in packages:
        sources += (ROOT / pkg).rglob("_*.pyx")
        sources += (p for p in (ROOT / pkg).rglob("_*.py") if p.with_suffix(".pxd").exists())
    sources = sorted(str(p.relative_to(ROOT)) for p in sources)
    exts = []
    for src in sources:
        name = src.rsplit(".", 1)[0].replace("/", ".")
        exts.append(Extension(name, [src], define_macros=macros, extra_compile_args=cflags))
    return cythonize(
        exts,
        compiler_directives={
            "language_level": "3",
            "linetrace": debug,
            "embedsignature": True,
        },
        annotate=bool(os.environ.get("TELACD_ANNOTATE")),
        quiet=True,
    )


setup(ext_modules=_extensions())
