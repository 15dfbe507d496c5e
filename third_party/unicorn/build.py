#!/usr/bin/env python3
"""Build Unicorn from its own PyPI sdist with the patches in `patches/`, for x86 only, and install the
library into the venv's `unicorn` package (docs/unicorn-notes.md, "The patched build").

    .venv/bin/python third_party/unicorn/build.py          # what `make` runs after `pip install -e`

Steps: fetch the sdist of the pinned version with pip and check its sha256; unpack it; apply the
patches strictly (every hunk where it says, no fuzz); configure with cmake and build the shared
library with ninja (at most 2 jobs); copy it into the cache, `.venv/unicorn-build/<key>/`, keyed by
the version, the sdist, the build settings and the patches; then replace `unicorn/lib/libunicorn.so.2`
(the wheel's library is kept in the cache first, under `stock-<version>/`) and write the marker
`libunicorn.so.2.aeth-build` next to it, which `emulator.machine.unicorn_build` reads. A second run
with the same key only checks the installed library's hash; builds of other patch sets are removed.

When anything fails, the wheel's library is put back (if it had been replaced), ONE line is printed,
"aeth-emu: patched Unicorn not built (<reason>); using the stock wheel, stores are slower", and the
exit status is still 0 so that `make` goes on; the build's own output is in `<cache>/build.log`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path

VERSION = "2.1.4"
SDIST = f"unicorn-{VERSION}.tar.gz"
SDIST_SHA256 = "00567a70e323f749b419cd86bee4f9115beab7ebba32194581c090cbb7c59cff"
LIBRARY = "libunicorn.so.2"
MARKER_SUFFIX = ".aeth-build"
HERE = Path(__file__).resolve().parent
PATCHES = HERE / "patches"
JOBS = 2  # the project's machines have 2 cores; never more
NOTICE = "aeth-emu: patched Unicorn not built ({reason}); using the stock wheel, stores are slower"
# Everything that changes the built library besides the sources and patches goes into the cache key.
# The source and build directories are mapped to fixed names so the library does not depend on where
# it was built, and SOURCE_DATE_EPOCH pins any embedded date.
CMAKE_SETTINGS = (
    "-G", "Ninja",
    "-DCMAKE_BUILD_TYPE=Release",
    "-DUNICORN_ARCH=x86",
    "-DBUILD_SHARED_LIBS=ON",
    "-DUNICORN_BUILD_TESTS=OFF",
    "-DUNICORN_INSTALL=OFF",
    "-DUNICORN_LEGACY_STATIC_ARCHIVE=OFF",
)
SOURCE_DATE_EPOCH = "1700000000"
RECIPE = 1  # bump when this script builds differently


class BuildError(Exception):
    """A reason the patched library could not be built or installed (the notice's `<reason>`)."""


# --- the patch set -------------------------------------------------------------------------------

def patch_files(patches: Path = PATCHES) -> list[Path]:
    files = sorted(patches.glob("*.patch"))
    if not files:
        raise BuildError(f"no patches in {patches}")
    return files


def patch_set_hash(patches: Path = PATCHES) -> str:
    """The patch set's identity: sha256 over the patch files' names and contents, 12 hex digits."""
    h = hashlib.sha256()
    for path in patch_files(patches):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def build_key(patches: Path = PATCHES) -> str:
    """The cache key: version, sdist, build settings and patch set."""
    h = hashlib.sha256(json.dumps([VERSION, SDIST_SHA256, CMAKE_SETTINGS, SOURCE_DATE_EPOCH, RECIPE,
                                   patch_set_hash(patches)]).encode())
    return f"{VERSION}-{patch_set_hash(patches)}-{h.hexdigest()[:8]}"


HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def parse_patch(text: str) -> list[tuple[str, list[tuple[int, list[str], list[str]]]]]:
    """A unified diff as [(path, [(old_start, old_lines, new_lines)])]; text before the first file is
    the patch's description and is skipped."""
    files: list[tuple[str, list]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old, new = line[4:].split("\t")[0], lines[i + 1][4:].split("\t")[0]
            if old == "/dev/null" or new == "/dev/null" or not new.startswith("b/"):
                raise BuildError(f"unsupported file header {line!r}")
            files.append((new[2:], []))
            i += 2
            continue
        m = HUNK.match(line)
        if m:
            if not files:
                raise BuildError("hunk before any file header")
            old_count = int(m.group(2) or 1)
            new_count = int(m.group(4) or 1)
            old_lines: list[str] = []
            new_lines: list[str] = []
            i += 1
            while len(old_lines) < old_count or len(new_lines) < new_count:
                if i >= len(lines):
                    raise BuildError("truncated hunk")
                body = lines[i]
                tag, rest = (body[:1], body[1:]) if body else (" ", "")
                if tag == " ":
                    old_lines.append(rest)
                    new_lines.append(rest)
                elif tag == "-":
                    old_lines.append(rest)
                elif tag == "+":
                    new_lines.append(rest)
                elif tag != "\\":
                    raise BuildError(f"bad hunk line {body!r}")
                i += 1
            files[-1][1].append((int(m.group(1)), old_lines, new_lines))
            continue
        i += 1
    if not files:
        raise BuildError("no files in patch")
    return files


def apply_patch(patch: Path, root: Path) -> None:
    """Apply `patch` (paths relative to `root`, -p1) strictly: each hunk exactly at its line."""
    for rel, hunks in parse_patch(patch.read_text()):
        target = root / rel
        if not target.is_file():
            raise BuildError(f"{patch.name}: {rel} is not in the sdist")
        text = target.read_text()
        lines = text.split("\n")
        offset = 0
        for start, old, new in hunks:
            at = start - 1 + offset if old else start + offset
            if lines[at:at + len(old)] != old:
                raise BuildError(f"{patch.name} does not apply to {rel} at line {start}")
            lines[at:at + len(old)] = new
            offset += len(new) - len(old)
        target.write_text("\n".join(lines))


# --- the installed package -----------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Installed:
    """The `unicorn` distribution in `site` (default: wherever this interpreter finds it)."""

    def __init__(self, site: Path | None = None) -> None:
        dists = list(metadata.distributions(name="unicorn", path=[str(site)])) if site else \
            [metadata.distribution("unicorn")] if _has_unicorn() else []
        if not dists:
            raise BuildError(f"no unicorn package installed{f' in {site}' if site else ''}")
        dist = dists[0]
        self.version = dist.version
        if self.version != VERSION:
            raise BuildError(f"unicorn {self.version} is installed; the patches are for {VERSION}")
        entry = next((f for f in dist.files or () if f.as_posix() == f"unicorn/lib/{LIBRARY}"), None)
        if entry is None or entry.hash is None or entry.hash.mode != "sha256":
            raise BuildError(f"the unicorn wheel's RECORD lists no sha256 for lib/{LIBRARY}")
        self.library = Path(dist.locate_file(entry)).resolve()
        # RECORD holds the wheel's own hash of the file: what "the stock library" is.
        self.stock_sha256 = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4)).hex()

    @property
    def marker(self) -> Path:
        return self.library.with_name(LIBRARY + MARKER_SUFFIX)

    def current_sha256(self) -> str:
        return sha256_file(self.library)


def _has_unicorn() -> bool:
    try:
        metadata.distribution("unicorn")
    except metadata.PackageNotFoundError:
        return False
    return True


def default_cache() -> Path:
    """`<venv>/unicorn-build` for the venv running this script."""
    return Path(sys.prefix) / "unicorn-build"


def stock_library(installed: Installed, cache: Path) -> Path:
    """A verified copy of the wheel's library: kept in the cache, taken from the package while it is
    stock, or downloaded again with pip (`--only-binary`) when neither is at hand."""
    kept = cache / f"stock-{VERSION}" / LIBRARY
    if kept.is_file() and sha256_file(kept) == installed.stock_sha256:
        return kept
    kept.parent.mkdir(parents=True, exist_ok=True)
    if installed.current_sha256() == installed.stock_sha256:
        _copy_atomic(installed.library, kept)
        return kept
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        _run([sys.executable, "-m", "pip", "download", "-q", f"unicorn=={VERSION}", "--only-binary", ":all:",
              "--no-deps", "-d", tmp], log=None, what="pip download of the unicorn wheel")
        import zipfile

        for wheel in Path(tmp).glob("unicorn-*.whl"):
            with zipfile.ZipFile(wheel) as z:
                data = z.read(f"unicorn/lib/{LIBRARY}")
            if hashlib.sha256(data).hexdigest() == installed.stock_sha256:
                (Path(tmp) / LIBRARY).write_bytes(data)
                _copy_atomic(Path(tmp) / LIBRARY, kept)
                return kept
    raise BuildError("the stock library is neither installed, kept nor downloadable")


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dst)  # a running process keeps the old file; new ones load the new one


def marker_for(library: Path, patches: Path = PATCHES) -> dict:
    return {"build": "aeth-emu patched Unicorn", "unicorn": VERSION, "patch_set": patch_set_hash(patches),
            "patches": [p.name for p in patch_files(patches)], "key": build_key(patches),
            "library_sha256": sha256_file(library)}


def install(library: Path, installed: Installed, marker: dict | None) -> None:
    """Put `library` in the package; `marker` None means it is the stock library (no marker)."""
    if installed.current_sha256() != sha256_file(library):
        _copy_atomic(library, installed.library)
    if marker is None:
        installed.marker.unlink(missing_ok=True)
    else:
        tmp = installed.marker.with_name(installed.marker.name + ".tmp")
        tmp.write_text(json.dumps(marker, indent=1) + "\n")
        os.replace(tmp, installed.marker)


def restore_stock(installed: Installed, cache: Path) -> None:
    if installed.current_sha256() != installed.stock_sha256:
        install(stock_library(installed, cache), installed, None)
    else:
        installed.marker.unlink(missing_ok=True)


# --- the build -----------------------------------------------------------------------------------

def _run(command: list[str], log, what: str, cwd: Path | None = None, env: dict | None = None) -> None:
    if log is not None:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
    result = subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=log if log is not None else subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise BuildError(f"{what} failed (exit {result.returncode})")


def _tool(name: str, log) -> str:
    """`cmake` or `ninja` from PATH or the venv; pip-installs the PyPI wheel into the venv if missing."""
    venv_bin = Path(sys.executable).parent
    found = shutil.which(name) or shutil.which(name, path=str(venv_bin))
    if found:
        return found
    _run([sys.executable, "-m", "pip", "install", "-q", name], log, f"pip install {name}")
    found = shutil.which(name, path=str(venv_bin))
    if not found:
        raise BuildError(f"{name} not found after pip install {name}")
    return found


def fetch_sdist(cache: Path, sdist: Path | None, log) -> Path:
    """The pinned sdist, checked: `sdist` if given, else the cached download, else `pip download`."""
    if sdist is None:
        sdist = cache / "sdist" / SDIST
        if not sdist.is_file():
            sdist.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=sdist.parent) as tmp:
                _run([sys.executable, "-m", "pip", "download", "-q", f"unicorn=={VERSION}", "--no-binary", ":all:",
                      "--no-deps", "-d", tmp], log, "pip download of the unicorn sdist")
                got = Path(tmp) / SDIST
                if not got.is_file():
                    raise BuildError(f"pip download did not produce {SDIST}")
                os.replace(got, sdist)
    if not sdist.is_file():
        raise BuildError(f"{sdist} not found")
    digest = sha256_file(sdist)
    if digest != SDIST_SHA256:
        raise BuildError(f"{sdist.name} has sha256 {digest[:12]}…, expected {SDIST_SHA256[:12]}…")
    return sdist


def build(cache: Path, patches: Path = PATCHES, sdist: Path | None = None, jobs: int = JOBS) -> Path:
    """The patched library in the cache, built now unless the key is already there."""
    key = build_key(patches)
    out = cache / key / LIBRARY
    if out.is_file() and (cache / key / "build.json").is_file():
        _prune(cache, key)
        return out
    cache.mkdir(parents=True, exist_ok=True)
    if not (shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")):
        raise BuildError("no C compiler (cc) found")
    work = cache / f"work-{key}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        _build_in(work, cache, key, out, patches, sdist, jobs)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the log stays
    _prune(cache, key)
    return out


def _prune(cache: Path, key: str) -> None:
    """Drop the builds of other patch sets."""
    for stale in cache.glob(f"{VERSION}-*"):
        if stale.name != key:
            shutil.rmtree(stale, ignore_errors=True)


def _build_in(work: Path, cache: Path, key: str, out: Path, patches: Path, sdist: Path | None, jobs: int) -> None:
    started = time.monotonic()
    with open(cache / "build.log", "w") as log:
        source = fetch_sdist(cache, sdist, log)
        cmake, ninja = _tool("cmake", log), _tool("ninja", log)
        work.mkdir(parents=True)
        with tarfile.open(source) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(work, filter="data")
            else:  # Python < 3.11.4: refuse what the data filter would
                for member in tar.getmembers():
                    name = Path(member.name)
                    if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
                        raise BuildError(f"{source.name}: unexpected member {member.name}")
                tar.extractall(work)
        root = work / f"unicorn-{VERSION}"
        src = root / "src"
        for patch in patch_files(patches):
            log.write(f"applying {patch.name}\n")
            apply_patch(patch, src)
        build_dir = root / "build"
        prefix_map = (f"-ffile-prefix-map={src}=unicorn-{VERSION}/src "
                      f"-ffile-prefix-map={build_dir}=unicorn-{VERSION}/build")
        env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH)
        _run([cmake, "-S", str(src), "-B", str(build_dir), *CMAKE_SETTINGS, f"-DCMAKE_MAKE_PROGRAM={ninja}",
              f"-DCMAKE_C_FLAGS={prefix_map}"], log, "cmake configure", env=env)
        _run([ninja, "-C", str(build_dir), f"-j{max(1, min(jobs, JOBS))}", "unicorn"], log, "ninja build", env=env)
        built = build_dir / LIBRARY
        if not built.is_file():
            raise BuildError(f"the build made no {LIBRARY}")
        (cache / key).mkdir(parents=True, exist_ok=True)
        _copy_atomic(built, out)
        marker = marker_for(out, patches)
        marker["build_seconds"] = round(time.monotonic() - started, 1)
        (out.parent / (LIBRARY + MARKER_SUFFIX)).write_text(json.dumps(marker, indent=1) + "\n")
        (cache / key / "build.json").write_text(json.dumps(marker, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--site", type=Path, help="site-packages holding the unicorn package (default: this Python's)")
    ap.add_argument("--cache", type=Path, help="cache directory (default: <venv>/unicorn-build)")
    ap.add_argument("--patches", type=Path, default=PATCHES, help="patch directory")
    ap.add_argument("--sdist", type=Path, help=f"use this {SDIST} instead of downloading it (still checked)")
    ap.add_argument("--jobs", type=int, default=JOBS, help=f"ninja jobs (at most {JOBS})")
    ap.add_argument("--stock", action="store_true", help="put the wheel's own library back and stop")
    args = ap.parse_args(argv)
    cache = args.cache or default_cache()
    installed = None
    try:
        installed = Installed(args.site)
        cache.mkdir(parents=True, exist_ok=True)
        stock_library(installed, cache)  # keep the wheel's library before it is ever replaced
        if args.stock:
            restore_stock(installed, cache)
            print(f"aeth-emu: the stock Unicorn {VERSION} library is installed")
            return 0
        cached = (cache / build_key(args.patches) / "build.json").is_file()
        library = build(cache, args.patches, args.sdist, args.jobs)
        marker = json.loads((library.parent / "build.json").read_text())
        if installed.current_sha256() == marker["library_sha256"] and installed.marker.is_file():
            return 0  # already installed: the second `make`
        install(library, installed, marker)
        how = "cached build" if cached else f"built in {marker.get('build_seconds', 0):.0f} s"
        print(f"aeth-emu: patched Unicorn {VERSION} installed (patch set {marker['patch_set']}, {how})")
        return 0
    except Exception as exc:  # any failure: the stock library, one line, and `make` goes on
        reason = str(exc) if isinstance(exc, BuildError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, BuildError) and "failed" in reason and (cache / "build.log").is_file():
            reason += f", see {cache / 'build.log'}"
        if installed is not None:
            try:
                restore_stock(installed, cache)
            except Exception as again:
                reason += f"; the stock library could not be put back: {again}"
        print(NOTICE.format(reason=" ".join(reason.split())))
        return 0


if __name__ == "__main__":
    sys.exit(main())
