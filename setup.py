"""Builds the native parts with the package; metadata is in pyproject.toml.

emulator.cycles._cyclemodel: the cycle model's Unicorn hooks and the allocation tracer's, which
  reads the model's counts for its exact stamps (both loaded with ctypes).
emulator.calibrate._hostrun: the native runner `aeth-emu validate` times host code with.
emulator.machine._ports: the machine's in/out hooks (serial output at machine speed).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "emulator.cycles._cyclemodel",
            sources=["emulator/cycles/native/cyclemodel.c", "emulator/cycles/native/alloctrace.c",
                     "emulator/heap/native/guestwalk.c", "emulator/heap/native/liveset.c",
                     "emulator/trace/native/v2lines.c", "emulator/machine/native/delivery.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        ),
        Extension("emulator.machine._ports", sources=["emulator/machine/native/ports.c"],
                  extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"]),
        Extension("emulator.calibrate._hostrun", sources=["emulator/calibrate/native/hostrun.c"],
                  extra_compile_args=["-O2", "-Wall"]),
    ],
)
