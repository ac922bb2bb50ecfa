"""skaffold.yaml as the pinned skaffold sees it: the binary (built from its Go module), run apart
from the machine (its own HOME and global config, no kube context, no Docker daemon), and a small
registry on 127.0.0.1 standing in for the base images a kind-local build starts from."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.deploy.chart import REPO
from tests.tools import skaffold as skaffold_binary


@dataclass
class Skaffold:
    binary: Path
    env: dict[str, str]

    def run(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(self.binary), *args],
            cwd=REPO,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check:
            assert done.returncode == 0, f"skaffold {' '.join(args)} failed:\n{done.stderr}"
        return done

    def configs(self, *args: str, env: dict[str, str] | None = None) -> list[dict]:
        """The configs skaffold resolves (profiles applied, defaults set, `requires` followed), in the
        order it deploys them."""
        return [c for c in yaml.safe_load_all(self.run("diagnose", "--yaml-only", *args, env=env).stdout) if c]

    def tags(self, *args: str, env: dict[str, str] | None = None) -> dict[str, str]:
        """image -> the tag `skaffold build --dry-run` computes (nothing is built)."""
        path = Path(self.env["HOME"]) / "tags.json"
        self.run("build", "--dry-run", "--file-output", str(path), *args, env=env)
        return {b["imageName"]: b["tag"] for b in json.loads(path.read_text())["builds"]}

    def render(self, *args: str, env: dict[str, str] | None = None) -> list[dict]:
        return [d for d in yaml.safe_load_all(self.run("render", "--offline", *args, env=env).stdout) if d]


@pytest.fixture(scope="session")
def skaffold(helm, tmp_path_factory) -> Skaffold:
    """Only what the run needs from the environment: PATH (skaffold calls `helm template`, so the
    pinned helm comes first) and a throwaway HOME; no update check, metrics or survey, a kubeconfig
    and a Docker socket that do not exist, so nothing here can reach a real cluster or daemon."""
    home = tmp_path_factory.mktemp("skaffold-home")
    (home / ".skaffold").mkdir()
    (home / ".skaffold" / "config").write_text(
        yaml.safe_dump(
            {
                "global": {"update-check": False, "collect-metrics": False, "survey": {"disable-prompt": True}},
                "kubeContexts": [],
            }
        )
    )
    env = {
        "PATH": f"{helm.parent}:/usr/bin:/bin",
        "HOME": str(home),
        "KUBECONFIG": str(home / "no-kubeconfig"),
        "DOCKER_HOST": f"unix://{home / 'no-docker.sock'}",
        "LANG": "C.UTF-8",
    }
    return Skaffold(skaffold_binary(), env)


# -- a registry for base images -------------------------------------------------------------------

# One empty linux/amd64 image: its config blob and a manifest pointing at it.
IMAGE_CONFIG = json.dumps(
    {
        "architecture": "amd64",
        "os": "linux",
        "config": {"WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
).encode()
CONFIG_DIGEST = "sha256:" + hashlib.sha256(IMAGE_CONFIG).hexdigest()
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(IMAGE_CONFIG),
            "digest": CONFIG_DIGEST,
        },
        "layers": [],
    }
).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


@dataclass
class Registry:
    """Serves that image under every name over plain HTTP (go-containerregistry, inside skaffold,
    falls back to HTTP for 127.0.0.1) and records each `repository:tag` whose manifest is asked for."""

    asked: list[str] = field(default_factory=list)

    def __post_init__(self):
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # skaffold's first, TLS, attempt is noise here
                pass

            def reply(self, body: bytes, content_type: str, digest: str | None = None):
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                if digest:
                    self.send_header("Docker-Content-Digest", digest)
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)

            def do_GET(self):
                if self.path == "/v2/":
                    return self.reply(b"{}", "application/json")
                repository, sep, ref = self.path.removeprefix("/v2/").partition("/manifests/")
                if sep:
                    registry.asked.append(f"{repository}:{ref}")
                    return self.reply(MANIFEST, "application/vnd.docker.distribution.manifest.v2+json", MANIFEST_DIGEST)
                if self.path.endswith(f"/blobs/{CONFIG_DIGEST}"):
                    return self.reply(IMAGE_CONFIG, "application/octet-stream", CONFIG_DIGEST)
                self.send_response(404)
                self.end_headers()

            do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def registry():
    served = Registry()
    yield served
    served.close()
