"""Only for what pyproject.toml cannot say: the cffi extension ``stack._native``.

setuptools does not accept ``cffi_modules`` in ``[tool.setuptools]``; cffi's
setuptools hook reads it from here. Everything else lives in pyproject.toml.
"""

from setuptools import setup

setup(cffi_modules=["native/build_native.py:ffibuilder"])
