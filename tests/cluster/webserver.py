"""The Dagster webserver's GraphQL API, as the UI and `dagster-graphql` use it: launch a job, follow
its run, read its events, the schedules and sensors of the code location."""

from __future__ import annotations

import time

import requests

LOCATION = "shopstream"
REPOSITORY = "__repository__"
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}

_REPOSITORY = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}


class GraphQLError(RuntimeError):
    pass


class Webserver:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/graphql"

    def query(self, text: str, **variables) -> dict:
        response = requests.post(self.url, json={"query": text, "variables": variables}, timeout=60)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise GraphQLError(body["errors"])
        return body["data"]

    def launch(self, job: str, tags: dict[str, str] | None = None, run_config: dict | None = None) -> str:
        data = self.query(
            """
            mutation Launch($params: ExecutionParams!) {
              launchPipelineExecution(executionParams: $params) {
                __typename
                ... on LaunchRunSuccess { run { runId } }
                ... on PythonError { message }
                ... on RunConfigValidationInvalid { errors { message } }
                ... on InvalidSubsetError { message }
              }
            }""",
            params={
                "selector": {**_REPOSITORY, "jobName": job},
                "runConfigData": run_config or {},
                "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
            },
        )["launchPipelineExecution"]
        if data["__typename"] != "LaunchRunSuccess":
            raise GraphQLError(f"launching {job}: {data}")
        return data["run"]["runId"]

    def run(self, run_id: str) -> dict:
        return self.query(
            """
            query Run($runId: ID!) {
              runOrError(runId: $runId) {
                ... on Run { runId jobName status tags { key value } }
              }
            }""",
            runId=run_id,
        )["runOrError"]

    def wait(self, run_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if run["status"] in FINISHED:
                return run
            time.sleep(5)
        raise TimeoutError(f"run {run_id} still {run['status']} after {timeout:.0f}s")

    def events(self, run_id: str) -> list[dict]:
        events, cursor = [], None
        while True:
            page = self.query(
                """
                query Logs($runId: ID!, $cursor: String) {
                  logsForRun(runId: $runId, afterCursor: $cursor) {
                    ... on EventConnection {
                      cursor hasMore
                      events {
                        __typename
                        ... on MessageEvent { message stepKey }
                        ... on MaterializationEvent {
                          assetKey { path } partition
                          metadataEntries { label ... on IntMetadataEntry { intValue } }
                        }
                        ... on ExecutionStepFailureEvent { error { message } failureMetadata { description } }
                        ... on AssetCheckEvaluationEvent { evaluation { checkName success assetKey { path } } }
                      }
                    }
                  }
                }""",
                runId=run_id,
                cursor=cursor,
            )["logsForRun"]
            events += page["events"]
            cursor = page["cursor"]
            if not page["hasMore"]:
                return events

    def runs(self, job: str) -> list[dict]:
        return self.query(
            """
            query Runs($job: String!) {
              runsOrError(filter: {pipelineName: $job}) {
                ... on Runs { results { runId status tags { key value } } }
              }
            }""",
            job=job,
        )["runsOrError"]["results"]

    def repository(self) -> dict:
        return self.query(
            """
            query Repository($selector: RepositorySelector!) {
              repositoryOrError(repositorySelector: $selector) {
                ... on Repository {
                  schedules { name cronSchedule executionTimezone scheduleState { status } }
                  sensors { name minIntervalSeconds sensorState { status } }
                }
                ... on PythonError { message }
              }
            }""",
            selector=_REPOSITORY,
        )["repositoryOrError"]


def tags(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}
