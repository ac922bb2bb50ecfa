"""Failures of Spark and Iceberg as the jobs see them: the Java exceptions behind a PySpark error,
one line that names the cause, and Iceberg commit conflicts retried with a bounded backoff.

Two writers of one Iceberg table (the stream, maintenance) both commit optimistically: the one that
commits second finds the table changed under it. Iceberg re-applies a plain append itself
(`commit.retry.num-retries`), but when the other commit removed or changed files this one depends on
it gives up with a CommitFailedException or a ValidationException. The work is then done again from
the new table state, which is always safe because nothing of a failed commit was committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from py4j.java_gateway import is_instance_of
from py4j.protocol import Py4JJavaError
from pyspark import SparkContext

Result = TypeVar("Result")

CONFLICT_EXCEPTIONS = (
    "org.apache.iceberg.exceptions.CommitFailedException",
    "org.apache.iceberg.exceptions.ValidationException",
)
# rewrite_data_files with partial progress commits each group of files on its own and reports its
# failed group commits (conflicts) in one summary error without their cause, after the other
# groups committed.
PARTIAL_PROGRESS_FAILED = "rewrite commits failed"


def java_chain(error: BaseException) -> list:
    """The Java exceptions behind a PySpark error, outermost first; none for a Python error."""
    chain = []
    throwable = getattr(error, "java_exception", None) or getattr(error, "_origin", None)
    while throwable is not None:
        chain.append(throwable)
        throwable = throwable.getCause()
    return chain


def messages(error: BaseException) -> list[str]:
    """The text of an error and of every error it wraps, outermost first."""
    chain = java_chain(error)
    if not chain:  # a Python error, or one PySpark rebuilt from a message and a cause
        nested = getattr(error, "_cause", None)
        return [str(error) or type(error).__name__] + (messages(nested) if nested is not None else [])
    outermost = chain[0].toString() if isinstance(error, Py4JJavaError) else str(error)
    return [outermost] + [throwable.toString() for throwable in chain[1:]]


def one_line(error: BaseException, limit: int = 500) -> str:
    """An error in one line: its message and, when it wraps others, the innermost cause."""
    texts = messages(error)
    first, root = (text.strip().splitlines()[0][:limit] if text.strip() else "" for text in (texts[0], texts[-1]))
    return first if root in first else f"{first} (cause: {root})"


def is_commit_conflict(error: BaseException) -> bool:
    """Whether `error` is an Iceberg commit that lost to a concurrent one. A ValidationException
    that is no conflict (a filter naming no column, say) is retried too: it costs the few attempts
    and still ends with its own cause."""
    chain = java_chain(error)
    return any(
        is_instance_of(SparkContext._gateway, throwable, name) for throwable in chain for name in CONFLICT_EXCEPTIONS
    ) or any(PARTIAL_PROGRESS_FAILED in (throwable.getMessage() or "") for throwable in chain)


class CommitConflict(RuntimeError):
    """The commits of a piece of work kept conflicting after every attempt."""


@dataclass(frozen=True)
class ConflictRetry:
    """How often work that lost a commit race is done again, and the pauses between: doubling from
    `first_pause` up to `max_pause`, so a busy writer gets room without the work waiting long."""

    attempts: int = 4
    first_pause: float = 5.0
    max_pause: float = 60.0

    def pauses(self) -> list[float]:
        """The pause before each attempt after the first."""
        return [min(self.first_pause * 2**n, self.max_pause) for n in range(self.attempts - 1)]


def retry_on_conflict(
    work: Callable[[], Result],
    what: str,
    policy: ConflictRetry,
    *,
    is_conflict: Callable[[BaseException], bool] = is_commit_conflict,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = lambda line: print(line, flush=True),
) -> tuple[Result, int]:
    """Run `work`; on a commit conflict log it (`what` names the table and the step) and run it again
    after a pause, up to `policy.attempts` times in all. Returns the result and the conflicts got past;
    raises CommitConflict, with the last cause, when every attempt conflicted. Any other error is
    raised at once."""
    pauses = policy.pauses()
    attempt = 1
    while True:
        try:
            return work(), attempt - 1
        except Exception as error:
            if not is_conflict(error):
                raise
            cause = one_line(error, limit=300)
            if attempt >= policy.attempts:
                raise CommitConflict(f"{what}: commit conflict on each of {attempt} attempts; last: {cause}") from error
            pause = pauses[attempt - 1]
            log(f"{what}: commit conflict on attempt {attempt} of {policy.attempts} ({cause}); again in {pause:g}s")
        sleep(pause)
        attempt += 1
