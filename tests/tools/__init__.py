"""Go-built test tools (one wrapper module per tool pins its version; build.sh builds and caches)."""

from __future__ import annotations

import subprocess
from pathlib import Path

BUILD = Path(__file__).with_name("build.sh")


def build(tool: str) -> Path:
    """The directory holding a tool's binaries: built from the Go module proxy once, then cached."""
    done = subprocess.run(["bash", str(BUILD), tool], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building {tool} failed:\n{done.stderr.strip()}")
    return Path(done.stdout.strip())
