"""jobs.storage on local disk and fsspec's memory filesystem: fast, no Ray, no S3 server."""

from __future__ import annotations

import os
import threading

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from jobs import storage
from jobs.storage import MissingObjectError, StorageError


def _write(path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_resolve_local_paths_and_file_urls(tmp_path):
    plain = storage.resolve(str(tmp_path / "a"))
    assert plain.is_local and not plain.is_s3
    assert plain.path == str(tmp_path / "a") and plain.url == str(tmp_path / "a")
    url = storage.resolve(f"file://{tmp_path}/b")
    assert url.is_local and url.path == f"{tmp_path}/b" and url.url == f"file://{tmp_path}/b"
    child = plain.child("x", "/y.parquet")
    assert child.path == f"{tmp_path}/a/x/y.parquet" and child.url == f"{tmp_path}/a/x/y.parquet"


def test_resolve_makes_a_relative_local_path_absolute(tmp_path, monkeypatch):
    # Workers resolve the URL again, with another working directory (or on another node):
    # a relative URL named another folder there.
    monkeypatch.chdir(tmp_path)
    relative = storage.resolve("out/crops")
    assert relative.url == relative.path == f"{tmp_path}/out/crops"
    assert relative.child("a.parquet").url == f"{tmp_path}/out/crops/a.parquet"


def test_resolve_other_protocols_through_fsspec():
    location = storage.resolve("memory://bucket/folder")
    assert not location.is_local and location.url == "memory://bucket/folder"
    assert location.sibling(location.path + "/z").url == "memory://bucket/folder/z"


@pytest.mark.parametrize("url", [
    "s3://user:secret@bucket/k",
    "s3://AKIAEXAMPLE:wJalrXUtn/FEMIsecret@bucket/k",  # AWS secret keys may hold "/"
    "s3://AKIA:a+b/c/secret@bucket/k",
])
def test_resolve_refuses_credentials_in_urls_without_echoing_them(url):
    with pytest.raises(MissingObjectError, match=r"cannot open s3://bucket/k: URLs must not "
                                                 r"carry credentials") as raised:
        storage.resolve(url)
    assert "secret" not in str(raised.value)


def test_resolve_an_unknown_protocol_is_a_missing_object():
    with pytest.raises(MissingObjectError, match=r"cannot open nosuchproto://x"):
        storage.resolve("nosuchproto://x")


@pytest.mark.parametrize(("url", "expected"), [
    ("s3://user:pw@bucket/key", "s3://bucket/key"),
    ("https://token@host/path", "https://host/path"),
    ("/plain/path", "/plain/path"),
    ("s3://bucket/a@b", "s3://bucket/a@b"),
    ("s3://KEY:se/cr+et@bucket/key", "s3://bucket/key"),  # a password holding "/"
    ("http://127.0.0.1:9000/bucket/user@x.jpg", "http://127.0.0.1:9000/bucket/user@x.jpg"),
    ("http://u:1234@host/x", "http://host/x"),  # a numeric password is not a port
    # whole messages: every URL quoted in them
    ("cannot list s3://K:se/cret@b/i/: Expected an S3 path; also https://t@h/p",
     "cannot list s3://b/i/: Expected an S3 path; also https://h/p"),
])
def test_redact_strips_userinfo_only(url, expected):
    assert storage.redact(url) == expected


def test_list_files_walks_a_folder_skipping_hidden_and_underscore_names(tmp_path):
    for name in ("b.parquet", "a.parquet", "sub/c.parquet", "_tmp/d.parquet", ".hidden.parquet",
                 "sub/_e.parquet", "notes.txt", ".git/f.parquet"):
        _write(tmp_path / name)
    found = storage.list_files(storage.resolve(str(tmp_path)))
    assert [f.path for f in found] == [str(tmp_path / n) for n in
                                       ("a.parquet", "b.parquet", "sub/c.parquet")]
    assert [f.url for f in found] == [f.path for f in found]
    texts = storage.list_files(storage.resolve(str(tmp_path)), suffix=".txt")
    assert [f.path for f in texts] == [str(tmp_path / "notes.txt")]


def test_list_files_of_a_file_is_the_file_even_with_another_suffix(tmp_path):
    _write(tmp_path / "data.bin")
    location = storage.resolve(str(tmp_path / "data.bin"))
    assert storage.list_files(location) == [location]


def test_list_files_expands_globs_without_skipping_names(tmp_path):
    for name in ("x/1.parquet", "x/2.parquet", "x/_3.parquet", "y/4.parquet", "x/5.txt"):
        _write(tmp_path / name)
    found = storage.list_files(storage.resolve(f"{tmp_path}/x/*.parquet"))
    assert [f.path for f in found] == [str(tmp_path / n) for n in
                                       ("x/1.parquet", "x/2.parquet", "x/_3.parquet")]
    found = storage.list_files(storage.resolve(f"{tmp_path}/[xy]/[14].parquet"))
    assert [f.path for f in found] == [str(tmp_path / "x/1.parquet"), str(tmp_path / "y/4.parquet")]
    found = storage.list_files(storage.resolve(f"file://{tmp_path}/*/4.parquet"))
    assert [f.url for f in found] == [f"file://{tmp_path}/y/4.parquet"]


def test_list_files_of_nothing_says_it_does_not_exist(tmp_path):
    with pytest.raises(StorageError, match=r"missing does not exist"):
        storage.list_files(storage.resolve(str(tmp_path / "missing")))


def test_read_bytes_whole_and_capped(tmp_path):
    _write(tmp_path / "f", b"0123456789")
    location = storage.resolve(str(tmp_path / "f"))
    assert storage.read_bytes(location) == b"0123456789"
    # at most max_bytes + 1, so a caller can tell "over the cap" without reading everything
    assert storage.read_bytes(location, max_bytes=3) == b"0123"
    assert storage.read_bytes(location, max_bytes=10) == b"0123456789"


def test_read_bytes_of_a_missing_object_or_a_folder_fails_with_the_url(tmp_path):
    with pytest.raises(MissingObjectError, match=r"cannot read .*/nope"):
        storage.read_bytes(storage.resolve(str(tmp_path / "nope")))
    with pytest.raises(StorageError, match=r"cannot read .* is a directory"):
        storage.read_bytes(storage.resolve(str(tmp_path)))


def test_write_atomic_creates_parents_replaces_and_leaves_no_temporary(tmp_path):
    location = storage.resolve(str(tmp_path / "deep" / "er" / "f.bin"))
    storage.write_atomic(location, b"first")
    storage.write_atomic(location, pa.py_buffer(b"second"))
    assert (tmp_path / "deep" / "er" / "f.bin").read_bytes() == b"second"
    assert os.listdir(tmp_path / "deep" / "er") == ["f.bin"]


def test_atomic_output_publishes_only_a_finished_write(tmp_path):
    location = storage.resolve(str(tmp_path / "t.parquet"))
    with pytest.raises(RuntimeError, match="halfway"):
        with storage.atomic_output(location) as stream:
            stream.write(b"partial")
            raise RuntimeError("halfway")
    assert os.listdir(tmp_path) == []
    with storage.atomic_output(location) as stream:
        pq.write_table(pa.table({"a": [1, 2]}), stream)
    assert pq.read_table(location.path).column("a").to_pylist() == [1, 2]
    assert os.listdir(tmp_path) == ["t.parquet"]


def test_write_atomic_into_a_file_path_fails_with_the_url(tmp_path):
    _write(tmp_path / "file")
    with pytest.raises(StorageError, match=r"cannot write .*/file/child"):
        storage.write_atomic(storage.resolve(str(tmp_path / "file" / "child")), b"x")


def test_create_exclusive_on_local_disk_has_one_winner(tmp_path):
    location = storage.resolve(str(tmp_path / "claims" / "claim.json"))
    assert storage.create_exclusive(location, b"mine") is True
    assert storage.create_exclusive(location, b"theirs") is False
    assert storage.read_bytes(location) == b"mine"
    assert os.listdir(tmp_path / "claims") == ["claim.json"]

    contested = storage.resolve(str(tmp_path / "contested"))
    results: list[bool] = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        storage.create_exclusive(contested, f"{i}".encode()))) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_create_exclusive_on_another_store_writes_when_absent():
    location = storage.resolve("memory://h12-create-exclusive/claim")
    assert storage.create_exclusive(location, b"a") is True
    assert storage.create_exclusive(location, b"b") is False
    assert storage.read_bytes(location) == b"a"


def test_exists_delete_and_file_info(tmp_path):
    location = storage.resolve(str(tmp_path / "f"))
    assert not storage.exists(location)
    assert storage.file_info(location).type == pafs.FileType.NotFound
    storage.write_atomic(location, b"abc")
    assert storage.exists(location)
    info = storage.file_info(location)
    assert info.type == pafs.FileType.File and info.size == 3
    assert storage.file_info(storage.resolve(str(tmp_path))).type == pafs.FileType.Directory
    storage.delete(location)
    storage.delete(location)  # deleting what is not there is not an error
    assert not storage.exists(location)


def test_list_tree_lists_everything_below_including_hidden(tmp_path):
    for name in ("b", "a/.hidden", "a/_marker", "a/z/deep.parquet"):
        _write(tmp_path / "root" / name)
    root = storage.resolve(str(tmp_path / "root"))
    assert storage.list_tree(root) == ["a/.hidden", "a/_marker", "a/z/deep.parquet", "b"]
    assert storage.list_tree(storage.resolve(str(tmp_path / "absent"))) == []
    with pytest.raises(StorageError, match=r"root/b is a file, not a folder"):
        storage.list_tree(root.child("b"))


def test_open_parquet_and_read_parquet(tmp_path):
    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=2)
    location = storage.resolve(str(tmp_path / "t.parquet"))
    parquet = storage.open_parquet(location)
    assert parquet.metadata.num_row_groups == 2 and parquet.schema_arrow == table.schema
    assert storage.read_parquet(location, columns=["b"]).column("b").to_pylist() == ["x", "y", "z"]
    filtered = storage.read_parquet(location, filters=[("a", ">", 1)])
    assert filtered.column("a").to_pylist() == [2, 3]


def test_open_parquet_errors_name_the_url(tmp_path):
    with pytest.raises(MissingObjectError, match=r"cannot read Parquet file .*/absent\.parquet"):
        storage.open_parquet(storage.resolve(str(tmp_path / "absent.parquet")))
    _write(tmp_path / "junk.parquet", b"not parquet at all")
    with pytest.raises(StorageError, match=r"cannot read Parquet file .*/junk\.parquet: "):
        storage.open_parquet(storage.resolve(str(tmp_path / "junk.parquet")))
    with pytest.raises(StorageError, match=r"cannot read Parquet file .*/junk\.parquet: "):
        storage.read_parquet(storage.resolve(str(tmp_path / "junk.parquet")))


def test_same_filesystem(tmp_path):
    local = storage.resolve(str(tmp_path))
    assert storage.same_filesystem(local, storage.resolve(f"file://{tmp_path}/x"))
    assert not storage.same_filesystem(local, storage.resolve("memory://x"))
