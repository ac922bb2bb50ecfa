"""Command-line pieces the jobs and the generator share."""

from __future__ import annotations

import argparse
import datetime as dt


def iso_date(text: str) -> dt.date:
    """An argparse type: a YYYY-MM-DD day."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def add_result_file(parser: argparse.ArgumentParser, what: str) -> None:
    """`--result-file`: where a job writes `what` as JSON for the launcher to read back."""
    parser.add_argument(
        "--result-file", help=f"write {what} here as JSON: a local path or a URI in the warehouse's storage (s3://...)"
    )


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value
