"""The compiled kernels: the delta order (coralfs/objects/_native.c) and the entropy coder
(coralfs/objects/_entropy.c); everything else about the package is in pyproject.toml.
optional=True: without a C compiler the install still succeeds and coralfs uses its numpy
code (coralfs/objects/native.py, coralfs/objects/entropy.py)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "coralfs.objects._native",
            ["coralfs/objects/_native.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "coralfs.objects._entropy",
            ["coralfs/objects/_entropy.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
    ]
)
