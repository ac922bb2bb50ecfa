"""Every container image the cluster tests run, built on this machine: no registry is reachable, so
the base is a Debian root filesystem from debootstrap (`docker import`), and everything else comes
from Debian packages, PyPI, Maven Central and Go binaries (tests/tools/build.sh).

    build_images(["spark", "kafka"])
    # -> {"debian": ..., "jre": ..., "maven": ..., "spark-base": ..., "spark": ..., "kafka": ...}
    python -m tests.cluster.images [--verify] [NAME...]   # builds, prints one image reference per line

Images (dependencies are built first; the Dockerfiles are in tests/cluster/images/<name>/):

    debian          shopstream.local/debian:bookworm-<hash>   debootstrap minbase + ca-certificates + apt sources
    jre             shopstream.local/jre:<hash>               + Debian's OpenJDK 17 runtime (parent of the JVM images)
    maven           shopstream.local/maven:<hash>             + JDK 17 and Maven (the MAVEN_IMAGE of images/spark)
    spark-base      shopstream.local/spark-base:<hash>        Spark 4.0 from the pip pyspark package (the SPARK_IMAGE)
    python          shopstream.local/python:<hash>            Debian's Python 3.11 in a venv first on PATH
                                                              (the PYTHON_IMAGE)
    postgres        shopstream.local/postgres:<hash>          Debian's PostgreSQL 15, the official image's env
                                                              contract, uid 70
    kafka           shopstream.local/kafka:<hash>             a KRaft broker from jobs/pom.xml's kafka-broker
                                                              profile, uid 1001
    minio           shopstream.local/minio:<hash>             minio + mc (Go, tests/tools/minio), uid 1000
    spark-operator  shopstream.local/spark-operator:<hash>    spark-base + the Kubeflow operator
                                                              (tests/tools/spark-operator)
    spark           shopstream-spark:<hash>                   images/spark/Dockerfile on maven + spark-base
    app             shopstream-app:<hash>                     images/dagster/Dockerfile on python

Each tag's hash covers the image's inputs (its Dockerfile folder, its bases' tags, pins, project
files, binaries), so a changed input builds afresh and an unchanged one is reused. Every image built
is checked (small `docker run --network none` commands). The base images are then saved to
~/.cache/shopstream/images/<name>-<hash>.tar.gz, which is loaded when Docker has lost the tag; the
project's two (spark, app) are not: their tags change with every code change, and on cached bases
they build in seconds (dependencies sit in layers before the code). Older archives and tags of the
same image are removed. Build logs: ~/.cache/shopstream/images/logs/.

Machine facts this relies on: builds that download use `--network host` (the egress guard of
../shared/kind stops the default bridge); checks never get a network. BuildKit is required (cache
mounts for apt, pip and Maven; a Dockerfile-specific .dockerignore): a docker CLI with buildx, or
Debian's 20.10 CLI with BuildKit built in (docker_client); the Dockerfiles carry no `# syntax=` line,
which would fetch a frontend image from Docker Hub. The base trusts the host's local CA
certificates (local_cas), as HTTPS to PyPI and Maven Central may pass an intercepting proxy.
Settings: SHOPSTREAM_DOCKER, SHOPSTREAM_DEBIAN_MIRROR, SHOPSTREAM_IMAGE_CA_DIR.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fcntl
import functools
import hashlib
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).with_suffix("")  # tests/cluster/images/
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shopstream" / "images"
LOGS = CACHE / "logs"

SUITE = "bookworm"
# Besides debootstrap's minbase: TLS roots for apt and pip, and useradd/groupadd for every child image.
DEBIAN_PACKAGES = ("ca-certificates", "passwd")
LOCAL = "shopstream.local"


class ImageBuildError(RuntimeError):
    """An image failed to build or its check failed; the message ends with the log's last lines."""


def log(message: str) -> None:
    print(f"[images {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- docker -------------------------------------------------------------------------------------


@functools.cache
def docker_client() -> str:
    """A docker CLI that builds with BuildKit (the Dockerfiles use RUN --mount=type=cache and a
    Dockerfile-specific .dockerignore): SHOPSTREAM_DOCKER, else `docker` when it has the buildx
    plugin or is older than 23 (BuildKit built in), else Debian's /usr/bin/docker."""
    wanted = os.environ.get("SHOPSTREAM_DOCKER")
    candidates = [wanted] if wanted else [shutil.which("docker"), "/usr/bin/docker"]
    tried = []
    for client in dict.fromkeys(c for c in candidates if c):
        path = shutil.which(client)
        if not path:
            continue
        if subprocess.run([path, "buildx", "version"], capture_output=True).returncode == 0:
            return path
        version = subprocess.run(
            [path, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True
        ).stdout.strip()
        tried.append(f"{path} {version or '?'}")
        major = re.match(r"(\d+)\.", version)
        if major and int(major.group(1)) < 23:
            return path
    raise ImageBuildError(
        "no docker client that builds with BuildKit: install the buildx plugin, or point "
        f"SHOPSTREAM_DOCKER at a docker CLI older than 23 (tried: {', '.join(tried) or 'none found'})"
    )


def docker(*args: str, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run([docker_client(), *args], **kwargs)


def have_image(ref: str) -> bool:
    return docker("image", "inspect", "--format", "{{.Id}}", ref).returncode == 0


def image_size(ref: str) -> int:
    done = docker("image", "inspect", "--format", "{{.Size}}", ref)
    return int(done.stdout.strip() or 0)


# -- inputs and hashes --------------------------------------------------------------------------


def _hash(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()[:12]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tree_inputs(folder: Path) -> list[str]:
    """Every file of a folder: relative path, mode and content digest."""
    return [
        f"{p.relative_to(folder)}:{oct(p.stat().st_mode & 0o777)}:{_file_digest(p)}"
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    ]


def _repo_inputs(*paths: str) -> list[str]:
    """The project files under `paths` (tracked and untracked, not ignored, as in the working tree)."""
    done = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *paths],
        cwd=REPO,
        capture_output=True,
    )
    if done.returncode == 0:
        files = sorted({f for f in done.stdout.decode().split("\0") if f})
    else:  # not a git checkout: every file
        files = sorted(
            str(p.relative_to(REPO))
            for path in paths
            for p in (REPO / path).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        )
    return [f"{f}:{_file_digest(REPO / f)}" for f in files if (REPO / f).is_file()]


def pyspark_version() -> str:
    """The one pyspark pin, from pyproject.toml."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        m = re.fullmatch(r"pyspark\s*==\s*([\w.]+)", dep.strip())
        if m:
            return m.group(1)
    raise ImageBuildError("pyproject.toml pins no pyspark==X (project.dependencies)")


@functools.cache
def _tool_dir(tool: str) -> Path:
    """The folder with a Go tool's binaries (tests/tools/build.sh: built once, then cached)."""
    if not (REPO / "tests" / "tools" / tool / "go.mod").is_file():
        raise ImageBuildError(f"tests/tools/{tool} is missing: the image needs the {tool} binaries it builds")
    started = time.monotonic()
    done = subprocess.run(["bash", str(REPO / "tests" / "tools" / "build.sh"), tool], capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageBuildError(f"building the {tool} binaries failed:\n{done.stderr.strip()[-3000:]}")
    folder = Path(done.stdout.strip().splitlines()[-1])
    log(f"{tool}: binaries from tests/tools/build.sh {tool}: {folder} ({time.monotonic() - started:.1f}s)")
    return folder


# -- the Debian base ----------------------------------------------------------------------------


def debian_mirrors() -> tuple[str, str | None]:
    """(main archive, security archive or None): the first of each in this machine's apt sources
    (deb822 *.sources first, then one-line sources.list entries). SHOPSTREAM_DEBIAN_MIRROR overrides
    the main one."""
    uris: list[str] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("URIs:"):
                uris += line.split()[1:]
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                words = line.split()
                if words[:1] == ["deb"]:
                    uris += [w for w in words[1:] if "://" in w][:1]
    main = os.environ.get("SHOPSTREAM_DEBIAN_MIRROR") or next((u for u in uris if "-security" not in u), None)
    if not main:
        raise ImageBuildError("no Debian mirror in this machine's apt sources; set SHOPSTREAM_DEBIAN_MIRROR")
    security = next((u for u in uris if "-security" in u), None)
    return main.rstrip("/"), security.rstrip("/") if security else None


def local_cas() -> list[Path]:
    """The CA certificates this machine trusts beyond Debian's bundle (the *.crt files of
    SHOPSTREAM_IMAGE_CA_DIR, default /usr/local/share/ca-certificates, Debian's place for them).
    The images trust them too: where HTTPS leaves through an intercepting proxy, pip and Maven in
    image builds need its CA exactly as the host does. SHOPSTREAM_IMAGE_CA_DIR= (empty) adds none."""
    folder = os.environ.get("SHOPSTREAM_IMAGE_CA_DIR", "/usr/local/share/ca-certificates")
    return sorted(Path(folder).rglob("*.crt")) if folder and Path(folder).is_dir() else []


def _customize_rootfs(root: Path, mirror: str, security: str | None) -> None:
    """What a Docker base image adds to a debootstrap tree: apt sources, the host's local CAs (for
    apt, pip and Java), no services started by package scripts, no docs or man pages, empty package
    lists and caches."""
    cas = root / "usr/local/share/ca-certificates"
    for ca in local_cas():
        shutil.copyfile(ca, cas / f"shopstream-host-{ca.name}")
    subprocess.run(["chroot", str(root), "update-ca-certificates"], check=True, capture_output=True)
    # pip trusts certifi's bundle, not the system's, unless told.
    (root / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    sources = [f"deb {mirror} {SUITE} main", f"deb {mirror} {SUITE}-updates main"]
    if security:
        sources.append(f"deb {security} {SUITE}-security main")
    (root / "etc/apt/sources.list").write_text("\n".join(sources) + "\n")
    for path in (root / "etc/apt/sources.list.d").glob("*"):
        path.unlink()
    (root / "etc/apt/apt.conf.d/90shopstream").write_text(
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\nAcquire::Languages "none";\n'
        'Acquire::Retries "3";\n'
    )
    (root / "etc/dpkg/dpkg.cfg.d/90shopstream-nodoc").write_text(
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\n"
        "path-exclude /usr/share/info/*\npath-exclude /usr/share/lintian/*\npath-exclude /usr/share/locale/*\n"
    )
    # What the path-excludes above keep out of later packages, removed from debootstrap's as well.
    for pattern in ("usr/share/man/*", "usr/share/info/*", "usr/share/lintian/*", "usr/share/locale/*"):
        for path in root.glob(pattern):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for path in root.glob("usr/share/doc/*/*"):
        if path.name != "copyright":
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    # Java's postinst registers man pages with update-alternatives: the directories must exist.
    for n in range(1, 9):
        (root / f"usr/share/man/man{n}").mkdir(parents=True, exist_ok=True)
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# No service starts during an image build.\nexit 101\n")
    policy.chmod(0o755)
    for pattern in (
        "var/lib/apt/lists/*",
        "var/cache/apt/*.bin",
        "var/cache/apt/archives/*.deb",
        "var/log/*.log",
        "var/log/apt/*",
        "var/cache/debconf/*-old",
        "var/lib/dpkg/*-old",
    ):
        for path in root.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()
    for name in ("etc/hostname", "etc/resolv.conf"):
        (root / name).write_text("")
    (root / "etc/machine-id").write_text("")


def _debian_hash() -> str:
    mirror, security = debian_mirrors()
    return _hash(
        "debian",
        SUITE,
        mirror,
        security or "",
        ",".join(DEBIAN_PACKAGES),
        *(f"{ca.name}:{_file_digest(ca)}" for ca in local_cas()),
        inspect.getsource(_customize_rootfs),
        inspect.getsource(_build_debian),
    )


def _build_debian(ref: str, archive: Path, logfile: Path) -> None:
    """debootstrap (once; the tarball is kept in the cache), then `docker import`."""
    if not archive.is_file():
        mirror, security = debian_mirrors()
        if not shutil.which("debootstrap"):
            if os.geteuid() != 0:
                raise ImageBuildError("debian: debootstrap is missing and installing it needs root")
            _run_logged(["apt-get", "install", "-y", "--no-install-recommends", "debootstrap"], logfile, "debian")
        scratch = CACHE / "scratch" / archive.name.removesuffix(".tar.gz")
        root = scratch / "rootfs"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            log(f"debian: debootstrap --variant=minbase {SUITE} from {mirror} ...")
            _run_logged(
                [
                    "nice",
                    "-n",
                    "10",
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(DEBIAN_PACKAGES)}",
                    SUITE,
                    str(root),
                    mirror,
                ],
                logfile,
                "debian",
            )
            _customize_rootfs(root, mirror, security)
            partial = archive.with_suffix(".partial")
            with open(partial, "wb") as out:
                tar = subprocess.Popen(
                    ["tar", "-C", str(root), "--numeric-owner", "-cf", "-", "."], stdout=subprocess.PIPE
                )
                gz = subprocess.run(["gzip", "-1"], stdin=tar.stdout, stdout=out)
                tar.stdout.close()
                if tar.wait() != 0 or gz.returncode != 0:
                    raise ImageBuildError(f"debian: packing {root} failed")
            partial.rename(archive)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            with contextlib.suppress(OSError):
                scratch.parent.rmdir()
    replaced = docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    _run_logged(
        [
            docker_client(),
            "import",
            "-c",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "-c",
            "ENV LANG=C.UTF-8",
            "-c",
            'CMD ["bash"]',
            str(archive),
            ref,
        ],
        logfile,
        "debian",
    )
    if replaced:  # a re-import leaves the previous image untagged (kept while child images use it)
        docker("rmi", replaced)


# -- image specifications -----------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    name: str
    deps: tuple[str, ...] = ()
    # extra inputs of the hash beyond the Dockerfile folder and the bases' tags
    inputs: Callable[[], list[str]] = lambda: []
    # build arguments: name -> value, given the references of the dependencies
    args: Callable[[dict[str, str]], dict[str, str]] = lambda refs: {"BASE_IMAGE": refs[next(iter(refs))]}
    # the build context (default: the image's folder)
    context: Callable[[], Path] | None = None
    # a project Dockerfile (repository-relative) instead of tests/cluster/images/<name>/Dockerfile
    project_dockerfile: str | None = None
    repository: str | None = None  # default shopstream.local/<name>

    @property
    def folder(self) -> Path:
        return REPO / self.project_dockerfile if self.project_dockerfile else HERE / self.name

    def ref(self, digest: str) -> str:
        if self.name == "debian":
            return f"{LOCAL}/debian:{SUITE}-{digest}"
        return f"{self.repository or f'{LOCAL}/{self.name}'}:{digest}"


def _base(dep: str) -> Callable[[dict[str, str]], dict[str, str]]:
    return lambda refs: {"BASE_IMAGE": refs[dep]}


def _jobs_pom() -> list[str]:
    return [f"{f}:{_file_digest(REPO / f)}" for f in ("jobs/pom.xml", "jobs/maven-settings.xml")]


IMAGES: dict[str, Image] = {
    i.name: i
    for i in [
        Image("debian"),
        Image("jre", ("debian",), args=_base("debian")),
        Image("maven", ("jre",), args=_base("jre")),
        Image(
            "spark-base",
            ("jre",),
            inputs=lambda: [f"pyspark=={pyspark_version()}"],
            args=lambda refs: {"BASE_IMAGE": refs["jre"], "PYSPARK_VERSION": pyspark_version()},
        ),
        Image("python", ("debian",), args=_base("debian")),
        Image("postgres", ("debian",), args=_base("debian")),
        Image(
            "kafka",
            ("jre", "maven"),
            inputs=_jobs_pom,
            context=lambda: REPO,
            args=lambda refs: {"BASE_IMAGE": refs["jre"], "MAVEN_IMAGE": refs["maven"]},
        ),
        Image(
            "minio",
            ("debian",),
            args=_base("debian"),
            context=lambda: _tool_dir("minio"),
            inputs=lambda: [_file_digest(_tool_dir("minio") / b) for b in ("minio", "mc")],
        ),
        Image(
            "spark-operator",
            ("spark-base",),
            args=_base("spark-base"),
            context=lambda: _tool_dir("spark-operator"),
            inputs=lambda: [_file_digest(_tool_dir("spark-operator") / "operator")],
        ),
        Image(
            "spark",
            ("maven", "spark-base"),
            project_dockerfile="images/spark",
            repository="shopstream-spark",
            context=lambda: REPO,
            inputs=lambda: _repo_inputs("jobs", "pyproject.toml", "images/spark", ".dockerignore"),
            args=lambda refs: {"MAVEN_IMAGE": refs["maven"], "SPARK_IMAGE": refs["spark-base"]},
        ),
        Image(
            "app",
            ("python",),
            project_dockerfile="images/dagster",
            repository="shopstream-app",
            context=lambda: REPO,
            inputs=lambda: _repo_inputs("jobs", "dagster_repo", "pyproject.toml", "images/dagster", ".dockerignore"),
            args=lambda refs: {"PYTHON_IMAGE": refs["python"]},
        ),
    ]
}


def _order(names: list[str]) -> list[str]:
    """`names` and their dependencies, dependencies first."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name not in IMAGES:
            raise ImageBuildError(f"unknown image {name!r}; images: {', '.join(IMAGES)}")
        for dep in IMAGES[name].deps:
            visit(dep)
        if name not in ordered:
            ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def _digest(image: Image, refs: dict[str, str]) -> str:
    if image.name == "debian":
        return _debian_hash()
    return _hash(image.name, *_tree_inputs(image.folder), *(refs[d] for d in image.deps), *image.inputs())


# -- building -----------------------------------------------------------------------------------


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _run_logged(
    command: list[str], logfile: Path, name: str, env: dict | None = None, stdin=subprocess.DEVNULL
) -> None:
    with open(logfile, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, stdin=stdin, env=env)
    if done.returncode != 0:
        raise ImageBuildError(
            f"image {name}: `{' '.join(command[:3])} ...` failed with exit code {done.returncode} "
            f"(log: {logfile}); last lines:\n{_tail(logfile)}"
        )


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    (CACHE / "locks").mkdir(parents=True, exist_ok=True)
    with open(CACHE / "locks" / name, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{name}: another process is building it; waiting")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _docker_build(image: Image, ref: str, refs: dict[str, str], logfile: Path, no_cache: bool = False) -> None:
    args = image.args({d: refs[d] for d in image.deps})
    context = image.context() if image.context else image.folder
    command = [
        docker_client(),
        "build",
        "--network",
        "host",
        "--progress",
        "plain",
        "-f",
        str(image.folder / "Dockerfile"),
        "-t",
        ref,
        "--label",
        f"io.shopstream.test-image={image.name}",
    ]
    command += ["--no-cache"] if no_cache else []
    for key, value in args.items():
        command += ["--build-arg", f"{key}={value}"]
    command.append(str(context))
    _run_logged(command, logfile, image.name, env={**os.environ, "DOCKER_BUILDKIT": "1"})


def _save(name: str, ref: str, archive: Path, logfile: Path) -> None:
    partial = archive.with_suffix(".partial")
    with open(partial, "wb") as out, open(logfile, "a") as err:
        save = subprocess.Popen([docker_client(), "save", ref], stdout=subprocess.PIPE, stderr=err)
        gz = subprocess.run(["gzip", "-1"], stdin=save.stdout, stdout=out, stderr=err)
        save.stdout.close()
        if save.wait() != 0 or gz.returncode != 0:
            partial.unlink(missing_ok=True)
            raise ImageBuildError(
                f"image {name}: `docker save {ref}` failed (log: {logfile}); last lines:\n{_tail(logfile)}"
            )
    partial.rename(archive)


def _prune_images(name: str, keep: str) -> None:
    """Untag this image's older builds (other tags of its repository) and drop its dangling ones:
    every change of an input makes a new tag, and the project images are 1 to 2 GB each."""
    repository, _, tag = keep.rpartition(":")
    prefix = tag.rpartition("-")[0]  # debian's tags are bookworm-<hash>
    listed = docker("images", repository, "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    old = [
        r
        for r in listed
        if r != keep
        and re.fullmatch(rf"{re.escape(repository)}:{re.escape(prefix + '-' if prefix else '')}[0-9a-f]{{12}}", r)
    ]
    dangling = docker(
        "images", "-q", "--filter", "dangling=true", "--filter", f"label=io.shopstream.test-image={name}"
    ).stdout.split()
    if old or dangling:
        docker("rmi", *old, *dangling)


def _prune_archives(name: str, keep: Path) -> None:
    pattern = re.compile(rf"^{re.escape(name)}-[0-9a-f]{{12}}\.(tar\.gz|partial)$")
    for path in CACHE.iterdir():
        if path != keep and pattern.match(path.name):
            path.unlink(missing_ok=True)
    for path in LOGS.glob(f"{name}-*.log"):
        if path.stem != keep.name.removesuffix(".tar.gz") and re.fullmatch(
            rf"{re.escape(name)}-[0-9a-f]{{12}}", path.stem
        ):
            path.unlink(missing_ok=True)


def build_image(
    name: str,
    refs: dict[str, str] | None = None,
    verify: bool = True,
    rebuild: bool = False,
    saver: Callable[..., None] | None = None,
) -> str:
    """One image, its dependencies already in `refs`: reuse the tag, else load the archive, else
    build (then check it, and archive it unless it is a project image). `rebuild` builds afresh
    (debootstrap again, `docker build --no-cache`; BuildKit's apt, pip and Maven cache mounts stay).
    `saver(function, *args)` may write the archive later (build_images does it in the background).
    Returns the image reference."""
    image = IMAGES[name]
    refs = refs or {}
    digest = _digest(image, refs)
    ref = image.ref(digest)
    archive = CACHE / f"{name}-{digest}.tar.gz"
    LOGS.mkdir(parents=True, exist_ok=True)
    logfile = LOGS / f"{name}-{digest}.log"
    with _lock(name):
        started = time.monotonic()
        if rebuild:
            if name == "debian":
                archive.unlink(missing_ok=True)
        elif have_image(ref):
            log(f"{name}: {ref} present ({time.monotonic() - started:.1f}s)")
            return ref
        elif archive.is_file() and name != "debian":
            _run_logged([docker_client(), "load", "-i", str(archive)], logfile, name)
            log(f"{name}: {ref} loaded from {archive.name} in {time.monotonic() - started:.1f}s")
            return ref
        logfile.write_text(f"# {name} -> {ref}\n")
        how = "imported from the cached root filesystem" if name == "debian" and archive.is_file() else "built"
        log(f"{name}: building {ref} (log: {logfile}) ...")
        if name == "debian":
            _build_debian(ref, archive, logfile)
        else:
            _docker_build(image, ref, refs, logfile, no_cache=rebuild)
        built = time.monotonic() - started
        checked = 0.0
        if verify:
            try:
                checked = verify_image(name, ref, logfile)
            except ImageBuildError:
                docker("rmi", ref)  # never reuse an image that failed its check
                raise
        log(f"{name}: {ref} {how} in {built:.1f}s, checked in {checked:.1f}s ({image_size(ref) / 1e6:.0f} MB)")
        _prune_images(name, ref)
        if name == "debian" or image.project_dockerfile:  # debian's archive is kept by _build_debian
            _prune_archives(name, archive)
        elif saver is None:
            _archive(name, ref, archive, logfile)
        else:
            saver(_archive, name, ref, archive, logfile)
        return ref


def _archive(name: str, ref: str, archive: Path, logfile: Path) -> None:
    started = time.monotonic()
    with _lock(f"{name}-archive"):
        _save(name, ref, archive, logfile)
        _prune_archives(name, archive)
    log(f"{name}: archived to {archive} in {time.monotonic() - started:.1f}s ({archive.stat().st_size / 1e6:.0f} MB)")


def image_refs(names: list[str] | None = None) -> dict[str, str]:
    """The references `build_images(names)` returns, without building (the Go binaries of minio and
    spark-operator are built if missing, as their digests are inputs)."""
    refs: dict[str, str] = {}
    for name in _order(names or list(IMAGES)):
        refs[name] = IMAGES[name].ref(_digest(IMAGES[name], refs))
    return refs


def build_images(names: list[str] | None = None, verify: bool = True, rebuild: bool = False) -> dict[str, str]:
    """Build (or reuse) the named images and their dependencies, dependencies first; all when
    `names` is None. Returns logical name -> image reference, dependencies included.
    `verify=False` skips the checks of newly built images; `rebuild=True` builds all of them afresh."""
    started = time.monotonic()
    refs: dict[str, str] = {}
    # Archives are written one at a time while the next images build.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-archive") as pool:
        saves: list[concurrent.futures.Future] = []
        for name in _order(names or list(IMAGES)):
            refs[name] = build_image(
                name, refs, verify=verify, rebuild=rebuild, saver=lambda fn, *args: saves.append(pool.submit(fn, *args))
            )
    for save in saves:
        save.result()  # an archive that failed raises here
    log(f"{len(refs)} images ready in {time.monotonic() - started:.1f}s")
    return refs


# -- checks -------------------------------------------------------------------------------------


def _check_run(logfile: Path, name: str, *args: str, timeout: float = 300, expect: str | None = None) -> str:
    command = [docker_client(), *args]
    with open(logfile, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        with open(logfile, "a") as out:
            out.write(output + f"\n(timed out after {timeout:.0f}s)\n")
        raise ImageBuildError(
            f"image {name}: check `{' '.join(args[-4:])}` timed out after {timeout:.0f}s "
            f"(log: {logfile}); last lines:\n{_tail(logfile)}"
        ) from None
    output = done.stdout + done.stderr
    with open(logfile, "a") as out:
        out.write(output + f"(exit {done.returncode})\n")
    if done.returncode != 0 or (expect is not None and expect not in output):
        problem = f"exit code {done.returncode}" if done.returncode else f"output lacks {expect!r}"
        raise ImageBuildError(
            f"image {name}: check `{' '.join(args)[-200:]}` failed ({problem}; log: {logfile}); "
            f"last lines:\n{_tail(logfile)}"
        )
    return output


@contextlib.contextmanager
def _container(logfile: Path, name: str, ref: str, *options: str) -> Iterator[str]:
    """A detached container without network; removed afterwards (its log goes to `logfile`)."""
    cname = f"shopstream-check-{name}-{uuid.uuid4().hex[:8]}"
    _check_run(logfile, name, "run", "-d", "--network", "none", "--name", cname, *options, ref, timeout=60)
    try:
        yield cname
    finally:
        logs = docker("logs", cname)
        with open(logfile, "a") as out:
            out.write(f"\n# docker logs {cname}\n{logs.stdout}{logs.stderr}")
        docker("rm", "-f", cname)


def _wait_exec(logfile: Path, name: str, cname: str, command: list[str], timeout: float, expect: str = "") -> str:
    deadline = time.monotonic() + timeout
    while True:
        done = docker("exec", cname, *command)
        if done.returncode == 0 and expect in done.stdout:
            return done.stdout
        state = docker("inspect", "--format", "{{.State.Running}}", cname).stdout.strip()
        if state != "true" or time.monotonic() > deadline:
            logs = docker("logs", "--tail", "30", cname)
            with open(logfile, "a") as out:
                out.write(f"\n$ docker exec {cname} {' '.join(command)}\n{done.stdout}{done.stderr}")
            why = "the container exited" if state != "true" else f"not after {timeout:.0f}s"
            raise ImageBuildError(
                f"image {name}: `{' '.join(command)}` did not succeed ({why}; log: {logfile}); "
                f"last lines:\n{(logs.stdout + logs.stderr).strip()[-4000:]}\n"
                f"{(done.stdout + done.stderr).strip()[-2000:]}"
            )
        time.sleep(2)


def _check_postgres(logfile: Path, ref: str) -> None:
    init = Path(tempfile.mkdtemp(prefix="shopstream-pg-init-"))
    try:
        (init / "10-extra.sql").write_text("CREATE DATABASE extra OWNER lake;\n")
        (init / "20-marker.sh").write_text(
            'psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB"'
            ' -c "CREATE TABLE marker (x int)"\n'
        )
        init.chmod(0o755)
        for f in init.iterdir():
            f.chmod(0o644)
        # As the chart runs it: uid 70, PGDATA a subfolder of a volume, /var/run/postgresql a volume.
        with _container(
            logfile,
            "postgres",
            ref,
            "--user",
            "70:70",
            "-e",
            "POSTGRES_USER=lake",
            "-e",
            "POSTGRES_PASSWORD=s3cret pass",
            "-e",
            "POSTGRES_DB=catalog",
            "-e",
            "PGDATA=/var/lib/postgresql/data/pgdata",
            "--tmpfs",
            "/var/lib/postgresql/data",
            "--tmpfs",
            "/var/run/postgresql",
            "-v",
            f"{init}:/docker-entrypoint-initdb.d:ro",
        ) as c:
            _wait_exec(logfile, "postgres", c, ["pg_isready", "-U", "lake", "-d", "catalog"], 120)
            out = _wait_exec(
                logfile,
                "postgres",
                c,
                [
                    "env",
                    "PGPASSWORD=s3cret pass",
                    "psql",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "lake",
                    "-d",
                    "catalog",
                    "-tAc",
                    "SELECT current_user || ' ' || (SELECT count(*) FROM pg_database WHERE datname = 'extra') "
                    "|| ' ' || (SELECT count(*) FROM marker)",
                ],
                30,
                expect="lake 1 0",
            )
            with open(logfile, "a") as f:
                f.write(f"psql over TCP with the password: {out}")
            denied = docker("exec", c, "psql", "-h", "127.0.0.1", "-U", "lake", "-d", "catalog", "-w", "-c", "SELECT 1")
            if denied.returncode == 0 or "password" not in denied.stderr:
                raise ImageBuildError(
                    f"image postgres: a TCP connection without a password was not refused: {denied.stderr}"
                )
    finally:
        shutil.rmtree(init, ignore_errors=True)


def _check_kafka(logfile: Path, ref: str) -> None:
    with _container(
        logfile,
        "kafka",
        ref,
        "--hostname",
        "localhost",
        "-e",
        "KAFKA_TOPICS=alpha:3 beta:1:compact",
        "-e",
        "KAFKA_ADVERTISED_HOST=localhost",
        "-e",
        "KAFKA_HEAP_OPTS=-Xmx384m",
        "--tmpfs",
        "/var/lib/kafka:uid=1001,gid=1001",
    ) as c:
        _wait_exec(logfile, "kafka", c, ["test", "-f", "/var/lib/kafka/topics-ready"], 180)
        listed = _wait_exec(logfile, "kafka", c, ["kafka-topics", "--bootstrap-server", "localhost:9092", "--list"], 60)
        if {"alpha", "beta"} - set(listed.split()):
            raise ImageBuildError(f"image kafka: topics missing after creation; listed: {listed!r}")
        described = _wait_exec(
            logfile,
            "kafka",
            c,
            ["kafka-topics", "--bootstrap-server", "localhost:9092", "--describe", "--topic", "beta"],
            60,
        )
        if "cleanup.policy=compact" not in described:
            raise ImageBuildError(f"image kafka: topic beta is not compacted: {described!r}")
        described = _wait_exec(
            logfile,
            "kafka",
            c,
            ["kafka-topics", "--bootstrap-server", "localhost:9092", "--describe", "--topic", "alpha"],
            60,
        )
        if "PartitionCount: 3" not in described:
            raise ImageBuildError(f"image kafka: topic alpha has not 3 partitions: {described!r}")


_SPARK_COUNT = (
    "from pyspark.sql import SparkSession; "
    "s = SparkSession.builder.master('local[1]').config('spark.ui.enabled', 'false').getOrCreate(); "
    "print('count', s.range(1000).filter('id % 3 = 0').count()); s.stop()"
)


_SPARK_DRIVER_APP = """\
import sys
from pyspark.sql import SparkSession
s = SparkSession.builder.getOrCreate()
catalog = s.sparkContext._jvm.java.lang.Class.forName("org.apache.iceberg.spark.SparkCatalog").getName()
print("python", sys.executable, "count", s.range(10).count(), "catalog", catalog)
s.stop()
"""


def verify_image(name: str, ref: str, logfile: Path | None = None) -> float:
    """Small checks of a built image, all in containers without network. Returns the seconds taken;
    raises ImageBuildError when a check fails."""
    started = time.monotonic()
    if logfile is None:
        LOGS.mkdir(parents=True, exist_ok=True)
        logfile = LOGS / f"{name}-{ref.rpartition(':')[2].rpartition('-')[2]}.log"
    run = functools.partial(_check_run, logfile, name)
    # No network; the hostname `localhost` resolves without one (Java asks for it).
    none = ("run", "--rm", "--network", "none", "--hostname", "localhost")
    if name == "debian":
        run(
            *none,
            ref,
            "sh",
            "-ec",
            "cat /etc/debian_version; grep '^deb ' /etc/apt/sources.list; "
            "test -s /etc/ssl/certs/ca-certificates.crt; for c in useradd groupadd apt-get; do command -v $c; done",
        )
    elif name == "jre":
        run(*none, ref, "sh", "-c", 'java -version && test -x "$JAVA_HOME/bin/java"', expect="17.")
    elif name == "maven":
        run(*none, ref, "mvn", "-v", expect="Java version: 17")
    elif name == "spark-base":
        # Without a network the container's hostname resolves to nothing: Spark binds to loopback.
        local = ("-e", "SPARK_LOCAL_IP=127.0.0.1", "-e", "SPARK_LOCAL_HOSTNAME=localhost")
        run(*none, *local, ref, "spark-submit", "--version", expect=f"version {pyspark_version()}")
        run(*none, *local, ref, "python3", "-c", _SPARK_COUNT, expect="count 334")
        run(
            *none,
            "--entrypoint",
            "sh",
            ref,
            "-c",
            "id -u | grep -qx 185 && touch /opt/spark/work-dir/x && ls $SPARK_HOME/python/lib/pyspark.zip "
            "$SPARK_HOME/python/lib/py4j-*-src.zip $SPARK_HOME/jars/spark-kubernetes_2.13-*.jar",
        )
        # The executor contract, up to the JVM: the backend's class resolves and reports its arguments.
        run(
            *none,
            "-e",
            "SPARK_JAVA_OPT_1=-Dtwo=2",
            "-e",
            "SPARK_JAVA_OPT_0=-Done=1",
            "-e",
            "SPARK_EXECUTOR_MEMORY=256m",
            "-e",
            "SPARK_DRIVER_URL=spark://CoarseGrainedScheduler@127.0.0.1:1",
            "-e",
            "SPARK_EXECUTOR_ID=1",
            "-e",
            "SPARK_EXECUTOR_CORES=1",
            "-e",
            "SPARK_APPLICATION_ID=spark-check",
            "-e",
            "SPARK_EXECUTOR_POD_IP=127.0.0.1",
            "-e",
            "SPARK_RESOURCE_PROFILE_ID=0",
            "-e",
            "SPARK_EXECUTOR_POD_NAME=check-exec-1",
            "-e",
            "ENTRYPOINT_DRY_RUN=1",
            ref,
            "executor",
            expect="-Done=1 -Dtwo=2 -Xms256m -Xmx256m -cp /opt/spark/conf:/opt/spark/jars/\\* "
            "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend --driver-url",
        )
        run(
            *none,
            "-e",
            "SPARK_DRIVER_BIND_ADDRESS=10.0.0.7",
            "-e",
            "ENTRYPOINT_DRY_RUN=1",
            ref,
            "driver",
            "--properties-file",
            "/opt/spark/conf/spark.properties",
            "--class",
            "org.apache.spark.deploy.PythonRunner",
            "local:///app.py",
            expect="spark-submit --conf spark.driver.bindAddress=10.0.0.7 --deploy-mode client --properties-file",
        )
    elif name == "python":
        run(
            *none,
            ref,
            "sh",
            "-c",
            "python -V && pip -V && command -v useradd groupadd && python -c 'import ssl, sqlite3, venv'",
            expect="Python 3.11",
        )
    elif name == "postgres":
        _check_postgres(logfile, ref)
    elif name == "kafka":
        _check_kafka(logfile, ref)
    elif name == "minio":
        run(
            *none,
            "--entrypoint",
            "/bin/sh",
            ref,
            "-ec",
            "minio --version; mc --version; id -u | grep -qx 1000",
            expect="mc version",
        )
    elif name == "spark-operator":
        run(*none, ref, "--help", expect="controller")
        run(
            *none,
            "-e",
            "SPARK_LOCAL_IP=127.0.0.1",
            "-e",
            "SPARK_LOCAL_HOSTNAME=localhost",
            "--entrypoint",
            "sh",
            ref,
            "-c",
            "id -u | grep -qx 185 && spark-submit --version 2>&1 | grep -q version "
            "&& touch /etc/k8s-webhook-server/serving-certs/x",
        )
    elif name == "spark":
        run(*none, ref, "/opt/venv/bin/python", "-m", "shopstream", "--help", expect="streaming")
        # The driver pod's path: spark-submit in client mode, the image's Python, the baked-in jars.
        with tempfile.TemporaryDirectory(prefix="shopstream-spark-check-") as tmp:
            (Path(tmp) / "app.py").write_text(_SPARK_DRIVER_APP)
            Path(tmp).chmod(0o755)
            (Path(tmp) / "app.py").chmod(0o644)
            run(
                *none,
                "-v",
                f"{tmp}:/check:ro",
                "-e",
                "SPARK_DRIVER_BIND_ADDRESS=127.0.0.1",
                ref,
                "driver",
                "--master",
                "local[1]",
                "--conf",
                "spark.ui.enabled=false",
                "/check/app.py",
                expect="python /opt/venv/bin/python count 10 catalog org.apache.iceberg.spark.SparkCatalog",
            )
        run(
            *none,
            "--entrypoint",
            "sh",
            ref,
            "-c",
            "ls /opt/spark/jars | grep -E 'iceberg-spark-runtime|hadoop-aws|postgresql'",
            expect="iceberg-spark-runtime",
        )
    elif name == "app":
        run(
            *none,
            ref,
            "python",
            "-c",
            "import dagster_postgres, dagster_repo.definitions; print('definitions ok')",
            expect="definitions ok",
        )
        # what run pods write there: the IO manager's outputs, as the image's user
        run(*none, ref, "sh", "-c", 'mkdir "$DAGSTER_HOME/storage" && echo writable', expect="writable")
    return time.monotonic() - started


# -- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster.images",
        description="Build the cluster tests' images locally; print their references.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"images (default: all): {', '.join(IMAGES)}")
    parser.add_argument("--verify", action="store_true", help="run the checks on every image, also ones not built now")
    parser.add_argument("--no-verify", action="store_true", help="skip the checks of newly built images")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="build afresh even when Docker or the cache has the image (docker build --no-cache)",
    )
    args = parser.parse_args(argv)
    try:
        refs = build_images(args.names or None, verify=not args.no_verify, rebuild=args.rebuild)
        if args.verify:
            for name, ref in refs.items():
                log(f"{name}: checked in {verify_image(name, ref):.1f}s")
    except ImageBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name in args.names or refs:
        print(refs[name])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
