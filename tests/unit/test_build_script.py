"""scripts/build-pjproject.sh refuses what it cannot build, with a clear message, and a
second run over a finished build does nothing."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-pjproject.sh"


def fake_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    return venv


def run(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    full = dict(os.environ, SIPCONF_VENV=str(fake_venv(tmp_path)),
                SIPCONF_CACHE=str(tmp_path / "cache"), **env)
    return subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True,
                          timeout=120)


def test_missing_local_tarball(tmp_path):
    res = run(tmp_path, PJPROJECT_TARBALL=str(tmp_path / "nope.tar.xz"))
    assert res.returncode != 0
    assert "nope.tar.xz: no such file" in res.stderr


def test_not_a_tarball(tmp_path):
    bad = tmp_path / "pj.tar.xz"
    bad.write_text("not a tarball")
    res = run(tmp_path, PJPROJECT_TARBALL=str(bad))
    assert res.returncode != 0 and "is not a readable tarball" in res.stderr


@pytest.mark.parametrize("minor, message", [("13", "older than 2.14"),
                                            (None, "does not look like pjproject")])
def test_too_old_or_not_pjproject(tmp_path, minor, message):
    src = tmp_path / "src" / "pjproject-x"
    src.mkdir(parents=True)
    if minor:
        (src / "version.mak").write_text(
            f"export PJ_VERSION_MAJOR  := 2\nexport PJ_VERSION_MINOR  := {minor}\n"
            "export PJ_VERSION := $(PJ_VERSION_MAJOR).$(PJ_VERSION_MINOR)\n"
        )
    else:
        (src / "README").write_text("something else")
    tarball = tmp_path / "pjproject.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(src, arcname="pjproject-x")
    res = run(tmp_path, PJPROJECT_TARBALL=str(tarball))
    assert res.returncode != 0
    assert message in res.stderr, res.stderr


def test_second_run_does_nothing():
    """The project's own venv has a finished build: the script must notice and stop."""
    venv = Path(sys.prefix)
    if not (venv / "pjproject" / ".sipconf-build").exists():
        pytest.skip("not running from a venv built by scripts/install.sh")
    res = subprocess.run(["bash", str(SCRIPT)], env=dict(os.environ, SIPCONF_VENV=str(venv)),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "nothing to do" in res.stderr
