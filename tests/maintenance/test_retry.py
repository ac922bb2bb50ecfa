"""Commit-conflict retries and the maintenance options, without a JVM: the retry takes its sleeper
and logger as arguments, so its pauses and lines are checked without waiting."""

from __future__ import annotations

import datetime as dt

import pytest

from shopstream import schema
from shopstream.spark import maintenance
from shopstream.spark.errors import CommitConflict, ConflictRetry, retry_on_conflict


class Conflict(Exception):
    pass


def flaky(conflicts: int, result: str = "done"):
    """Work that conflicts `conflicts` times, then returns `result`."""
    calls = []

    def work() -> str:
        calls.append(len(calls) + 1)
        if len(calls) <= conflicts:
            raise Conflict(f"Cannot commit, found new position delete for replaced data file #{len(calls)}")
        return result

    return work, calls


def retry(work, policy: ConflictRetry):
    slept: list[float] = []
    lines: list[str] = []
    outcome = retry_on_conflict(
        work,
        "maintenance silver_user_sessions rewrite_data_files",
        policy,
        is_conflict=lambda error: isinstance(error, Conflict),
        sleep=slept.append,
        log=lines.append,
    )
    return outcome, slept, lines


def test_pauses_double_up_to_the_cap():
    assert ConflictRetry(attempts=4, first_pause=5).pauses() == [5, 10, 20]
    assert ConflictRetry(attempts=6, first_pause=20, max_pause=60).pauses() == [20, 40, 60, 60, 60]
    assert ConflictRetry(attempts=1).pauses() == []


def test_conflicts_are_retried_with_each_attempt_logged():
    work, calls = flaky(conflicts=2)
    (result, conflicts), slept, lines = retry(work, ConflictRetry(attempts=4, first_pause=1))
    assert (result, conflicts, calls, slept) == ("done", 2, [1, 2, 3], [1, 2])
    assert lines == [
        "maintenance silver_user_sessions rewrite_data_files: commit conflict on attempt 1 of 4 (Cannot commit, "
        "found new position delete for replaced data file #1); again in 1s",
        "maintenance silver_user_sessions rewrite_data_files: commit conflict on attempt 2 of 4 (Cannot commit, "
        "found new position delete for replaced data file #2); again in 2s",
    ]


def test_a_conflict_on_every_attempt_fails_with_one_line_naming_the_cause():
    work, calls = flaky(conflicts=9)
    with pytest.raises(CommitConflict) as failure:
        retry(work, ConflictRetry(attempts=3, first_pause=0.5))
    assert calls == [1, 2, 3]
    assert str(failure.value) == (
        "maintenance silver_user_sessions rewrite_data_files: commit conflict on each of 3 attempts; last: "
        "Cannot commit, found new position delete for replaced data file #3"
    )


def test_any_other_failure_is_raised_at_once():
    def broken() -> str:
        raise ValueError("the catalog is unreachable")

    with pytest.raises(ValueError, match="unreachable"):
        retry(broken, ConflictRetry(attempts=4))


def test_compaction_commits_day_by_day_and_applies_the_deletes_of_merge_on_read_tables():
    sessions = maintenance.compaction_options(schema.SILVER_USER_SESSIONS)
    page_views = maintenance.compaction_options(schema.SILVER_PAGE_VIEWS)
    assert page_views == {
        "min-input-files": "2",
        "partial-progress.enabled": "true",
        "partial-progress.max-commits": "10",
        "partial-progress.max-failed-commits": "0",
    }
    assert sessions == {**page_views, "delete-file-threshold": "1", "remove-dangling-deletes": "true"}
    closed = dt.date(2026, 11, 3)
    assert (
        maintenance.closed_days(schema.SILVER_USER_SESSIONS, closed)
        == "session_start < TIMESTAMP '2026-11-03 00:00:00'"
    )
    assert schema.SILVER_PRODUCTS not in maintenance.COMPACTED
    assert {schema.SILVER_USER_SESSIONS, schema.BRONZE_EVENTS} <= maintenance.MANIFESTS_REWRITTEN
    assert schema.GOLD_SALES_SUMMARY not in maintenance.MANIFESTS_REWRITTEN


def test_bad_retry_arguments_are_usage_errors(capsys):
    assert maintenance.main(["--conflict-attempts", "0"]) == 2
    assert "--conflict-attempts" in capsys.readouterr().err
