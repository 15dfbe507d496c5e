"""A trace as an Apache Parquet file, for pandas, polars or DuckDB: one row per allocator call.

pyarrow is an optional dependency (`pip install 'aeth-emu[parquet]'`), imported only when a
file is written. Rows are built and written in batches (one row group each), so memory stays
the Trace plus one batch. The trace's header, end record and heap-check violations travel as
JSON text in the file's key-value metadata. The columns: docs/trace-format.md, "Parquet export".
"""

from __future__ import annotations

import errno
import json
import os
import stat
from operator import attrgetter
from pathlib import Path

from emulator.errors import OutputError, UsageError
from emulator.files import replace_atomically
from emulator.trace.format import Trace

BATCH = 65_536  # events per record batch and row group
PIP_HINT = "pip install 'aeth-emu[parquet]'"

# (column, type, nullable, the event's attribute): the type is a name `_schema` resolves once pyarrow is in.
COLUMNS = (
    ("seq", "uint64", False, "seq"),
    ("kind", "dict8", False, "kind"),
    ("size", "uint64", False, "size"),
    ("align", "uint64", False, "align"),
    ("ptr", "uint64", True, "ptr"),
    ("old_size", "uint64", True, "old_size"),
    ("result", "uint64", True, "result"),
    ("returned", "bool", False, "returned"),
    ("insn_entry", "uint64", False, "insn_entry"),
    ("insn_return", "uint64", True, "insn_return"),
    ("cycles_entry", "uint64", False, "cycles_entry"),
    ("cycles_return", "uint64", True, "cycles_return"),
    ("call_site", "uint64", False, "call_site"),
    ("return_address", "uint64", False, "return_address"),
    ("caller", "dict32", False, "caller"),
    ("backtrace", "strings", False, "backtrace"),
    ("depth", "uint64", False, "depth"),
    ("heap_used", "uint64", True, "heap.used"),
    ("heap_free", "uint64", True, "heap.free"),
    ("heap_free_blocks", "uint64", True, "heap.free_blocks"),
    ("live_blocks", "uint64", False, "heap.live_blocks"),
    ("live_bytes", "uint64", False, "heap.live_bytes"),
)


def require_pyarrow():
    """pyarrow and pyarrow.parquet, or a UsageError saying how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UsageError(f"exporting to Parquet needs pyarrow, an optional dependency: {PIP_HINT}") from None
    return pyarrow, pyarrow.parquet


def metadata(trace: Trace) -> dict[str, str]:
    """The file's key-value metadata: the header, end record (null if the run was killed) and violations."""
    return {"aeth.header": json.dumps(trace.header), "aeth.end": json.dumps(trace.end),
            "aeth.violations": json.dumps(list(trace.violations))}


def _schema(pa, trace: Trace):
    types = {"uint64": pa.uint64(), "bool": pa.bool_(), "dict8": pa.dictionary(pa.int8(), pa.string()),
             "dict32": pa.dictionary(pa.int32(), pa.string()), "strings": pa.list_(pa.string())}
    fields = [pa.field(name, types[kind], nullable=nullable) for name, kind, nullable, _ in COLUMNS]
    return pa.schema(fields, metadata=metadata(trace))


def _batches(pa, schema, events):
    for start in range(0, len(events), BATCH):
        chunk = events[start:start + BATCH]
        yield pa.record_batch([pa.array(list(map(attrgetter(attribute), chunk)), type=field.type)
                               for field, (_, _, _, attribute) in zip(schema, COLUMNS)], schema=schema)


def export(trace: Trace, path: str | Path) -> int:
    """Write `trace` to `path` as Parquet; returns the number of rows.

    A regular file is replaced atomically (written next to it, then renamed; an existing file
    keeps its mode), a device or FIFO is written, a symlink is written through. A write error
    is one OutputError; without pyarrow, a UsageError that says how to install it."""
    pa, pq = require_pyarrow()
    schema = _schema(pa, trace)

    def write(stream) -> None:
        with pq.ParquetWriter(stream, schema, compression="zstd") as writer:
            for batch in _batches(pa, schema, trace.events):
                writer.write_batch(batch)

    try:
        try:
            mode = os.stat(path).st_mode  # through a symlink
        except FileNotFoundError:
            mode = None
        if mode is not None and stat.S_ISDIR(mode):
            raise OutputError(f"cannot write the Parquet file {path}: it is a directory")
        if mode is not None and not stat.S_ISREG(mode):
            with open(path, "wb") as stream:  # a device or FIFO (/dev/stdout): written, never renamed over
                write(stream)
        else:  # a symlink to a regular file is written through, not replaced
            replace_atomically(os.path.realpath(path), write, mode)
    except OSError as exc:  # pyarrow's own I/O errors are OSErrors too
        if exc.errno == errno.EPIPE or "Broken pipe" in str(exc):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe") from None  # the reader went away: not an error
        raise OutputError(f"cannot write the Parquet file {path}: {exc.strerror or exc}") from None
    return len(trace.events)


