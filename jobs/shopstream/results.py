"""The small machine-readable result every batch job writes (`--result-file`), for the
orchestrator to read back as metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_result(path: str | Path | None, **result: Any) -> None:
    """Write `result` as JSON, atomically (a reader never sees half a file)."""
    if not path:
        return
    path = Path(path)
    if str(path).startswith("s3://"):
        raise ValueError("result files are local paths")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)

