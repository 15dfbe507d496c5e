"""Builds the native cycle model (emulator/native) with the package; metadata is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "emulator._cyclemodel",
            sources=["emulator/native/cyclemodel.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        ),
        Extension("emulator._hostrun", sources=["emulator/native/hostrun.c"], extra_compile_args=["-O2", "-Wall"]),
    ],
    package_data={"emulator": ["cycle_model.toml"]},
)
