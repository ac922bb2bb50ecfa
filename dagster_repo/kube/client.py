"""Talking to the Kubernetes API about SparkApplications: checks before submitting, create, watch
until a terminal state, delete, and the driver's log.

The watch follows the API's documented semantics: it resumes from the last resourceVersion it saw
after a dropped connection or a server-side timeout, and after `410 Gone` (that version was
compacted away) it reads the object afresh and watches from there. Transient API errors (429, 5xx,
connection failures) are retried with exponential backoff until the caller's deadline.

Deadlines are in the seconds of a `Clock` (time.monotonic unless one is passed), which also does
every wait, so tests can run the backoff and the watch's reconnects without waiting.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from dagster_repo.kube import spark_application as sa

T = TypeVar("T")

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
CONNECTION_ERRORS = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)


class Clock(Protocol):
    def now(self) -> float: ...  # monotonic seconds: what deadlines are measured in

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class LauncherError(RuntimeError):
    """A problem the user must fix (configuration, cluster setup, a rejected spec)."""


class DeadlineExceeded(RuntimeError):
    pass


def api_client(kubeconfig_file: str | None = None, context: str | None = None) -> client.ApiClient:
    """In-cluster credentials inside a pod, else the kubeconfig (the given file, $KUBECONFIG or ~/.kube/config)."""
    if kubeconfig_file is None:
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except config.ConfigException:
            pass
    return config.new_client_from_config(config_file=kubeconfig_file, context=context)


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
        return body.get("message") or str(body)
    except (ValueError, AttributeError):
        return (exc.body or exc.reason or "").strip() or f"HTTP {exc.status}"


def with_retries(
    call: Callable[[], T],
    deadline: float,
    what: str,
    log: Callable[[str], None] | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> T:
    delay = 0.5
    while True:
        try:
            return call()
        except ApiException as exc:
            if exc.status not in TRANSIENT_STATUSES:
                raise
            problem = f"HTTP {exc.status} {_status_message(exc)}"
        except CONNECTION_ERRORS as exc:
            problem = f"{type(exc).__name__}: {exc}"
        # Jitter spreads the retries of clients that failed together; the deadline is checked
        # against the pause really taken, so no attempt starts after it.
        pause = delay * (0.8 + 0.4 * random.random())
        if clock.now() + pause > deadline:
            raise DeadlineExceeded(f"{what}: the API kept failing until the deadline ({problem})")
        if log:
            log(f"{what}: transient API error ({problem}); retrying in {pause:.1f}s")
        clock.sleep(pause)
        delay = min(delay * 2, 10.0)


@dataclass
class Transition:
    state: str
    at: float  # wall-clock seconds

    def as_dict(self) -> dict:
        return {"state": self.state, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at))}


@dataclass
class WatchOutcome:
    obj: dict
    history: list[Transition] = field(default_factory=list)
    reconnects: int = 0
    relists: int = 0  # after 410 Gone

    @property
    def state(self) -> str | None:
        return sa.state_of(self.obj)


class SparkApplications:
    """The SparkApplication API of one namespace."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        log: Callable[[str], None] | None = None,
        watch_timeout_seconds: int = 60,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ):
        self.api = api
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.log = log or (lambda message: None)
        self.watch_timeout_seconds = watch_timeout_seconds
        self.clock = clock

    def _retried(self, call: Callable[[], T], deadline: float, what: str) -> T:
        return with_retries(call, deadline, what, self.log, clock=self.clock)

    # -- checks ------------------------------------------------------------------------------

    def preflight(self, body: dict, deadline: float) -> None:
        """Fail with a clear message when the cluster cannot run `body`: API unreachable, CRD not
        installed, namespace or service account missing, or a spec the CRD refuses."""
        host = self.api.configuration.host
        try:
            self._retried(
                lambda: client.VersionApi(self.api).get_code(_request_timeout=10),
                min(deadline, self.clock.now() + 30),
                "reaching the API",
            )
        except (DeadlineExceeded, ApiException, *CONNECTION_ERRORS) as exc:
            raise LauncherError(f"cannot reach the Kubernetes API at {host}: {exc}") from None
        try:
            # Discovery is open to every authenticated user; reading the CRD itself would need a ClusterRole.
            self.custom.get_api_resources(sa.GROUP, sa.VERSION, _request_timeout=10)
        except ApiException as exc:
            if exc.status == 404:
                raise LauncherError(
                    f"the SparkApplication CRD ({sa.CRD_NAME}, {sa.VERSION}) is not installed on {host}: "
                    "install the Spark operator (see docs/kubernetes.md)"
                ) from None
            raise
        try:
            self.custom.create_namespaced_custom_object(
                sa.GROUP, sa.VERSION, self.namespace, sa.PLURAL, body, dry_run="All", _request_timeout=30
            )
        except ApiException as exc:
            raise self._explain(exc, body) from None
        service_account = body["spec"]["driver"].get("serviceAccount")
        if not service_account:
            return
        try:
            self.core.read_namespaced_service_account(service_account, self.namespace, _request_timeout=10)
        except ApiException as exc:
            if exc.status == 404:
                raise LauncherError(
                    f"service account {service_account!r} does not exist in namespace {self.namespace!r}: the Spark "
                    "driver runs as it (launcher config `service_account`, env SHOPSTREAM_SPARK_SERVICE_ACCOUNT)"
                ) from None
            if exc.status != 403:  # not allowed to look: the operator will tell if it is missing
                raise

    def _explain(self, exc: ApiException, body: dict) -> Exception:
        message = _status_message(exc)
        if exc.status == 404 and "namespace" in message:
            return LauncherError(f"namespace {self.namespace!r} does not exist: {message}")
        if exc.status == 422 or exc.status == 400:
            return LauncherError(f"the cluster refused SparkApplication {body['metadata']['name']}: {message}")
        if exc.status == 403:
            return LauncherError(
                f"not allowed to create SparkApplications in {self.namespace!r}: {message} "
                "(the chart's Role grants this to Dagster's service account)"
            )
        return exc

    # -- lifecycle ---------------------------------------------------------------------------

    def get(self, name: str, deadline: float) -> dict | None:
        try:
            return self._retried(
                lambda: self.custom.get_namespaced_custom_object(
                    sa.GROUP, sa.VERSION, self.namespace, sa.PLURAL, name, _request_timeout=30
                ),
                deadline,
                f"reading {name}",
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, body: dict, deadline: float) -> dict:
        """Create `body`; if an application of that name exists from an earlier attempt of the
        same step, adopt it while it runs, or replace it when it has finished."""
        name = body["metadata"]["name"]
        while True:
            try:
                return self._retried(
                    lambda: self.custom.create_namespaced_custom_object(
                        sa.GROUP, sa.VERSION, self.namespace, sa.PLURAL, body, _request_timeout=30
                    ),
                    deadline,
                    f"creating {name}",
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise self._explain(exc, body) from None
            existing = self.get(name, deadline)
            if existing is None:
                continue
            if sa.state_of(existing) not in sa.TERMINAL_STATES:
                self.log(
                    f"SparkApplication {name} already exists from an earlier attempt and is still running: watching it"
                )
                return existing
            self.log(f"SparkApplication {name} from an earlier attempt ended {sa.state_of(existing)}: replacing it")
            self.delete(name, deadline)
            self.wait_deleted(name, deadline)

    def delete(self, name: str, deadline: float) -> bool:
        try:
            self._retried(
                lambda: self.custom.delete_namespaced_custom_object(
                    sa.GROUP,
                    sa.VERSION,
                    self.namespace,
                    sa.PLURAL,
                    name,
                    propagation_policy="Background",
                    _request_timeout=30,
                ),
                deadline,
                f"deleting {name}",
            )
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def wait_deleted(self, name: str, deadline: float) -> None:
        while self.get(name, deadline) is not None:
            if self.clock.now() > deadline:
                raise DeadlineExceeded(f"{name} was not deleted in time")
            self.clock.sleep(0.5)

    def watch_until_terminal(
        self, obj: dict, deadline: float, on_transition: Callable[[Transition], None] | None = None
    ) -> WatchOutcome:
        """Follow the application until COMPLETED, FAILED or SUBMISSION_FAILED; raise
        DeadlineExceeded at the deadline. Resumes after disconnects and 410 Gone."""
        name = obj["metadata"]["name"]
        outcome = WatchOutcome(obj)

        def observe(current: dict) -> None:
            outcome.obj = current
            state = sa.state_of(current) or "NEW"
            if not outcome.history or outcome.history[-1].state != state:
                outcome.history.append(Transition(state, time.time()))
                if on_transition:
                    on_transition(outcome.history[-1])

        observe(obj)
        version = obj["metadata"].get("resourceVersion")
        while outcome.state not in sa.TERMINAL_STATES:
            remaining = deadline - self.clock.now()
            if remaining <= 0:
                raise DeadlineExceeded(
                    f"{name} did not finish before the timeout (last state {outcome.state or 'NEW'})"
                )
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.custom.list_namespaced_custom_object,
                    sa.GROUP,
                    sa.VERSION,
                    self.namespace,
                    sa.PLURAL,
                    field_selector=f"metadata.name={name}",
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=max(1, int(min(remaining, self.watch_timeout_seconds))),
                    _request_timeout=(10, self.watch_timeout_seconds + 15),
                ):
                    current = event[
                        "object"
                    ]  # kubernetes' Watch raises ERROR events (410 Gone among them) as ApiException
                    version = current["metadata"].get("resourceVersion", version)
                    if event["type"] == "BOOKMARK":
                        continue
                    if event["type"] == "DELETED":
                        raise LauncherError(
                            f"SparkApplication {name} was deleted by someone else while it ran "
                            f"(last state {outcome.state or 'NEW'})"
                        )
                    observe(current)
                    if outcome.state in sa.TERMINAL_STATES:
                        break
            except ApiException as exc:
                if exc.status == 410:
                    outcome.relists += 1
                    self.log(f"watch of {name}: resourceVersion {version} is gone (410); reading it afresh")
                    current = self.get(name, deadline)
                    if current is None:
                        raise LauncherError(f"SparkApplication {name} disappeared while being watched") from None
                    observe(current)
                    version = current["metadata"]["resourceVersion"]
                elif exc.status in TRANSIENT_STATUSES:
                    outcome.reconnects += 1
                    self.log(f"watch of {name}: HTTP {exc.status}; resuming")
                    self._pause(1.0, deadline)
                else:
                    raise
            except CONNECTION_ERRORS as exc:
                outcome.reconnects += 1
                self.log(
                    f"watch of {name}: connection lost ({type(exc).__name__}); resuming from resourceVersion {version}"
                )
                self._pause(2.0, deadline)
            finally:
                stream.stop()
        return outcome

    def _pause(self, seconds: float, deadline: float) -> None:
        """Wait before reconnecting, but not past the deadline (the loop then raises DeadlineExceeded)."""
        self.clock.sleep(min(seconds, max(0.0, deadline - self.clock.now())))

    # -- the driver ------------------------------------------------------------------------

    def driver_log_tail(self, pod: str | None, lines: int) -> str:
        if not pod:
            return "(no driver pod was reported)"
        try:
            # Read raw: kubernetes 36 turns a text response into "b'...'" (kubernetes-client/python#2596).
            response = self.core.read_namespaced_pod_log(
                pod, self.namespace, tail_lines=lines, _request_timeout=30, _preload_content=False
            )
            return response.data.decode("utf-8", errors="replace")
        except ApiException as exc:
            return f"(driver log of {pod} unavailable: {_status_message(exc)})"
        except CONNECTION_ERRORS as exc:
            return f"(driver log of {pod} unavailable: {exc})"
