"""Build ``stack._native`` (cffi, API mode) from checksum.c, frame.c, fastpath.c and gso.c.

Two ways, same result:

* ``pip install -e .`` (or a wheel build): setuptools runs this file through
  ``[tool.setuptools] cffi_modules = ["native/build_native.py:ffibuilder"]`` and
  builds the extension next to ``stack/`` (in place for an editable install).
* ``python native/build_native.py``: compiles in a scratch directory under
  ``build/`` and copies ``_native.<abi>.so`` into ``stack/``.

``stack/wire/checksum.py`` imports ``stack._native`` when it exists and falls
back to the pure-Python twin otherwise; ``TAPSTACK_PURE=1`` forces the fallback.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HEADER = os.path.join(HERE, "tapstack_native.h")
INTERNAL_HEADERS = ("byteorder.h",)       # included by the sources, not given to cdef
SOURCES = ("checksum.c", "frame.c", "fastpath.c", "gso.c")


def _rel(path: str, relative: bool) -> str:
    """setuptools wants source paths relative to the project root (its cwd);
    ffi.compile() changes into its tmpdir, so the standalone build needs them
    absolute."""
    if not relative:
        return path
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _cdef_text() -> str:
    """The header minus preprocessor lines: cffi's cdef cannot parse those."""
    with open(HEADER, encoding="utf-8") as f:
        return "".join(line for line in f if not line.lstrip().startswith("#"))


def make_ffibuilder(relative: bool = True) -> FFI:
    builder = FFI()
    builder.cdef(_cdef_text())
    builder.set_source(
        "stack._native",
        '#include "tapstack_native.h"\n',
        sources=[_rel(os.path.join(HERE, name), relative) for name in SOURCES],
        include_dirs=[_rel(HERE, relative)],
        depends=[_rel(HEADER, relative)] + [_rel(os.path.join(HERE, h), relative) for h in INTERNAL_HEADERS],
        extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wextra", "-fno-strict-aliasing"],
        # Same file name both ways (_native.cpython-3XY-<platform>.so): with an
        # abi3 build next to a standalone one, the older could shadow the newer.
        py_limited_api=False,
    )
    return builder


ffibuilder = make_ffibuilder()


def build_in_place() -> str:
    """Compile and copy the extension into stack/; returns the installed path."""
    builder = make_ffibuilder(relative=False)
    tmpdir = os.path.join(ROOT, "build", "native")
    os.makedirs(tmpdir, exist_ok=True)
    built = builder.compile(tmpdir=tmpdir, verbose=False)
    dest = os.path.join(ROOT, "stack", os.path.basename(built))
    for stale in glob.glob(os.path.join(ROOT, "stack", "_native.*")):
        if stale != dest and stale.endswith((".so", ".pyd")):
            os.remove(stale)  # e.g. an abi3 build from an older setup
    shutil.copyfile(built, dest)
    return dest


if __name__ == "__main__":
    sys.stdout.write(f"built {build_in_place()}\n")
