"""`make ui`: the Dagster UI and daemon on the embedded default's data (what `make demo` wrote).

python -m dagster_repo.dev.ui [--port 3000]      Ctrl-C stops both cleanly.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys

from dagster_repo.dev.demo import prepare_instance
from shopstream import settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dagster_repo.dev.ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    settings.UI_PORT.add_argument(parser, "--port", type=int)
    args = parser.parse_args(argv)
    home = prepare_instance()
    dagster = shutil.which("dagster", path=os.path.dirname(sys.executable)) or shutil.which("dagster")
    if dagster is None:
        print("error: the dagster command is missing; run `make ui` (it installs the project first)", file=sys.stderr)
        return 1
    print(f"Dagster UI on http://{args.host}:{args.port} (instance {home}); Ctrl-C stops it", flush=True)
    # A parent that ignored these signals (a script, nohup) would pass that on and Ctrl-C or
    # `kill` would not stop dagster dev; give it the default handling back.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    os.execv(dagster, [dagster, "dev", "-m", "dagster_repo.definitions", "-h", args.host, "-p", str(args.port)])


if __name__ == "__main__":
    raise SystemExit(main())
