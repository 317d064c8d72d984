"""Pinned npm packages for the suite's real servers (Azurite, oidc-provider), installed into
the project-local ``.cache/<name>`` (gitignored) by ``npm install`` once per version; CI
reaches the npm registry, and the Makefile installs them before the suite so no test spends
its timeout on a download. A failed install raises with what to check, never skips."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def install_pinned(
    package: str, version: str, ready: Path, error: type[Exception], used_for: str
) -> Path:
    """Install ``package@version`` into ``.cache/<package>`` unless ``ready`` (a file the
    package installs) exists with that version installed; return ``ready``.

    Args:
        error: raised (with the reason) when npm is missing or the install fails.
        used_for: which tests need it, for the message when npm is missing.
    """
    cache = REPO / ".cache" / package
    manifest = cache / "node_modules" / package / "package.json"
    if ready.exists() and manifest.exists() and f'"version": "{version}"' in manifest.read_text():
        return ready
    npm = shutil.which("npm")
    if npm is None:
        raise error(
            f"npm is not installed: {used_for} run {package}, an npm package "
            "(Debian: apt-get install npm; .ci/run installs it)"
        )
    cache.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(cache),
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--loglevel",
            "error",
            f"{package}@{version}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0 or not ready.exists():
        raise error(
            f"npm install {package}@{version} into {cache} failed "
            f"(exit {done.returncode}); is the npm registry reachable?\n{done.stderr[-2000:]}"
        )
    return ready
