"""Build hook for the one compiled piece: two interleaved SHA-256 streams (registry/_sha256x2.c).

Everything else is in pyproject.toml. The extension is optional: where it cannot be compiled (no
C compiler, not x86-64), the install still succeeds and the hashing pass uses hashlib instead.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "modelsafe.registry._sha256x2",
            sources=["registry/_sha256x2.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
