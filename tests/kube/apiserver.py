"""A real Kubernetes API server for the tests: etcd and kube-apiserver (built from the Go module
proxy by tests/tools/build.sh) on free ports on 127.0.0.1, with their own certificates and
service-account keys, RBAC on, and a kubeconfig for an administrator.

No controller-manager or kubelet runs: objects are stored and validated, admission and RBAC
apply, watches behave as on any cluster; nothing is scheduled. What the project needs beyond that
(the Spark operator's reconciliation) is played by tests/kube/operator.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import select
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from shopstream.events.broker import free_port

# -- certificates -------------------------------------------------------------------------------


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def _certificate(subject: x509.Name, key, issuer: x509.Name, issuer_key, *, ca: bool = False, sans=(), client=False):
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if not ca:
        usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(common: str, organization: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if organization:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


@dataclass
class Credentials:
    ca: bytes
    serving_cert: bytes
    serving_key: bytes
    admin_cert: bytes
    admin_key: bytes
    sa_public: bytes
    sa_private: bytes

    @classmethod
    def generate(cls) -> Credentials:
        ca_key, serving_key, admin_key, sa_key = _key(), _key(), _key(), _key()
        ca_name = _name("shopstream-test-ca")
        ca = _certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
        sans = [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        ]
        serving = _certificate(_name("kube-apiserver"), serving_key, ca_name, ca_key, sans=sans)
        # system:masters is the built-in group bound to cluster-admin.
        admin = _certificate(_name("test-admin", "system:masters"), admin_key, ca_name, ca_key, client=True)
        pem = serialization.Encoding.PEM
        return cls(
            ca.public_bytes(pem),
            serving.public_bytes(pem),
            _pem_key(serving_key),
            admin.public_bytes(pem),
            _pem_key(admin_key),
            sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo),
            _pem_key(sa_key),
        )


# -- a proxy whose connections the tests can cut ---------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `cut()` drops every open connection at once, as a
    network failure or a load balancer restart would, and `refuse_for()` hangs up on every new
    connection for a while, as an API server that is restarting does."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.refused = 0
        self._refuse_until = 0.0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self._refuse_until:
                client.close()
                self.refused += 1
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        raise ConnectionError
                    (b if source is a else a).sendall(data)
        except (OSError, ConnectionError, ValueError):
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> int:
        """Close every live connection; returns how many there were."""
        with self._lock:
            live, self._connections = self._connections, []
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        return len(live) // 2

    def refuse_for(self, seconds: float) -> None:
        """Drop the live connections and hang up on new ones for `seconds`."""
        self._refuse_until = time.monotonic() + seconds
        self.cut()

    def close(self) -> None:
        self._stopped.set()
        self.listener.close()
        self.cut()


# -- the server ------------------------------------------------------------------------------------


@dataclass
class KubeAPIServer:
    workdir: Path
    binaries: dict[str, Path] = field(default_factory=dict)
    etcd_port: int = 0
    port: int = 0
    started_in_seconds: float = 0.0

    def start(self, timeout: float = 120) -> KubeAPIServer:
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.credentials = Credentials.generate()
        files = {
            "ca.crt": self.credentials.ca,
            "serving.crt": self.credentials.serving_cert,
            "serving.key": self.credentials.serving_key,
            "sa.pub": self.credentials.sa_public,
            "sa.key": self.credentials.sa_private,
        }
        for name, data in files.items():
            (self.workdir / name).write_bytes(data)
        self.etcd_port, peer, self.port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        self._logs = {name: open(self.workdir / f"{name}.log", "wb") for name in ("etcd", "kube-apiserver")}
        self.etcd = subprocess.Popen(
            [
                str(self.binaries["etcd"]),
                "--name",
                "test",
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                f"test=http://127.0.0.1:{peer}",
                "--log-level",
                "warn",
                "--unsafe-no-fsync",
            ],
            stdout=self._logs["etcd"],
            stderr=subprocess.STDOUT,
        )
        d = self.workdir
        self.apiserver = subprocess.Popen(
            [
                str(self.binaries["kube-apiserver"]),
                "--etcd-servers",
                etcd_url,
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                str(self.port),
                "--tls-cert-file",
                str(d / "serving.crt"),
                "--tls-private-key-file",
                str(d / "serving.key"),
                "--client-ca-file",
                str(d / "ca.crt"),
                "--authorization-mode",
                "RBAC",
                "--service-account-issuer",
                "https://kubernetes.default.svc",
                "--service-account-key-file",
                str(d / "sa.pub"),
                "--service-account-signing-key-file",
                str(d / "sa.key"),
                "--service-cluster-ip-range",
                "10.0.0.0/24",
                # No controller-manager creates "default" service accounts, so the admission plugin that
                # requires them is off; the tests create the accounts they use.
                "--disable-admission-plugins",
                "ServiceAccount",
                # Watches read etcd directly, so a compacted revision gives a real 410 Gone; and only
                # the tests compact.
                "--watch-cache=false",
                "--etcd-compaction-interval=0",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=1",
            ],
            stdout=self._logs["kube-apiserver"],
            stderr=subprocess.STDOUT,
        )
        self.kubeconfig = self.write_kubeconfig(self.workdir / "admin.kubeconfig", self.port)
        self._wait_ready(timeout)
        self.proxy = TcpProxy(self.port)
        self.proxied_kubeconfig = self.write_kubeconfig(self.workdir / "proxied.kubeconfig", self.proxy.port)
        self.started_in_seconds = time.monotonic() - began
        return self

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.workdir / "ca.crt"))
        cert, key = self.workdir / "admin.crt", self.workdir / "admin.key"
        cert.write_bytes(self.credentials.admin_cert)
        key.write_bytes(self.credentials.admin_key)
        context.load_cert_chain(str(cert), str(key))
        return context

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        context = self._ssl()
        last = ""
        while time.monotonic() < deadline:
            for name, process in (("etcd", self.etcd), ("kube-apiserver", self.apiserver)):
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=context, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise RuntimeError(f"kube-apiserver not ready after {timeout}s ({last}):\n{self.log_tail('kube-apiserver')}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        self._logs[name].flush()
        return "\n".join((self.workdir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])

    def write_kubeconfig(self, path: Path, port: int, user: dict | None = None) -> Path:
        b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
        user = user or {
            "client-certificate-data": b64(self.credentials.admin_cert),
            "client-key-data": b64(self.credentials.admin_key),
        }
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "test",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": f"https://127.0.0.1:{port}",
                        "certificate-authority-data": b64(self.credentials.ca),
                    },
                }
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def api_client(self, kubeconfig: Path | None = None):
        from kubernetes import config

        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig that authenticates as a service account, with a token from the TokenRequest API."""
        from kubernetes import client

        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        )
        token = client.CoreV1Api(self.api_client()).create_namespaced_service_account_token(name, namespace, request)
        return self.write_kubeconfig(
            self.workdir / f"sa-{namespace}-{name}.kubeconfig", self.port, {"token": token.status.token}
        )

    def compact(self) -> int:
        """Compact etcd at its current revision (as the API server does every few minutes on a real
        cluster); returns that revision. Watches from older resourceVersions then get 410 Gone."""
        base = f"http://127.0.0.1:{self.etcd_port}/v3/kv"

        def post(path: str, body: dict) -> dict:
            request = urllib.request.Request(f"{base}/{path}", data=json.dumps(body).encode(), method="POST")
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())

        revision = int(post("range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"])
        post("compaction", {"revision": revision, "physical": True})
        return revision

    def stop(self) -> None:
        if getattr(self, "proxy", None):
            self.proxy.close()
        for process in (getattr(self, "apiserver", None), getattr(self, "etcd", None)):
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in getattr(self, "_logs", {}).values():
            log.close()
