"""The machine's `in`/`out` hooks, in native code (native/ports.c, built as emulator.machine._ports).

COM1's transmit register and line status register are served in C while the UART is in its
plain transmit state; everything else is passed to the Python device bus. Serial bytes reach
the host a line at a time from a flusher thread (every FLUSH_SECONDS) and at the end of a run,
so output streams live at tens of MB/s with no Python per byte.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from collections.abc import Callable

from unicorn import UC_HOOK_INSN, Uc, UcError
from unicorn import x86_const as x86
from unicorn.unicorn_py3.unicorn import uclib

from emulator.errors import NativeError

FLUSH_SECONDS = 0.02
TAKE = 1 << 20  # bytes taken from the native buffer per call

_IN = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int32)
_OUT = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint32)


def _library() -> ctypes.CDLL:
    try:
        from emulator.machine import _ports
    except ImportError as exc:
        raise NativeError("the native port I/O is not built: run `pip install -e .` in the project "
                              "(it compiles emulator/machine/native/ports.c; a C compiler is needed)") from exc
    lib = ctypes.CDLL(_ports.__file__)
    p, u32, u64, size = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_size_t
    for name, res, args in (("ports_new", p, [u32, u32, u32, _IN, _OUT]), ("ports_free", None, [p]),
                            ("ports_set_direct", None, [p, ctypes.c_int]), ("ports_set_stopped", None, [p, ctypes.c_int]),
                            ("ports_serial_bytes", u64, [p]), ("ports_oom", ctypes.c_int, [p]),
                            ("ports_publish", None, [p]), ("ports_take", size, [p, ctypes.c_char_p, size]),
                            ("ports_set_waiting", None, [p, ctypes.c_int]),
                            ("ports_hook_in", p, []), ("ports_hook_out", p, [])):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


class NativePorts:
    """One machine's port I/O: `read(port, size)` and `write(port, size, value)` serve the ports C
    does not; `deliver(bytes)` receives serial output."""

    def __init__(self, thr: int, lsr: int, lsr_value: int, read: Callable[[int, int], int],
                 write: Callable[[int, int, int], None], deliver: Callable[[bytes], None]) -> None:
        self._lib = _library()
        self._deliver = deliver
        # Kept alive here for as long as the native state may call them.
        self._read, self._write = _IN(read), _OUT(write)
        self._state = self._lib.ports_new(thr, lsr, lsr_value, self._read, self._write)
        if not self._state:
            raise MemoryError("no memory for the port I/O state")
        weakref.finalize(self, self._lib.ports_free, self._state)
        self._buffer = ctypes.create_string_buffer(TAKE)
        self._take_lock = threading.Lock()  # one taker at a time keeps the output in order

    def attach(self, uc: Uc) -> None:
        for kind, fn in ((x86.UC_X86_INS_IN, self._lib.ports_hook_in()), (x86.UC_X86_INS_OUT, self._lib.ports_hook_out())):
            handle = ctypes.c_size_t()
            err = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_INSN, ctypes.c_void_p(fn),
                                    ctypes.c_void_p(self._state), ctypes.c_uint64(1), ctypes.c_uint64(0), ctypes.c_int(kind))
            if err:
                raise NativeError(f"Unicorn refused the native port hook: {UcError(err)}")

    def set_direct(self, on: bool) -> None:
        self._lib.ports_set_direct(self._state, int(on))

    def set_stopped(self, on: bool) -> None:
        self._lib.ports_set_stopped(self._state, int(on))

    @property
    def serial_bytes(self) -> int:
        return self._lib.ports_serial_bytes(self._state)

    def flush(self, everything: bool = False) -> None:
        """Deliver what is ready; `everything`: also the partial last line (the run is over)."""
        if everything:
            self._lib.ports_publish(self._state)
        with self._take_lock:
            while True:
                n = self._lib.ports_take(self._state, self._buffer, TAKE)
                if not n:
                    break
                self._deliver(ctypes.string_at(self._buffer, n))

    def check(self) -> None:
        """After a run: output the native side could not keep is an error, never silently lost."""
        if self._lib.ports_oom(self._state):
            raise MemoryError("serial output was lost: no memory for its buffer")

    def set_waiting(self, on: bool) -> None:
        self._lib.ports_set_waiting(self._state, int(on))

    def streaming(self) -> _Flusher:
        """While a run goes on: deliver ready lines every FLUSH_SECONDS from a thread."""
        return _Flusher(self)


class _Flusher:
    def __init__(self, ports: NativePorts) -> None:
        self._ports = ports
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="serial-flush", daemon=True)

    def _loop(self) -> None:
        while not self._done.wait(FLUSH_SECONDS):
            self._ports.flush()

    def __enter__(self) -> _Flusher:
        self._thread.start()
        self._ports.set_waiting(True)
        return self

    def __exit__(self, *exc) -> None:
        self._ports.set_waiting(False)
        self._done.set()
        self._thread.join()
        self._ports.flush(everything=True)
        self._ports.check()
