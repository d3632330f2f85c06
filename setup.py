"""Build of the optional C accelerator (issue 13); everything else is in pyproject.toml.

``optional=True``: without a compiler (or Python headers) the build of the extension fails
quietly and ``pip install`` goes on, leaving the pure-Python data plane
(``v6mostly.siit.accel.available()`` is then False).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "v6mostly.siit._accel",
            ["src/v6mostly/siit/_accel.c"],
            depends=["src/v6mostly/siit/_accel_xlat.h"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
