"""Which Unicorn library this process runs on: the project's patched build or the stock wheel.

`make` builds Unicorn from its sdist with the patches in third_party/unicorn/patches and installs
the library into the `unicorn` package, with a marker file next to it (`libunicorn.so.2.aeth-build`,
JSON: the patch set's hash and the library's sha256). The build is "patched" only when the library
loaded is the one the marker describes; otherwise it is the stock wheel's (the library the unicorn
distribution's RECORD lists) or some other build (e.g. one picked with LIBUNICORN_PATH).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

MARKER_SUFFIX = ".aeth-build"


@dataclass(frozen=True)
class UnicornBuild:
    kind: str  # "patched", "stock" or "other"
    version: str  # the unicorn package's version
    library: str  # the loaded libunicorn's path
    patch_set: str | None = None  # the patch set's hash (patched builds only)

    @property
    def patched(self) -> bool:
        return self.kind == "patched"

    def __str__(self) -> str:
        if self.patched:
            return f"Unicorn {self.version}, patched build (patch set {self.patch_set})"
        if self.kind == "stock":
            return f"Unicorn {self.version}, stock wheel (not patched: stores and memory hooks take slower paths)"
        return f"Unicorn {self.version}, unpatched library {self.library}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _wheel_sha256(name: str) -> str | None:
    """The sha256 the installed unicorn wheel's RECORD gives for its `lib/<name>`."""
    try:
        files = metadata.distribution("unicorn").files or ()
    except metadata.PackageNotFoundError:
        return None
    entry = next((f for f in files if f.as_posix() == f"unicorn/lib/{name}"), None)
    if entry is None or entry.hash is None or entry.hash.mode != "sha256":
        return None
    value = entry.hash.value
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()


@functools.cache
def loaded_build() -> UnicornBuild:
    """The build of the libunicorn that the `unicorn` package has loaded (loading it if need be)."""
    import unicorn
    from unicorn.unicorn_py3.unicorn import uclib

    library = Path(uclib._name).resolve()  # ctypes.CDLL keeps the path it loaded
    version = unicorn.__version__
    digest = _sha256(library)
    try:
        marker = json.loads(library.with_name(library.name + MARKER_SUFFIX).read_text())
    except (OSError, ValueError):
        marker = None
    if isinstance(marker, dict) and marker.get("library_sha256") == digest and marker.get("unicorn") == version:
        return UnicornBuild("patched", version, str(library), str(marker.get("patch_set")))
    kind = "stock" if digest == _wheel_sha256(library.name) else "other"
    return UnicornBuild(kind, version, str(library))
