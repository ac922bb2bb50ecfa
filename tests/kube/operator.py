"""A stand-in for the Spark operator, for tests against the real API server: it watches
SparkApplications in one namespace and drives their status through the status subresource the way
the operator's reconciler does — SUBMITTED (with a driver pod "<name>-driver"), RUNNING, then
COMPLETED or FAILED; SUBMISSION_FAILED when spark-submit could not start (no image, or a main file
that is not local:// in the image).

What each application does is chosen by its annotation `shopstream.test/behaviour`, else by the
stand-in's `behaviour` attribute:
- `succeed` (the default): completes after a short run;
- `reject`: spark-submit fails (SUBMISSION_FAILED), as with an image that cannot be pulled;
- `fail`: fails the way a driver that exits 1 is reported;
- `hang`: runs until deleted;
- `run`: really runs `python -m shopstream <spec.arguments>` with local Spark and the driver's
  env entries, so a kubernetes-mode launch writes real tables; the exit code decides the state.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from dagster_repo.kube import spark_application as sa

REPO = Path(__file__).resolve().parents[2]
BEHAVIOUR = "shopstream.test/behaviour"
DRIVER_FAILURE = "driver container failed with ExitCode: 1, Reason: Error"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class OperatorStandIn:
    def __init__(self, api: client.ApiClient, namespace: str, step_seconds: float = 0.5, env: dict | None = None):
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.step_seconds = step_seconds
        self.env = env or {}
        self.behaviour = "succeed"
        self.logs: dict[str, str] = {}  # application -> the `run` job's output
        self._stop = threading.Event()
        self._workers: dict[str, threading.Thread] = {}
        self._thread = threading.Thread(target=self._watch, daemon=True, name=f"operator-{namespace}")

    def start(self) -> OperatorStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for worker in list(self._workers.values()):
            worker.join(timeout=30)

    # -- reconciliation -----------------------------------------------------------------------

    def _watch(self) -> None:
        version = None
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.custom.list_namespaced_custom_object,
                    sa.GROUP,
                    sa.VERSION,
                    self.namespace,
                    sa.PLURAL,
                    resource_version=version,
                    timeout_seconds=2,
                ):
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    name = obj["metadata"]["name"]
                    if event["type"] == "ADDED" and sa.state_of(obj) is None and name not in self._workers:
                        worker = threading.Thread(target=self._reconcile, args=(obj,), daemon=True, name=f"app-{name}")
                        self._workers[name] = worker
                        worker.start()
                    if self._stop.is_set():
                        break
            except ApiException as exc:
                if exc.status == 410:
                    version = None  # re-list: the operator's informer does the same
                else:
                    time.sleep(0.5)
            except Exception:  # noqa: BLE001 - a dropped connection: watch again
                time.sleep(0.5)
            finally:
                stream.stop()

    @staticmethod
    def _found(call) -> bool:
        """Run an API call on an application; False when the application is gone."""
        try:
            call()
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def _status(self, name: str, **status) -> bool:
        # The operator's status always carries driverInfo (empty before a driver exists; its CRD
        # requires the field); an empty object in a merge patch keeps what is there.
        return self._found(
            lambda: self.custom.patch_namespaced_custom_object_status(
                sa.GROUP, sa.VERSION, self.namespace, sa.PLURAL, name, {"status": {"driverInfo": {}, **status}}
            )
        )

    def _exists(self, name: str) -> bool:
        return self._found(
            lambda: self.custom.get_namespaced_custom_object(sa.GROUP, sa.VERSION, self.namespace, sa.PLURAL, name)
        )

    def _reconcile(self, obj: dict) -> None:
        name, spec = obj["metadata"]["name"], obj["spec"]
        behaviour = (obj["metadata"].get("annotations") or {}).get(BEHAVIOUR, self.behaviour)
        problem = None
        if behaviour == "reject":
            problem = f"failed to run spark-submit for SparkApplication {self.namespace}/{name}: exit status 1"
        elif not spec.get("image") and not (spec.get("driver") or {}).get("image"):
            problem = "failed to run spark-submit: no image is set for the driver"
        elif not str(spec.get("mainApplicationFile", "")).startswith("local://"):
            problem = (
                f"failed to run spark-submit: main application file {spec.get('mainApplicationFile')!r}"
                " is not in the image"
            )
        if problem:
            self._status(
                name,
                applicationState={"state": sa.SUBMISSION_FAILED, "errorMessage": problem},
                submissionAttempts=1,
                lastSubmissionAttemptTime=_now(),
                terminationTime=_now(),
            )
            return
        driver = f"{name}-driver"
        self._create_driver_pod(obj, driver)
        submitted = dict(
            submissionAttempts=1,
            lastSubmissionAttemptTime=_now(),
            sparkApplicationId=f"spark-{name}",
            submissionID=f"{name}-submission",
            driverInfo={"podName": driver},
        )
        if not self._status(name, applicationState={"state": "SUBMITTED"}, **submitted):
            return
        time.sleep(self.step_seconds)
        if not self._status(name, applicationState={"state": "RUNNING"}, executionAttempts=1):
            return
        if behaviour == "hang":
            while not self._stop.is_set() and self._exists(name):
                time.sleep(0.5)
            return
        if behaviour == "run":
            code, output = self._run(obj)
            self.logs[name] = output
            state, error = (sa.COMPLETED, None) if code == 0 else (sa.FAILED, self._failure(code, output))
        else:
            time.sleep(self.step_seconds)
            state, error = (sa.COMPLETED, None) if behaviour == "succeed" else (sa.FAILED, DRIVER_FAILURE)
        application = {"state": state, **({"errorMessage": error} if error else {})}
        self._status(name, applicationState=application, terminationTime=_now())

    @staticmethod
    def _failure(code: int, output: str) -> str:
        lines = [line for line in output.splitlines() if line.strip()][-3:]
        return f"driver container failed with ExitCode: {code}, Reason: Error: " + " | ".join(lines)

    def _run(self, obj: dict) -> tuple[int, str]:
        name = obj["metadata"]["name"]
        env = {
            **os.environ,
            **self.env,
            **{e["name"]: e.get("value", "") for e in obj["spec"]["driver"].get("env", [])},
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "shopstream", *obj["spec"].get("arguments", [])],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        while process.poll() is None:
            if self._stop.is_set() or not self._exists(name):
                process.kill()  # the application was deleted: so is its driver
                break
            time.sleep(0.5)
        output = process.communicate()[0]
        return process.returncode, output

    def _create_driver_pod(self, obj: dict, pod: str) -> None:
        spec = obj["spec"]
        body = client.V1Pod(
            metadata=client.V1ObjectMeta(
                name=pod,
                labels={"spark-role": "driver", "sparkoperator.k8s.io/app-name": obj["metadata"]["name"]},
                owner_references=[
                    client.V1OwnerReference(
                        api_version=f"{sa.GROUP}/{sa.VERSION}",
                        kind=sa.KIND,
                        name=obj["metadata"]["name"],
                        uid=obj["metadata"]["uid"],
                        controller=True,
                    )
                ],
            ),
            spec=client.V1PodSpec(
                containers=[
                    client.V1Container(
                        name="spark-kubernetes-driver", image=spec["image"], args=["driver", *spec.get("arguments", [])]
                    )
                ]
            ),
        )
        try:
            self.core.create_namespaced_pod(self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
