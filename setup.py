"""Build the Cython fast paths.

Metadata lives in pyproject.toml; this file only declares the extensions.

Every ``_*.pyx`` under ``protocols/`` and ``acd_core/`` becomes an extension
module of the same dotted name, so adding a fast path needs no edit here.
Modules written in Cython's pure-Python mode (a ``.py`` file plus an
augmenting ``.pxd``) are listed in ``PURE_MODE`` and compiled as well; the
uncompiled ``.py`` stays importable as the reference.

Environment switches:
  TELACD_DEBUG=1         build with CYTHON_TRACE and the TELACD_DEBUG define
                         (invariant checks that compile away in release builds)
  TELACD_ANNOTATE=1      write Cython's HTML annotation next to each source
  TELACD_NO_EXTENSIONS=1 build nothing (pure-Python install)
"""

import os
import pathlib

from setuptools import setup

ROOT = pathlib.Path(__file__).parent
PACKAGES = ("protocols", "acd_core")
# pure-Python-mode modules compiled by Cython (path relative to ROOT)
PURE_MODE: list[str] = []


def _extensions():
    if os.environ.get("TELACD_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize
    from setuptools import Extension

    debug = bool(os.environ.get("TELACD_DEBUG"))
    macros = [("CYTHON_TRACE", "1"), ("TELACD_DEBUG", "1")] if debug else []
    cflags = ["-O0", "-g"] if debug else ["-O3"]
    sources = sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("_*.pyx"))
    sources += PURE_MODE
    exts = []
    for src in sources:
        name = src.rsplit(".", 1)[0].replace("/", ".")
        # pure-mode modules get a distinct compiled name so the .py reference stays importable
        if src.endswith(".py"):
            name += "_c"
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
