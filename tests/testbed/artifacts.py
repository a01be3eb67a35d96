"""Locate what ``scripts/testbed.sh`` installed and cached: the guest kernel, initramfs and QEMU."""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP_HINT = "run `make testbed` (bash scripts/testbed.sh) to install and build it"


class TestbedMissingError(RuntimeError):
    """The real-component testbed is not installed or is incomplete."""


def default_cache_dir() -> Path:
    """The cache folder testbed.sh fills: ``$WSRL_TESTBED_CACHE`` or ``<repo>/.cache/testbed``."""
    override = os.environ.get("WSRL_TESTBED_CACHE")
    return Path(override) if override else REPO_ROOT / ".cache" / "testbed"


def read_manifest(path: Path) -> dict[str, str]:
    """Read the ``KEY='value'`` lines of ``testbed.env``."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, raw = line.partition("=")
        if not sep:
            raise TestbedMissingError(f"{path}: malformed line {line!r}; {SETUP_HINT}")
        parts = shlex.split(raw)
        values[key.strip()] = parts[0] if parts else ""
    return values


@dataclass(frozen=True)
class Testbed:
    """Paths and versions of the cached guest kernel, initramfs and the QEMU binary."""

    __test__ = False  # not a pytest test class, despite its name

    kernel: Path
    initrd: Path
    kernel_release: str
    kernel_package: str
    qemu: Path
    qemu_version: str

    @classmethod
    def load(cls, cache_dir: Path | None = None) -> Testbed:
        """Read the manifest in ``cache_dir`` and check every file it names exists.

        Raises:
            TestbedMissingError: with a message that says what is missing and how to get it.

        """
        cache = cache_dir or default_cache_dir()
        manifest = cache / "testbed.env"
        if not manifest.is_file():
            raise TestbedMissingError(f"testbed not installed: {manifest} is missing; {SETUP_HINT}")
        values = read_manifest(manifest)
        missing_keys = [k for k in ("KERNEL", "INITRD", "QEMU") if not values.get(k)]
        if missing_keys:
            raise TestbedMissingError(f"{manifest} lacks {missing_keys}; {SETUP_HINT}")
        testbed = cls(
            kernel=Path(values["KERNEL"]),
            initrd=Path(values["INITRD"]),
            kernel_release=values.get("KERNEL_RELEASE", ""),
            kernel_package=values.get("KERNEL_PACKAGE", ""),
            qemu=Path(values["QEMU"]),
            qemu_version=values.get("QEMU_VERSION", ""),
        )
        testbed.check()
        return testbed

    def check(self) -> None:
        """Raise :class:`TestbedMissingError` unless the kernel, initramfs and QEMU are present."""
        for label, path in (("guest kernel", self.kernel), ("initramfs", self.initrd)):
            if not path.is_file():
                raise TestbedMissingError(f"{label} {path} is missing; {SETUP_HINT}")
        if not (self.qemu.is_file() and os.access(self.qemu, os.X_OK)) and not shutil.which(str(self.qemu)):
            raise TestbedMissingError(f"QEMU {self.qemu} is not installed; {SETUP_HINT}")
