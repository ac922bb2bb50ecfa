"""One entry point for every Spark job, used by both launchers:

python -m shopstream <job> [job arguments]     (python -m shopstream <job> --help for each)
"""

from __future__ import annotations

import sys

from shopstream.catalog import JOBS


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, JOBS))
        listing = "\n".join(f"  {name:<{width}}  {job.description}" for name, job in JOBS.items())
        print(f"{(__doc__ or '').strip()}\n\njobs:\n{listing}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in JOBS:
        print(f"error: unknown job {name!r}; jobs: {', '.join(JOBS)}", file=sys.stderr)
        return 2
    return JOBS[name].entry_point()(rest)


if __name__ == "__main__":
    raise SystemExit(main())
