"""Unicorn engines whose lifetime is their machine's.

An engine holds guest RAM mappings and a translation cache of tens of MB. It is created for a
machine and closed the moment that machine is freed, and a process that boots many times (a
test suite) collects what closed engines leave behind before it builds the next one.
"""

from __future__ import annotations

import ctypes
import gc
import weakref

from unicorn import UC_ARCH_X86, Uc

TRANSLATION_BUFFER = 64 << 20  # QEMU's translated-code cache (Unicorn's default is 1 GiB, filled lazily)
_TRIM = None  # glibc's malloc_trim, False where there is none
_ENGINES_CLOSED = False  # an engine closed since the last collection


def new_engine(mode: int, owner: object) -> Uc:
    """An x86 engine in `mode` that is closed when `owner` is freed."""
    uc = Uc(UC_ARCH_X86, mode)
    uc.ctl_set_tcg_buffer_size(TRANSLATION_BUFFER)
    weakref.finalize(owner, _close, uc)
    return uc


def _close(uc: Uc) -> None:
    """When the machine goes, its engines go with it. Unicorn's binding keeps each Python hook's
    thunk in the engine, and each thunk refers back to the engine: a cycle that only a full
    garbage collection frees, and with it the engine's translation cache (tens of MB). So the
    hooks are deleted and the engine closed now; the small Python objects follow whenever."""
    for handle in list(uc._callbacks):  # the binding's registry of Python hooks; no public listing
        uc.hook_del(handle)
    uc._Uc__finalizer()  # the binding's own once-only uc_close, run now instead of at collection
    uc._uch = None  # a stray later call fails with a Unicorn error instead of touching freed memory
    global _ENGINES_CLOSED
    _ENGINES_CLOSED = True


def collect_closed() -> None:
    """Call before building a new machine: what the closed ones left in reference cycles (the binding's
    hook thunks, pyelftools' structures) is collected, and the heap QEMU fragmented is trimmed,
    so a process that boots hundreds of times (a test suite) stays the size of one boot."""
    global _ENGINES_CLOSED, _TRIM
    if not _ENGINES_CLOSED:
        return
    _ENGINES_CLOSED = False
    gc.collect()
    if _TRIM is None:
        try:
            _TRIM = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _TRIM = False  # not glibc
    if _TRIM:
        _TRIM(0)

