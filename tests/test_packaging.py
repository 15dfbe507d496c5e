"""Installable for real: `python -m build` makes an sdist and, from it, a wheel; the wheel installed
into a fresh venv boots an image from another directory with the ROM and parameters it carries."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support.paths import ROOT

pytestmark = [pytest.mark.unit, pytest.mark.slow]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


def test_the_wheel_carries_what_commands_need_at_run_time(dist, kernel):
    wheel = next(dist.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("emulator/data/firmware.bin", "emulator/data/kernel.elf", "emulator/cycles/cycle_model.toml"):
        assert needed in names
    assert any(n.startswith("emulator/cycles/_cyclemodel") and n.endswith(".so") for n in names)
    assert any(n.startswith("emulator/calibrate/_hostrun") and n.endswith(".so") for n in names)
    data = zipfile.ZipFile(wheel).read("emulator/data/kernel.elf")
    assert data == kernel.read_bytes()  # the real image, not a link to a file outside the package
    assert next(dist.glob("*.tar.gz")).stat().st_size > 0


def test_an_installed_wheel_boots_from_any_directory(dist, tmp_path, kernel):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # The wheel itself goes in with no dependencies; unicorn, capstone & co. come from this test's
    # environment through a path file, appended after the venv's own site-packages, so `emulator`
    # can only be the installed wheel's.
    wheel = next(dist.glob("*.whl"))
    with zipfile.ZipFile(wheel) as whl:
        whl.extractall(site)
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    image = elsewhere / "my.elf"
    image.write_bytes(kernel.read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import emulator, sys; print(emulator.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, env=env, timeout=60)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    done = subprocess.run([str(python), "-m", "emulator", "boot", "my.elf", "--cmdline", "test=bump"], cwd=elsewhere,
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "test result: ok." in done.stdout and "Traceback" not in done.stderr
    # bench and validate find their default image through the package too: `--help` names it
    helped = subprocess.run([str(python), "-m", "emulator", "bench", "--help"], cwd=elsewhere,
                            capture_output=True, text=True, env=env, timeout=60)
    assert helped.returncode == 0 and "shipped with aeth-emu" in helped.stdout
