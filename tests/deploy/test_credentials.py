"""Least-privilege credentials, as rendered: the admin Secret (MinIO root, PostgreSQL superuser)
reaches MinIO, PostgreSQL and the setup Job only; every client gets the lake's MinIO user and a
non-superuser role; the setup Job creates and updates them without a password on a command line;
a credentials.rotation changes the client Secrets and the streaming application, never MinIO or
PostgreSQL. The Job's MinIO half also runs here against a real MinIO server and mc (tests/tools).
Rotation against a real API server (lookup) is in tests/kube/test_credentials.py."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time

import pytest
import yaml

from shopstream.events.broker import free_port
from tests.deploy.chart import CHART, KUBE_VERSION, REPO, render
from tests.tools import build

pytestmark = pytest.mark.k8s

ADMIN, CLIENT, DAGSTER = "shopstream-admin-credentials", "shopstream-credentials", "shopstream-dagster-postgresql"
POD_KINDS = {"Deployment", "StatefulSet", "Job"}


def decoded(secret: dict) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def by_name(objects, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def secret_references(objects) -> dict[str, set[str]]:
    """Secret name -> the workloads that read it (env, envFrom, volumes), including the Spark pods
    of the streaming application and of the launcher's defaults, and Dagster's values."""
    readers: dict[str, set[str]] = {}

    def pod(where: str, containers: list, volumes: list = ()) -> None:
        for container in containers:
            for env in container.get("env", []):
                if "secretKeyRef" in env.get("valueFrom", {}):
                    readers.setdefault(env["valueFrom"]["secretKeyRef"]["name"], set()).add(where)
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    readers.setdefault(source["secretRef"]["name"], set()).add(where)
        for volume in volumes:
            if "secret" in volume:
                readers.setdefault(volume["secret"]["secretName"], set()).add(where)

    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in POD_KINDS:
            spec = obj["spec"]["template"]["spec"]
            pod(name, spec["containers"] + spec.get("initContainers", []), spec.get("volumes", []))
        elif obj["kind"] == "SparkApplication":
            pod(name, [obj["spec"]["driver"], obj["spec"]["executor"]])
        elif obj["kind"] == "ConfigMap" and "SHOPSTREAM_SPARK_APP_DEFAULTS" in obj["data"]:
            defaults = json.loads(obj["data"]["SHOPSTREAM_SPARK_APP_DEFAULTS"])
            pod(f"launched SparkApplications ({name})", [defaults["driver"], defaults["executor"]])
    dagster = yaml.safe_load((REPO / "charts" / "values" / "dagster.yaml").read_text())
    readers.setdefault(dagster["global"]["postgresqlSecretName"], set()).add("Dagster (postgresqlSecretName)")
    for deployment in dagster["dagster-user-deployments"]["deployments"]:
        for ref in deployment.get("envSecrets", []):
            readers.setdefault(ref["name"], set()).add(f"Dagster code location {deployment['name']}")
    return readers


@pytest.fixture(scope="module")
def objects(helm) -> list[dict]:
    return render(helm)


@pytest.fixture(scope="module")
def setup_job(objects) -> dict:
    [job] = [o for o in objects if o["kind"] == "Job"]
    return job


def container(job: dict, name: str) -> dict:
    [found] = [c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def test_three_generated_secrets_and_no_literal(helm, objects):
    first, second = by_name(objects, "Secret"), by_name(render(helm), "Secret")
    assert set(first) == {ADMIN, CLIENT, DAGSTER}
    for name, secret in first.items():
        assert "stringData" not in secret and secret["type"] == "Opaque"
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        for key, value in decoded(secret).items():
            if (name, key) == (CLIENT, "AWS_ACCESS_KEY_ID"):
                assert value == "shopstream-lake"  # the lake user's name, a value
                continue
            assert value != decoded(second[name])[key], f"{name}.{key} is the same in two installs: a literal"
            assert len(value) >= 20 and value.isalnum(), (name, key)
    # no generated value is written anywhere else (scripts, config maps, arguments)
    elsewhere = yaml.safe_dump_all([o for o in objects if o["kind"] != "Secret"])
    for secret in first.values():
        for key, value in decoded(secret).items():
            if key != "AWS_ACCESS_KEY_ID":
                assert value not in elsewhere, key


def test_the_client_secret_holds_the_lake_user_and_the_catalog_role_not_the_root_keys(objects):
    secrets = {name: decoded(s) for name, s in by_name(objects, "Secret").items()}
    assert set(secrets[ADMIN]) == {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "POSTGRES_PASSWORD"}
    assert set(secrets[CLIENT]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "SHOPSTREAM_CATALOG_PASSWORD"}
    assert set(secrets[DAGSTER]) == {"postgresql-password"}
    admin_values = set(secrets[ADMIN].values())
    for name in (CLIENT, DAGSTER):
        assert not admin_values & set(secrets[name].values()), name
    # each role has its own password
    assert secrets[CLIENT]["SHOPSTREAM_CATALOG_PASSWORD"] != secrets[DAGSTER]["postgresql-password"]


def test_the_admin_secret_reaches_minio_postgres_and_the_setup_job_only(objects):
    readers = secret_references(objects)
    assert readers[ADMIN] == {"Deployment/shopstream-minio", "StatefulSet/shopstream-postgres", "Job/shopstream-setup"}
    # and MinIO and PostgreSQL read nothing else
    for workload in ("Deployment/shopstream-minio", "StatefulSet/shopstream-postgres"):
        assert {name for name, who in readers.items() if workload in who} == {ADMIN}, workload
    assert readers[CLIENT] == {
        "SparkApplication/shopstream-streaming",
        "launched SparkApplications (ConfigMap/shopstream-launcher)",
        "Dagster code location shopstream",
        "Job/shopstream-setup",
    }
    assert readers[DAGSTER] == {"Dagster (postgresqlSecretName)", "Job/shopstream-setup"}
    minio = by_name(objects, "Deployment")["shopstream-minio"]["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in minio["env"] if "valueFrom" in e} == {
        "MINIO_ROOT_USER": "MINIO_ROOT_USER",
        "MINIO_ROOT_PASSWORD": "MINIO_ROOT_PASSWORD",
    }


def test_clients_log_in_as_non_superuser_roles(objects):
    lake = by_name(objects, "ConfigMap")["shopstream-lake"]["data"]
    postgres = by_name(objects, "StatefulSet")["shopstream-postgres"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in postgres["env"]}
    assert env["POSTGRES_USER"] == "postgres" and env["POSTGRES_DB"] == "postgres"
    assert lake["SHOPSTREAM_CATALOG_USER"] == "shopstream" != env["POSTGRES_USER"]
    assert lake["SHOPSTREAM_CATALOG_URI"].endswith("/iceberg")
    # no init script any more: the setup Job owns roles and databases
    assert not [c for c in by_name(objects, "ConfigMap") if c.endswith("-init")]
    assert not [m for m in postgres["volumeMounts"] if m["mountPath"] == "/docker-entrypoint-initdb.d"]
    # Spark pods, the stream's and the launched ones, get the lake settings and the client Secret
    [app] = by_name(objects, "SparkApplication").values()
    defaults = json.loads(by_name(objects, "ConfigMap")["shopstream-launcher"]["data"]["SHOPSTREAM_SPARK_APP_DEFAULTS"])
    for pod in (app["spec"]["driver"], app["spec"]["executor"], defaults["driver"], defaults["executor"]):
        assert pod["envFrom"] == [{"configMapRef": {"name": "shopstream-lake"}}, {"secretRef": {"name": CLIENT}}]
    # the setup Job makes exactly these roles, and Dagster logs in as its own
    setup = {
        e["name"]: e.get("value") for e in container(by_name(objects, "Job")["shopstream-setup"], "postgres")["env"]
    }
    assert (setup["CATALOG_ROLE"], setup["CATALOG_DATABASE"]) == ("shopstream", "iceberg")
    dagster = yaml.safe_load((REPO / "charts" / "values" / "dagster.yaml").read_text())["postgresql"]
    assert (setup["DAGSTER_ROLE"], setup["DAGSTER_DATABASE"]) == (
        dagster["postgresqlUsername"],
        dagster["postgresqlDatabase"],
    )
    assert setup["DAGSTER_ROLE"] not in ("shopstream", "postgres") and setup["PGUSER"] == "postgres"


def test_the_setup_job_is_an_idempotent_hook_with_small_means(objects, setup_job):
    assert setup_job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert setup_job["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    spec = setup_job["spec"]
    assert spec["backoffLimit"] == 6 and spec["ttlSecondsAfterFinished"] == 600
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "OnFailure"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"
    }
    assert [c["name"] for c in pod["containers"]] == ["minio", "postgres"]
    for c in pod["containers"]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False and c["securityContext"]["runAsUser"] in (
            70,
            1000,
        )
        assert c["resources"]["limits"] == {"cpu": "200m", "memory": "128Mi"}
    # the only Job: it replaces the bucket Job
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Job"] == ["shopstream-setup"]


def test_the_setup_job_makes_the_lake_user_with_a_bucket_policy(setup_job):
    script = container(setup_job, "minio")["args"][0]
    for step in (
        'mc mb --ignore-existing "lake/shopstream"',
        'mc admin policy create lake "shopstream-readwrite" /tmp/lake-policy.json',
        'mc admin user add lake "$LAKE_ACCESS_KEY"',
        'mc admin policy attach lake "shopstream-readwrite" --user "$LAKE_ACCESS_KEY"',
    ):
        assert step in script, step
    policy = json.loads(re.search(r"<<'EOF'\n(.*?)\nEOF", script, re.S).group(1))
    statements = {tuple(s["Resource"]): (s["Effect"], sorted(s["Action"])) for s in policy["Statement"]}
    assert statements == {
        ("arn:aws:s3:::shopstream",): (
            "Allow",
            ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
        ),
        ("arn:aws:s3:::shopstream/*",): (
            "Allow",
            [
                "s3:AbortMultipartUpload",
                "s3:DeleteObject",
                "s3:GetObject",
                "s3:ListMultipartUploadParts",
                "s3:PutObject",
            ],
        ),
    }


def test_the_setup_job_makes_the_roles_and_databases(setup_job):
    script = container(setup_job, "postgres")["args"][0]
    sql = re.search(r"<<'SQL'\n(.*?)\nSQL", script, re.S).group(1)
    flat = " ".join(sql.split())
    assert "\\set ON_ERROR_STOP on" in sql
    assert "format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE', role)" in flat
    assert "WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role) \\gexec" in flat
    for role in ("catalog", "dagster"):
        assert (
            f'ALTER ROLE :"{role}_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS '
            f"PASSWORD :'{role}_password';"
        ) in flat
        assert f'ALTER DATABASE :"{role}_database" OWNER TO :"{role}_role";' in flat
    # CREATE DATABASE outside any transaction: generated, then run by \gexec
    assert "format('CREATE DATABASE %I OWNER %I', db, owner)" in flat and flat.count("\\gexec") == 2
    assert "BEGIN" not in sql and "DO $$" not in sql
    assert (
        'REVOKE CONNECT, TEMPORARY ON DATABASE :"catalog_database", :"dagster_database", postgres FROM PUBLIC;' in flat
    )
    assert "until pg_isready --quiet" in script


def test_no_password_is_ever_an_argument(setup_job):
    secret_vars = {"MINIO_ROOT_PASSWORD", "LAKE_SECRET_KEY", "PGPASSWORD", "CATALOG_PASSWORD", "DAGSTER_PASSWORD"}
    for name in ("minio", "postgres"):
        c = container(setup_job, name)
        script = c["args"][0]
        assert c["command"] == ["/bin/sh", "-ec"] and len(c["args"]) == 1
        for line in script.splitlines():
            for var in secret_vars:
                if f"${var}" in line or "${" + var in line:
                    # only the shell's own printf sees it, piped into mc's stdin
                    assert re.match(r"\s*(until )?printf '%s\\n(%s\\n)?' \"\$\w+\"( \"\$\w+\")? \| mc ", line), line
        # psql reads every value from the environment itself
        assert "psql --no-psqlrc --quiet <<'SQL'" in script or name == "minio"
        assert " -v " not in script and "--set" not in script and "--json" not in script
        # passwords come from Secrets, never as literal values
        for env in c["env"]:
            if env["name"] in secret_vars | {"MINIO_ROOT_USER"}:
                assert "valueFrom" in env and "value" not in env, env["name"]
    sql = container(setup_job, "postgres")["args"][0]
    assert "\\getenv catalog_password CATALOG_PASSWORD" in sql and "\\getenv dagster_password DAGSTER_PASSWORD" in sql
    assert "SET log_min_error_statement = panic;" in sql and "\\set VERBOSITY terse" in sql


def test_a_rotation_changes_the_client_secrets_and_the_stream_but_not_minio_or_postgres(helm, objects):
    rotated = render(helm, {"credentials.rotation": 3})
    for name in (CLIENT, DAGSTER):
        assert by_name(objects, "Secret")[name]["metadata"]["annotations"]["shopstream.io/credentials-rotation"] == "0"
        assert by_name(rotated, "Secret")[name]["metadata"]["annotations"]["shopstream.io/credentials-rotation"] == "3"
    assert "shopstream.io/credentials-rotation" not in by_name(rotated, "Secret")[ADMIN]["metadata"]["annotations"]
    [before], [after] = by_name(objects, "SparkApplication").values(), by_name(rotated, "SparkApplication").values()
    for role in ("driver", "executor"):
        assert before["spec"][role]["annotations"] == {"shopstream.io/credentials-rotation": "0"}
        assert after["spec"][role]["annotations"] == {"shopstream.io/credentials-rotation": "3"}
    # MinIO and PostgreSQL (emptyDir data) must not restart: their objects do not change at all
    assert by_name(objects, "Deployment")["shopstream-minio"] == by_name(rotated, "Deployment")["shopstream-minio"]
    assert (
        by_name(objects, "StatefulSet")["shopstream-postgres"] == by_name(rotated, "StatefulSet")["shopstream-postgres"]
    )
    # nor does anything else the operator or Dagster read at start, besides the stream
    for kind in ("ConfigMap", "Job", "NetworkPolicy"):
        assert by_name(objects, kind) == by_name(rotated, kind), kind


def test_the_roles_are_checked(helm):
    command = [str(helm), "template", "x", str(CHART), "--kube-version", KUBE_VERSION]
    for sets, message in (
        (["lake.catalogUser=postgres"], "is also postgres.superuser"),
        (["lake.dagsterUser=admin", "postgres.superuser=admin"], "is also postgres.superuser"),
        (["lake.dagsterUser=shopstream"], "must differ"),
    ):
        done = subprocess.run([*command, *[a for s in sets for a in ("--set", s)]], capture_output=True, text=True)
        assert done.returncode != 0 and message in done.stderr, (sets, done.stderr)
    for bad in (
        "credentials.rotation=-1",
        "credentials.rotation=soon",
        "lake.catalogUser=Bad-Role",
        "minio.lakeUser=x",
        "networkPolicy.apiServer.cidrs={10.0.0.1}",
        "networkPolicy.enabled=maybe",
    ):
        done = subprocess.run([*command, "--set", bad], capture_output=True, text=True)
        assert done.returncode != 0 and "values don't meet the specifications of the schema" in done.stderr, bad


# -- the MinIO half of the setup Job, for real --------------------------------------------------


@pytest.fixture
def minio(tmp_path):
    """A real MinIO server (tests/tools) on a free port, with root credentials of the test's own."""
    tools = build("minio")
    port = free_port()
    root = {"MINIO_ROOT_USER": "root" + os.urandom(6).hex(), "MINIO_ROOT_PASSWORD": os.urandom(16).hex()}
    log = open(tmp_path / "minio.log", "wb")
    server = subprocess.Popen(
        [
            str(tools / "minio"),
            "server",
            str(tmp_path / "data"),
            "--address",
            f"127.0.0.1:{port}",
            "--console-address",
            f"127.0.0.1:{free_port()}",
            "--quiet",
        ],
        env={**os.environ, **root},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield {"url": f"http://127.0.0.1:{port}", "tools": tools, "root": root, "home": tmp_path}
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def run_minio_setup(setup_job, minio, secret_key: str) -> subprocess.CompletedProcess:
    script = container(setup_job, "minio")["args"][0].replace(
        "/tmp/lake-policy.json", str(minio["home"] / "policy.json")
    )
    env = {
        "PATH": f"{minio['tools']}:{os.environ['PATH']}",
        "HOME": str(minio["home"]),
        "MINIO_URL": minio["url"],
        **minio["root"],
        "LAKE_ACCESS_KEY": "shopstream-lake",
        "LAKE_SECRET_KEY": secret_key,
    }
    return subprocess.run(["/bin/sh", "-ec", script], env=env, capture_output=True, text=True, timeout=120)


def as_user(minio, alias: str, access: str, secret: str, *command: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{minio['tools']}:{os.environ['PATH']}", "HOME": str(minio["home"] / alias)}
    mc = str(minio["tools"] / "mc")
    # mc checks the keys when it sets the alias: wrong ones fail here already
    alias_set = subprocess.run(
        [mc, "alias", "set", alias, minio["url"]],
        input=f"{access}\n{secret}\n",
        env=env,
        capture_output=True,
        text=True,
    )
    if alias_set.returncode != 0:
        return alias_set
    return subprocess.run(
        [mc, *[c.replace("@", f"{alias}/") for c in command]], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_minio_setup_gives_the_lake_user_its_bucket_and_nothing_else(setup_job, minio, tmp_path):
    first = run_minio_setup(setup_job, minio, "k" * 40)
    assert first.returncode == 0, first.stderr
    again = run_minio_setup(setup_job, minio, "k" * 40)  # idempotent
    assert again.returncode == 0, again.stderr
    for output in (first.stdout + first.stderr, again.stdout + again.stderr):
        assert "k" * 40 not in output and minio["root"]["MINIO_ROOT_PASSWORD"] not in output
    sample = tmp_path / "sample.txt"
    sample.write_text("hello")
    user = ("user", "shopstream-lake", "k" * 40)
    assert as_user(minio, *user, "cp", str(sample), "@shopstream/warehouse/sample.txt").returncode == 0
    assert as_user(minio, *user, "cat", "@shopstream/warehouse/sample.txt").stdout == "hello"
    assert as_user(minio, *user, "rm", "@shopstream/warehouse/sample.txt").returncode == 0
    root = ("root", minio["root"]["MINIO_ROOT_USER"], minio["root"]["MINIO_ROOT_PASSWORD"])
    assert as_user(minio, *root, "mb", "@other").returncode == 0
    for denied in (
        ("ls", "@other"),
        ("cp", str(sample), "@other/x"),
        ("mb", "@newbucket"),
        ("admin", "user", "list", "user"),
        ("rb", "--force", "@shopstream"),
    ):
        assert as_user(minio, *user, *denied).returncode != 0, denied
    # a rotation: the same user, a new key; the old one stops working
    rotated = run_minio_setup(setup_job, minio, "r" * 40)
    assert rotated.returncode == 0, rotated.stderr
    time.sleep(0.5)
    assert as_user(minio, "new", "shopstream-lake", "r" * 40, "ls", "@shopstream").returncode == 0
    assert as_user(minio, "old", "shopstream-lake", "k" * 40, "ls", "@shopstream").returncode != 0
