"""The shared S3 and Ray fixtures work, and which clients find the server from the environment.

Findings pinned here (pyarrow 26, s3fs 2026.9, Ray 2.60):
- ``pyarrow.fs.FileSystem.from_uri("s3://...")`` (and so ``pq.read_table("s3://...")`` and Ray
  Data given a bare ``s3://`` path) honours ``AWS_ENDPOINT_URL``; the ``S3FileSystem()``
  constructor does not, it always targets AWS unless ``endpoint_override`` is passed.
- s3fs (``fsspec.open("s3://...")``) honours ``AWS_ENDPOINT_URL`` through botocore.
"""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

TABLE = pa.table({"image_id": ["a", "b", "c"], "value": [1.5, 2.5, 3.5]})


def _write_table(s3_server, key: str) -> None:
    pq.write_table(TABLE, key, filesystem=s3_server.pyarrow_fs())


def _listening_addresses(pids: list[int]) -> set[str]:
    """IP addresses of the TCP sockets the given processes listen on (read from /proc)."""
    inodes = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            targets = [os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)]
        except OSError:
            continue
        inodes.update(t[len("socket:[") : -1] for t in targets if t.startswith("socket:["))
    addresses = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A is LISTEN
                continue
            raw = bytes.fromhex(local.split(":")[0])
            # /proc stores addresses as native-endian 32-bit words.
            words = [raw[i : i + 4][::-1] for i in range(0, width, 4)]
            address = ipaddress.ip_address(b"".join(words))
            mapped = getattr(address, "ipv4_mapped", None)
            addresses.add(str(mapped or address))
    return addresses


def test_s3_server_pyarrow_roundtrip(s3_server, s3_bucket):
    _write_table(s3_server, f"{s3_bucket}/roundtrip/part-0.parquet")

    read = pq.read_table(f"{s3_bucket}/roundtrip/part-0.parquet", filesystem=s3_server.pyarrow_fs())

    assert read.equals(TABLE)


def test_s3_bucket_is_fresh_and_empty(s3_server, s3_bucket):
    listing = s3_server.pyarrow_fs().get_file_info(pafs.FileSelector(s3_bucket, recursive=True))

    assert listing == []
    assert s3_bucket != s3_server.bucket


def test_pyarrow_from_uri_honours_aws_endpoint_url(s3_server, s3_bucket):
    _write_table(s3_server, f"{s3_bucket}/env/t.parquet")

    filesystem, path = pafs.FileSystem.from_uri(f"s3://{s3_bucket}/env/t.parquet")

    assert path == f"{s3_bucket}/env/t.parquet"
    assert pq.read_table(path, filesystem=filesystem).equals(TABLE)
    assert pq.read_table(f"s3://{s3_bucket}/env/t.parquet").equals(TABLE)


def test_pyarrow_constructor_ignores_aws_endpoint_url(s3_server):
    # Inspected, never used: an operation on it would try to reach AWS.
    options = pafs.S3FileSystem().__reduce__()[1][0]

    assert os.environ["AWS_ENDPOINT_URL"] == s3_server.endpoint_url
    assert options["endpoint_override"] == ""


def test_s3fs_honours_aws_endpoint_url(s3_server, s3_bucket):
    _write_table(s3_server, f"{s3_bucket}/env/t.parquet")

    with fsspec.open(f"s3://{s3_bucket}/env/t.parquet", "rb") as f:
        assert pq.read_table(f).equals(TABLE)


def test_s3_server_restart_keeps_data(s3_server, s3_bucket):
    _write_table(s3_server, f"{s3_bucket}/restart/t.parquet")

    s3_server.stop()
    assert not s3_server.running
    s3_server.start()

    assert s3_server.running
    read = pq.read_table(f"{s3_bucket}/restart/t.parquet", filesystem=s3_server.pyarrow_fs())
    assert read.equals(TABLE)


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def test_s3_server_listens_on_loopback_only(s3_server):
    # A server that was just restarted by another test may still be opening its listeners.
    deadline = time.monotonic() + 15
    addresses = set()
    while not addresses and time.monotonic() < deadline:
        addresses = _listening_addresses(_process_tree(s3_server._weed.process.pid))
        if not addresses:
            time.sleep(0.5)

    assert addresses == {"127.0.0.1"}


def test_ray_read_parquet_with_explicit_filesystem(ray_cluster, s3_server, s3_bucket):
    import ray.data

    _write_table(s3_server, f"{s3_bucket}/ray/part-0.parquet")

    dataset = ray.data.read_parquet(
        f"s3://{s3_bucket}/ray/part-0.parquet", filesystem=s3_server.pyarrow_fs()
    )

    assert sorted(dataset.to_pandas()["image_id"]) == ["a", "b", "c"]


def test_ray_read_parquet_from_environment_only(ray_cluster, s3_server, s3_bucket):
    import ray
    import ray.data

    _write_table(s3_server, f"{s3_bucket}/ray/part-0.parquet")

    @ray.remote
    def worker_endpoint() -> str | None:
        return os.environ.get("AWS_ENDPOINT_URL")

    dataset = ray.data.read_parquet(f"s3://{s3_bucket}/ray/")

    assert ray.get(worker_endpoint.remote()) == s3_server.endpoint_url
    assert dataset.sum("value") == pytest.approx(7.5)


def test_ray_stays_on_loopback(ray_cluster):
    import ray
    from ray._private import worker

    node = worker._global_node
    pids = [info.process.pid for infos in node.all_processes.values() for info in infos]

    assert node.node_ip_address == "127.0.0.1"
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    assert _listening_addresses([os.getpid(), *pids]) <= {"127.0.0.1"}
