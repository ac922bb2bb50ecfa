"""The Kubernetes client (dagster_repo/kube/client.py) against a scripted API on 127.0.0.1 and a fake
clock (tests/kube/fake_api.py), in well under a second of real time: retries and their backoff,
deadlines, the watch's resume after a dropped connection and relist after 410 Gone, and the
adoption of an application an earlier attempt left behind. The same client against a real API
server, in real time: tests/kube/test_launcher.py."""

from __future__ import annotations

import json
import types

import pytest
from kubernetes.client.exceptions import ApiException

from dagster_repo.kube import client as kube
from tests.kube.fake_api import RESET, FakeClock, FakeKubeAPI, Reply, Stream, bookmark, error, event, status

pytestmark = pytest.mark.timeout(5)  # real seconds: nothing here may wait out its fake ones

NS = "jobs"
NAME = "gold-daily-sales-2b8f0c1d2e"
APPS = f"/apis/sparkoperator.k8s.io/v1beta2/namespaces/{NS}/sparkapplications"
APP = f"{APPS}/{NAME}"
WATCH = f"{APPS}?watch"
FAR = 3600  # a deadline no test reaches


def application(state: str | None = None, version: str = "10") -> dict:
    obj = {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "SparkApplication",
        "metadata": {
            "name": NAME,
            "namespace": NS,
            "resourceVersion": version,
            "labels": {"dagster.io/run-id": "5f1c9a3e-1b2c-4d5e-8f90-0a1b2c3d4e5f"},
        },
        "spec": {"driver": {"serviceAccount": "shopstream-spark"}},
    }
    if state:
        obj["status"] = {"applicationState": {"state": state}}
    return obj


def body() -> dict:
    obj = application()
    del obj["metadata"]["resourceVersion"]
    return obj


def sent(api: FakeKubeAPI) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in api.requests]


def watched_from(api: FakeKubeAPI) -> list[str]:
    return [r.query["resourceVersion"] for r in api.seen("GET", WATCH)]


def retry_pauses(messages: list[str]) -> list[str]:
    return [m.rsplit("retrying in ", 1)[1] for m in messages if "transient API error" in m]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def api(clock):
    fake = FakeKubeAPI(clock)
    yield fake
    fake.close()
    assert not fake.unscripted, [(r.method, r.path) for r in fake.unscripted]
    assert not fake.left_over(), f"scripted but never requested: {fake.left_over()}"
    assert not fake.errors, fake.errors


@pytest.fixture
def messages() -> list[str]:
    return []


@pytest.fixture
def apps(api, clock, messages, tmp_path) -> kube.SparkApplications:
    return kube.SparkApplications(
        kube.api_client(str(api.kubeconfig(tmp_path / "kubeconfig"))), NS, log=messages.append, clock=clock
    )


def fix_jitter(monkeypatch, draw: float) -> None:
    """random.random() as with_retries sees it: 0 gives the shortest pause (0.8 x), 0.5 the
    nominal one, 1 the longest (1.2 x)."""
    monkeypatch.setattr(kube, "random", types.SimpleNamespace(random=lambda: draw))


# -- retries ---------------------------------------------------------------------------------------


def test_transient_errors_are_retried_with_exponential_backoff_until_success(api, apps, clock, messages, monkeypatch):
    fix_jitter(monkeypatch, 0.5)
    api.script(
        "GET",
        APP,
        error(429, "TooManyRequests", "Too many requests, please try again later."),
        error(500, "InternalError", "etcdserver: leader changed"),
        error(502, "", "bad gateway"),
        error(503, "ServiceUnavailable", "the server is currently unable to handle the request"),
        error(504, "Timeout", "the server was unable to return a response in the time allotted"),
        error(503, "ServiceUnavailable", "again"),
        error(500, "InternalError", "again"),
        error(429, "TooManyRequests", "again"),
        Reply(200, application("RUNNING")),
    )
    assert apps.get(NAME, deadline=clock.now() + FAR) == application("RUNNING")
    assert len(api.seen("GET", APP)) == 9
    assert clock.sleeps == [0.5, 1, 2, 4, 8, 10, 10, 10]  # doubling, capped at 10 s
    assert retry_pauses(messages) == ["0.5s", "1.0s", "2.0s", "4.0s", "8.0s", "10.0s", "10.0s", "10.0s"]
    assert messages[0] == (
        f"reading {NAME}: transient API error (HTTP 429 Too many requests, please try again later.); retrying in 0.5s"
    )
    assert "(HTTP 500 etcdserver: leader changed)" in messages[1]


def test_a_refused_connection_is_retried_with_jittered_backoff_until_the_api_server_is_back(api, apps, clock, messages):
    api.down()
    # Pauses of 0.5, 1 and 2 s ±20 % add up to at least 2.8 s; the first two to at most 1.8 s.
    clock.at(clock.now() + 2.5, api.up)
    api.script("GET", APP, Reply(200, application("RUNNING")))
    assert apps.get(NAME, deadline=clock.now() + FAR) == application("RUNNING")
    assert len(clock.sleeps) == 3
    for slept, nominal in zip(clock.sleeps, [0.5, 1, 2], strict=True):
        assert 0.8 * nominal <= slept <= 1.2 * nominal
    assert retry_pauses(messages) == [f"{s:.1f}s" for s in clock.sleeps]
    assert all("Connection refused" in m for m in messages)
    assert sent(api) == [("GET", APP)]  # the refused ones never arrived


def test_a_reset_connection_is_retried(api, apps, clock, messages, monkeypatch):
    fix_jitter(monkeypatch, 0.5)
    # urllib3 retries an idempotent request three times on its own before the client sees the error
    api.script("GET", APP, RESET, RESET, RESET, RESET, Reply(200, application("RUNNING")))
    assert apps.get(NAME, deadline=clock.now() + FAR) == application("RUNNING")
    assert len(api.seen("GET", APP)) == 5
    assert clock.sleeps == [0.5]
    assert "Connection reset by peer" in messages[0]


@pytest.mark.parametrize("draw, pauses", [(0.0, [0.4, 0.8, 1.6, 3.2, 6.4]), (1.0, [0.6, 1.2, 2.4, 4.8])])
def test_retries_stop_at_the_deadline_without_an_attempt_after_it(
    api, apps, clock, messages, monkeypatch, draw, pauses
):
    """The deadline is checked against the pause really taken: with the longest jitter the fifth
    pause (9.6 s, from 9 s) would end past 18 s, so there is no fifth retry; with the shortest,
    the sixth (8 s, from 12.4 s) would."""
    fix_jitter(monkeypatch, draw)
    start = clock.now()
    attempts = len(pauses) + 1
    api.script(
        "GET", APP, *[error(503, "ServiceUnavailable", "etcd cluster is unavailable or misconfigured")] * attempts
    )
    with pytest.raises(kube.DeadlineExceeded) as raised:
        apps.get(NAME, deadline=start + 18)
    assert str(raised.value) == (
        f"reading {NAME}: the API kept failing until the deadline "
        "(HTTP 503 etcd cluster is unavailable or misconfigured)"
    )
    assert len(api.seen("GET", APP)) == attempts
    assert clock.sleeps == pytest.approx(pauses)
    assert max(r.at for r in api.requests) <= start + 18
    assert clock.now() <= start + 18


def test_with_retries_on_its_own(clock, monkeypatch):
    fix_jitter(monkeypatch, 0.5)
    calls = []

    def flaky():
        calls.append(clock.now())
        if len(calls) < 3:
            raise ConnectionResetError(104, "Connection reset by peer")
        return "ok"

    assert kube.with_retries(flaky, clock.now() + 10, "probing", clock=clock) == "ok"
    assert clock.sleeps == [0.5, 1.0]
    assert calls == [clock.start, clock.start + 0.5, clock.start + 1.5]


# -- errors that are not retried -------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, expected",
    [
        (
            error(
                422,
                "Invalid",
                f'SparkApplication.sparkoperator.k8s.io "{NAME}" is invalid: spec.driver.coreRequest: '
                'Invalid value: "number": spec.driver.coreRequest in body must be of type string: "number"',
            ),
            f'the cluster refused SparkApplication {NAME}: SparkApplication.sparkoperator.k8s.io "{NAME}" is invalid: '
            'spec.driver.coreRequest: Invalid value: "number": '
            'spec.driver.coreRequest in body must be of type string: "number"',
        ),
        (
            error(400, "BadRequest", "the body of the request was in an unknown format"),
            f"the cluster refused SparkApplication {NAME}: the body of the request was in an unknown format",
        ),
        (
            error(
                403,
                "Forbidden",
                "sparkapplications.sparkoperator.k8s.io is forbidden: User "
                '"system:serviceaccount:dagster:dagster" cannot create resource "sparkapplications"',
            ),
            f"not allowed to create SparkApplications in '{NS}': "
            "sparkapplications.sparkoperator.k8s.io is forbidden: User "
            '"system:serviceaccount:dagster:dagster" cannot create resource "sparkapplications" '
            "(the chart's Role grants this to Dagster's service account)",
        ),
        (
            error(404, "NotFound", f'namespaces "{NS}" not found'),
            f"namespace '{NS}' does not exist: namespaces \"{NS}\" not found",
        ),
    ],
    ids=["422", "400", "403", "404-namespace"],
)
def test_a_refused_create_is_not_retried_and_says_why(api, apps, clock, reply, expected):
    api.script("POST", APPS, reply)
    with pytest.raises(kube.LauncherError) as raised:
        apps.create(body(), deadline=clock.now() + FAR)
    assert str(raised.value) == expected
    assert sent(api) == [("POST", APPS)]
    assert clock.sleeps == []


def test_other_client_errors_are_raised_as_the_api_gave_them(api, apps, clock):
    api.script("POST", APPS, error(401, "Unauthorized", "Unauthorized"))
    api.script(
        "GET",
        APP,
        error(403, "Forbidden", f'sparkapplications "{NAME}" is forbidden'),
        error(404, "NotFound", f'sparkapplications "{NAME}" not found'),
    )
    with pytest.raises(ApiException) as raised:
        apps.create(body(), deadline=clock.now() + FAR)
    assert raised.value.status == 401
    with pytest.raises(ApiException) as raised:
        apps.get(NAME, deadline=clock.now() + FAR)
    assert raised.value.status == 403
    assert json.loads(raised.value.body)["message"] == f'sparkapplications "{NAME}" is forbidden'
    assert apps.get(NAME, deadline=clock.now() + FAR) is None  # 404: not there
    assert clock.sleeps == []


# -- preflight -------------------------------------------------------------------------------------

VERSION = {
    "major": "1",
    "minor": "34",
    "gitVersion": "v1.34.1",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2025-09-09T00:00:00Z",
    "goVersion": "go1.24.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}
DISCOVERY = "/apis/sparkoperator.k8s.io/v1beta2"
RESOURCES = {
    "kind": "APIResourceList",
    "groupVersion": "sparkoperator.k8s.io/v1beta2",
    "resources": [
        {
            "name": "sparkapplications",
            "singularName": "sparkapplication",
            "namespaced": True,
            "kind": "SparkApplication",
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        }
    ],
}
ACCOUNT = f"/api/v1/namespaces/{NS}/serviceaccounts/shopstream-spark"


def test_preflight_on_a_ready_cluster(api, apps, clock):
    api.script("GET", "/version/", Reply(200, VERSION))
    api.script("GET", DISCOVERY, Reply(200, RESOURCES))
    api.script("POST", APPS, Reply(201, application()))
    api.script("GET", ACCOUNT, Reply(200, {"kind": "ServiceAccount", "metadata": {"name": "shopstream-spark"}}))
    apps.preflight(body(), deadline=clock.now() + FAR)
    assert sent(api) == [("GET", "/version/"), ("GET", DISCOVERY), ("POST", APPS), ("GET", ACCOUNT)]
    [dry_run] = api.seen("POST", APPS)
    assert dry_run.query == {"dryRun": "All"} and dry_run.body == body()


def test_preflight_gives_up_on_an_unreachable_api_after_30_seconds_whatever_the_deadline(
    api, apps, clock, messages, monkeypatch
):
    fix_jitter(monkeypatch, 0.5)
    api.down()
    with pytest.raises(kube.LauncherError) as raised:
        apps.preflight(body(), deadline=clock.now() + FAR)
    assert str(raised.value).startswith(
        f"cannot reach the Kubernetes API at {api.url}: reaching the API: "
        "the API kept failing until the deadline (MaxRetryError"
    )
    assert clock.sleeps == [0.5, 1, 2, 4, 8, 10]  # 25.5 s; ten more would pass 30
    assert len(messages) == 6


def test_preflight_names_what_is_missing(api, apps, clock):
    api.script("GET", "/version/", Reply(200, VERSION), Reply(200, VERSION))
    api.script("GET", DISCOVERY, Reply(404, "404 page not found\n"), Reply(200, RESOURCES))
    api.script("POST", APPS, Reply(201, application()))
    api.script("GET", ACCOUNT, error(404, "NotFound", 'serviceaccounts "shopstream-spark" not found'))
    with pytest.raises(
        kube.LauncherError,
        match=r"the SparkApplication CRD \(sparkapplications.sparkoperator.k8s.io, "
        r"v1beta2\) is not installed on http://127.0.0.1:\d+",
    ):
        apps.preflight(body(), deadline=clock.now() + FAR)
    with pytest.raises(
        kube.LauncherError, match="service account 'shopstream-spark' does not exist in namespace 'jobs'"
    ):
        apps.preflight(body(), deadline=clock.now() + FAR)


# -- create: adoption and replacement --------------------------------------------------------------

ALREADY_EXISTS = error(409, "AlreadyExists", f'sparkapplications.sparkoperator.k8s.io "{NAME}" already exists')


@pytest.mark.parametrize("state", [None, "SUBMITTED", "RUNNING"])
def test_a_create_whose_response_was_lost_adopts_the_application_it_made(
    api, apps, clock, messages, monkeypatch, state
):
    """The first POST reached the server, which stored the application, but the connection was
    reset before the answer came: the retried POST gets 409, and the client watches the
    application that is there instead of failing or starting a second one."""
    fix_jitter(monkeypatch, 0.5)
    api.script("POST", APPS, RESET, ALREADY_EXISTS)
    api.script("GET", APP, Reply(200, application(state, "42")))
    api.script("GET", WATCH, Stream([event("MODIFIED", application("COMPLETED", "43"))]))
    adopted = apps.create(body(), deadline=clock.now() + FAR)
    assert adopted == application(state, "42")
    assert [r.body for r in api.seen("POST", APPS)] == [body(), body()]
    assert clock.sleeps == [0.5]  # the POST is not idempotent: only the client retries it, after its backoff
    assert (
        messages[-1]
        == f"SparkApplication {NAME} already exists from an earlier attempt and is still running: watching it"
    )
    outcome = apps.watch_until_terminal(adopted, deadline=clock.now() + FAR)
    assert watched_from(api) == ["42"]
    assert outcome.state == "COMPLETED"
    assert sent(api) == [("POST", APPS), ("POST", APPS), ("GET", APP), ("GET", WATCH)]  # never deleted


@pytest.mark.parametrize("state", ["COMPLETED", "FAILED", "SUBMISSION_FAILED"])
def test_an_application_an_earlier_attempt_left_finished_is_deleted_and_created_again(
    api, apps, clock, messages, state
):
    api.script("POST", APPS, ALREADY_EXISTS, Reply(201, application(version="51")))
    api.script(
        "GET",
        APP,
        Reply(200, application(state, "42")),
        Reply(200, application(state, "50")),  # still going
        error(404, "NotFound", f'sparkapplications.sparkoperator.k8s.io "{NAME}" not found'),
    )
    api.script("DELETE", APP, Reply(200, status(200, "", "")))
    assert apps.create(body(), deadline=clock.now() + FAR) == application(version="51")
    assert sent(api) == [("POST", APPS), ("GET", APP), ("DELETE", APP), ("GET", APP), ("GET", APP), ("POST", APPS)]
    assert api.seen("DELETE", APP)[0].query == {"propagationPolicy": "Background"}
    assert clock.sleeps == [0.5]  # wait_deleted's poll
    assert f"SparkApplication {NAME} from an earlier attempt ended {state}: replacing it" in messages


def test_a_conflicting_application_gone_before_it_is_read_is_created_again(api, apps, clock):
    api.script("POST", APPS, ALREADY_EXISTS, Reply(201, application(version="51")))
    api.script("GET", APP, error(404, "NotFound", "gone"))
    assert apps.create(body(), deadline=clock.now() + FAR) == application(version="51")
    assert sent(api) == [("POST", APPS), ("GET", APP), ("POST", APPS)]


def test_an_application_that_is_not_deleted_in_time(api, apps, clock):
    start = clock.now()
    api.script("GET", APP, *[Reply(200, application("COMPLETED"))] * 4)
    with pytest.raises(kube.DeadlineExceeded, match=f"{NAME} was not deleted in time"):
        apps.wait_deleted(NAME, deadline=start + 1.2)
    assert clock.sleeps == [0.5, 0.5, 0.5]
    assert [r.at - start for r in api.requests] == [0, 0.5, 1.0, 1.5]


# -- the watch -------------------------------------------------------------------------------------


def test_the_watch_returns_at_the_terminal_state_with_the_state_history(api, apps, clock):
    api.script(
        "GET",
        WATCH,
        Stream(
            [
                event("MODIFIED", application("RUNNING", "11")),
                bookmark("12"),
                event("MODIFIED", application("RUNNING", "13")),
                event("MODIFIED", application("COMPLETED", "14")),
                event("MODIFIED", application("COMPLETED", "15")),
            ]
        ),
    )
    seen = []
    outcome = apps.watch_until_terminal(
        application("SUBMITTED", "10"), deadline=clock.now() + 150, on_transition=lambda t: seen.append(t.state)
    )
    assert outcome.state == "COMPLETED" and outcome.obj == application("COMPLETED", "14")
    assert [t.state for t in outcome.history] == seen == ["SUBMITTED", "RUNNING", "COMPLETED"]
    assert (outcome.reconnects, outcome.relists) == (0, 0)
    [request] = api.requests
    assert request.query == {
        "watch": "True",
        "fieldSelector": f"metadata.name={NAME}",
        "resourceVersion": "10",
        "allowWatchBookmarks": "True",
        "timeoutSeconds": "60",
    }
    assert clock.sleeps == []


def test_a_dropped_watch_resumes_from_the_last_resource_version_it_saw(api, apps, clock, messages):
    api.script(
        "GET",
        WATCH,
        Stream([event("MODIFIED", application("RUNNING", "11")), bookmark("15")], end="drop"),
        Stream([event("MODIFIED", application("COMPLETED", "16"))]),
    )
    outcome = apps.watch_until_terminal(application("SUBMITTED", "10"), deadline=clock.now() + FAR)
    assert watched_from(api) == ["10", "15"]  # the bookmark's, not the last object's
    assert (outcome.reconnects, outcome.relists) == (1, 0)
    assert [t.state for t in outcome.history] == ["SUBMITTED", "RUNNING", "COMPLETED"]
    assert clock.sleeps == [2.0]
    assert messages == [f"watch of {NAME}: connection lost (ProtocolError); resuming from resourceVersion 15"]


def test_a_410_in_the_stream_reads_the_application_afresh_and_watches_from_its_version(api, apps, clock, messages):
    api.script(
        "GET",
        WATCH,
        Stream(
            [
                event("MODIFIED", application("RUNNING", "11")),
                event("ERROR", status(410, "Expired", "too old resource version: 11 (90)")),
            ]
        ),
        Stream([event("MODIFIED", application("COMPLETED", "91"))]),
    )
    api.script("GET", APP, Reply(200, application("RUNNING", "90")))
    outcome = apps.watch_until_terminal(application("SUBMITTED", "10"), deadline=clock.now() + FAR)
    assert sent(api) == [("GET", WATCH), ("GET", APP), ("GET", WATCH)]
    assert watched_from(api) == ["10", "90"]
    assert (outcome.reconnects, outcome.relists) == (0, 1)
    assert [t.state for t in outcome.history] == ["SUBMITTED", "RUNNING", "COMPLETED"]
    assert messages == [f"watch of {NAME}: resourceVersion 11 is gone (410); reading it afresh"]
    assert clock.sleeps == []


def test_a_410_answer_relists_and_can_find_the_application_finished(api, apps, clock):
    api.script("GET", WATCH, error(410, "Expired", "too old resource version: 10 (90)"))
    api.script("GET", APP, Reply(200, application("FAILED", "92")))
    outcome = apps.watch_until_terminal(application("RUNNING", "10"), deadline=clock.now() + FAR)
    assert outcome.state == "FAILED" and outcome.relists == 1
    assert [t.state for t in outcome.history] == ["RUNNING", "FAILED"]
    assert sent(api) == [("GET", WATCH), ("GET", APP)]


def test_a_relist_that_finds_nothing_fails_clearly(api, apps, clock):
    api.script("GET", WATCH, error(410, "Expired", "too old resource version: 10 (90)"))
    api.script("GET", APP, error(404, "NotFound", "gone"))
    with pytest.raises(kube.LauncherError, match=f"SparkApplication {NAME} disappeared while being watched"):
        apps.watch_until_terminal(application("RUNNING", "10"), deadline=clock.now() + FAR)


def test_transient_watch_errors_resume_from_the_same_version(api, apps, clock, messages):
    api.script(
        "GET",
        WATCH,
        error(503, "ServiceUnavailable", "etcd leader changed"),
        Stream([event("ERROR", status(500, "InternalError", "etcd watch channel closed"))]),
        Stream([event("MODIFIED", application("COMPLETED", "11"))]),
    )
    outcome = apps.watch_until_terminal(application("RUNNING", "10"), deadline=clock.now() + FAR)
    assert outcome.state == "COMPLETED" and (outcome.reconnects, outcome.relists) == (2, 0)
    assert watched_from(api) == ["10", "10", "10"]
    assert clock.sleeps == [1.0, 1.0]
    assert messages == [f"watch of {NAME}: HTTP 503; resuming", f"watch of {NAME}: HTTP 500; resuming"]


def test_a_forbidden_watch_is_not_retried(api, apps, clock):
    api.script("GET", WATCH, error(403, "Forbidden", "sparkapplications is forbidden: cannot watch"))
    with pytest.raises(ApiException) as raised:
        apps.watch_until_terminal(application("RUNNING", "10"), deadline=clock.now() + FAR)
    assert raised.value.status == 403 and clock.sleeps == []


def test_an_application_deleted_by_someone_else_ends_the_watch(api, apps, clock):
    api.script("GET", WATCH, Stream([event("DELETED", application("RUNNING", "12"))]))
    with pytest.raises(
        kube.LauncherError,
        match=f"SparkApplication {NAME} was deleted by someone else while it ran "
        r"\(last state RUNNING\)",
    ):
        apps.watch_until_terminal(application("RUNNING", "10"), deadline=clock.now() + FAR)


def test_the_watch_ends_at_the_deadline_asking_the_server_to_time_out_no_later(api, apps, clock):
    """Each watch asks the server to end it by the deadline (timeoutSeconds); the fake server
    "waits" that long by moving the clock."""
    start = clock.now()
    api.script("GET", WATCH, *[Stream([bookmark(str(v))], end="timeout") for v in (11, 12, 13)])
    with pytest.raises(kube.DeadlineExceeded) as raised:
        apps.watch_until_terminal(application("RUNNING", "10"), deadline=start + 150)
    assert str(raised.value) == f"{NAME} did not finish before the timeout (last state RUNNING)"
    assert [r.query["timeoutSeconds"] for r in api.requests] == ["60", "60", "30"]
    assert watched_from(api) == ["10", "11", "12"]
    assert clock.now() == start + 150 and clock.sleeps == []


def test_the_watch_ends_at_the_deadline_while_the_api_is_unreachable(api, apps, clock, messages):
    start = clock.now()
    api.down()
    with pytest.raises(kube.DeadlineExceeded, match=r"did not finish before the timeout \(last state RUNNING\)"):
        apps.watch_until_terminal(application("RUNNING", "10"), deadline=start + 5)
    assert clock.sleeps == [2.0, 2.0, 1.0]  # reconnect waits, the last one cut to the deadline
    assert clock.now() == start + 5
    assert messages == [f"watch of {NAME}: connection lost (MaxRetryError); resuming from resourceVersion 10"] * 3


def test_a_transient_watch_error_near_the_deadline_waits_only_until_it(api, apps, clock):
    start = clock.now()
    api.script("GET", WATCH, error(503, "ServiceUnavailable", "etcd leader changed"))
    with pytest.raises(kube.DeadlineExceeded):
        apps.watch_until_terminal(application("RUNNING", "10"), deadline=start + 0.25)
    assert clock.sleeps == [0.25] and clock.now() == start + 0.25


# -- the driver's log ------------------------------------------------------------------------------


def test_driver_log_tail(api, apps):
    log = f"/api/v1/namespaces/{NS}/pods/{NAME}-driver/log"
    api.script(
        "GET",
        log,
        Reply(200, "starting\nwrote 3 rows\n"),
        error(400, "BadRequest", 'container "spark-kubernetes-driver" in pod is waiting to start: ContainerCreating'),
    )
    assert apps.driver_log_tail(f"{NAME}-driver", 60) == "starting\nwrote 3 rows\n"
    assert api.requests[0].query == {"tailLines": "60"}
    assert apps.driver_log_tail(f"{NAME}-driver", 60) == (
        f'(driver log of {NAME}-driver unavailable: container "spark-kubernetes-driver" in pod is waiting to start: '
        "ContainerCreating)"
    )
    assert apps.driver_log_tail(None, 60) == "(no driver pod was reported)"
