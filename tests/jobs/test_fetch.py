"""jobs/fetch.py: what a dataset's `uri`/`path` values may make the job read (no Ray)."""

from __future__ import annotations

import http.server
import os
import threading

import pytest

from jobs.fetch import FetchPolicy, canonical_url, fetch, parse_allow_list
from jobs.storage import MissingObjectError, StorageError


def policy(*allowed: str, base: str = "/nowhere", max_bytes: int = 1 << 20) -> FetchPolicy:
    return FetchPolicy(parse_allow_list(list(allowed)), base, max_bytes)


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"JPEG BYTES")
    (tmp_path / "secret.txt").write_text("root:x:0:0:secret")
    return folder


def test_allow_list_is_canonical_folder_prefixes(tmp_path):
    assert parse_allow_list("s3://bucket/images, file:///data/,,") == (
        "s3://bucket/images/", "file:///data/")
    assert parse_allow_list([str(tmp_path)]) == (f"file://{os.path.realpath(tmp_path)}/",)
    with pytest.raises(ValueError, match=r"must be absolute paths or URLs, got 'images/'"):
        parse_allow_list("images/")


def test_a_file_under_an_allowed_prefix_is_read(images):
    allowed = policy(str(images))
    assert fetch(str(images / "a.jpg"), allowed) == b"JPEG BYTES"
    assert fetch(f"file://{images}/a.jpg", allowed) == b"JPEG BYTES"
    # relative paths resolve against the images file's folder, not the working directory
    assert fetch("a.jpg", policy(str(images), base=str(images))) == b"JPEG BYTES"


@pytest.mark.parametrize(
    "value",
    [
        # an absolute path outside the allowed folder
        "{root}/secret.txt",
        # a file URL outside it
        "file://{root}/secret.txt",
        # climbing out of the allowed folder
        "{root}/images/../secret.txt",
        # a sibling folder whose name starts like the allowed one
        "{root}/images2/a.jpg",
        # the system's files
        "/etc/passwd",
        "file:///etc/passwd",
        # a loopback HTTP endpoint and another bucket
        "http://127.0.0.1:9/latest/meta-data/",
        "s3://other-bucket/a.jpg",
    ],
)
def test_values_outside_the_allow_list_are_refused_without_reading(images, value):
    root = images.parent
    with pytest.raises(MissingObjectError, match=r"outside the prefixes this job may read") as e:
        fetch(value.format(root=root), policy(str(images)))
    assert "root:x" not in str(e.value)


def test_a_relative_path_cannot_add_a_query_to_a_store_url():
    with pytest.raises(MissingObjectError, match=r"may not hold '\?' or '#'"):
        canonical_url("x.png?endpoint_override=127.0.0.1:9", base="gs://bucket/images")


def test_relative_paths_never_leave_their_base(images):
    base = policy(str(images.parent), base=str(images))
    with pytest.raises(MissingObjectError, match=r"must stay inside the images file's folder"):
        fetch("../secret.txt", base)
    with pytest.raises(MissingObjectError, match=r"must stay inside the images file's folder"):
        fetch("sub/../../secret.txt", base)


def test_a_symlink_out_of_the_allowed_folder_is_refused(images):
    (images / "link.jpg").symlink_to(images.parent / "secret.txt")
    with pytest.raises(MissingObjectError, match=r"outside the prefixes"):
        fetch(str(images / "link.jpg"), policy(str(images)))


def test_with_no_allow_list_nothing_is_read(images):
    with pytest.raises(MissingObjectError, match=r"no --allow-uris was given"):
        fetch(str(images / "a.jpg"), policy())


def test_only_regular_files_within_the_size_cap_are_read(images):
    os.mkfifo(images / "fifo")
    (images / "folder").mkdir()
    (images / "big.jpg").write_bytes(b"x" * 101)
    allowed = policy(str(images), "/dev", max_bytes=100)
    with pytest.raises(MissingObjectError, match=r"not a regular file"):
        fetch(str(images / "fifo"), allowed)  # returns at once: a FIFO is never opened
    with pytest.raises(MissingObjectError, match=r"a folder"):
        fetch(str(images / "folder"), allowed)
    with pytest.raises(MissingObjectError, match=r"not a regular file"):
        fetch("/dev/zero", allowed)
    with pytest.raises(MissingObjectError, match=r"101 bytes, over --max-image-bytes \(100\)"):
        fetch(str(images / "big.jpg"), allowed)
    with pytest.raises(MissingObjectError, match=r"no such file"):
        fetch(str(images / "missing.jpg"), allowed)


@pytest.mark.parametrize(
    "value, match",
    [
        # credentials in the URL, also a secret key holding "/"
        ("s3://KEY:SECRET@bucket/a.jpg", r"must not carry credentials"),
        ("s3://KEY:wJal/SECRET+x@bucket/a.jpg", r"must not carry credentials"),
        ("http://user:pa/ss+SECRET@127.0.0.1:9/a.jpg", r"must not carry credentials"),
        # dot segments on an object store
        ("s3://bucket/images/../secret", r"'\.' and '\.\.' path segments"),
        ("s3://bucket/images/%2E%2E/secret", r"'\.' and '\.\.' path segments"),
        # encoded separators, which servers that decode %2F before normalising walk through
        ("http://host/images/..%2fsecret.jpg", r"encoded separators"),
        ("http://host/images/..%5Csecret.jpg", r"encoded separators"),
        ("http://host/images/%252e%252e/secret.jpg", r"path segments"),
        ("s3://bucket/images/..\\secret", r"path segments"),
        # characters no path or URL holds
        ("/data/images/a\x00b.jpg", r"control characters"),
        ("s3://bucket/images/a\nb.jpg", r"control characters"),
        ("http://host/images/my photo.jpg", r"cannot hold a space"),
        # a file URL naming another host
        ("file://otherhost/etc/passwd", r"file URLs name this machine"),
        # a store URL's query sets pyarrow's options: the endpoint, and the token goes there
        ("gs://bucket/images/x.png?endpoint_override=127.0.0.1:9&scheme=http",
         r"a gs:// URL may not hold '\?' or '#'"),
        ("s3://bucket/images/x.png?endpoint_override=127.0.0.1:9", r"may not hold '\?' or '#'"),
        ("hdfs://namenode/images/x.png#frag", r"may not hold '\?' or '#'"),
    ],
)
def test_unsafe_urls_are_refused(value, match):
    with pytest.raises(MissingObjectError, match=match) as error:
        canonical_url(value, base=None)
    assert "SECRET" not in str(error.value)


@pytest.mark.parametrize("value, canonical", [
    ("http://Host/images/a%2ejpg", "http://host/images/a%2ejpg"),  # an encoded dot in a name
    ("http://host/images/100%.jpg", "http://host/images/100%.jpg"),  # not an escape
    ("s3://bucket/images/a%2541.jpg", "s3://bucket/images/a%2541.jpg"),
    # a presigned URL: its query holds %2F, which is no path separator
    ("https://b.s3.amazonaws.com/i/cat.jpg?X-Amz-Credential=AKIA%2F2024%2Fs3&X-Amz-Signature=d",
     "https://b.s3.amazonaws.com/i/cat.jpg?X-Amz-Credential=AKIA%2F2024%2Fs3&X-Amz-Signature=d"),
    # an IPv6 host and a file name with "@" are not credentials
    ("http://[::1]:8080/images/logo@2x.png", "http://[::1]:8080/images/logo@2x.png"),
    ("http://[2001:db8::1]/img@2x.png", "http://[2001:db8::1]/img@2x.png"),
])
def test_urls_with_harmless_escapes_are_kept(value, canonical):
    assert canonical_url(value, base=None) == canonical


def test_a_malformed_url_is_a_row_not_a_failed_task(http_server):
    # http.client refuses what canonical_url lets through (a raw non-ASCII character)
    with pytest.raises(MissingObjectError, match=r"cannot read"):
        fetch(http_server + "/images/caf\u00e9.jpg", policy(http_server + "/"))


class _Handler(http.server.BaseHTTPRequestHandler):
    statuses: dict[str, int] = {}

    def do_GET(self):  # noqa: N802 - the standard library's name
        status = self.statuses.get(self.path.split("?")[0], 200)
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        body = b"IMAGE" if status == 200 else b"no"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.statuses = {"/gone.jpg": 404, "/forbidden.jpg": 403, "/busy.jpg": 503,
                         "/slow-down.jpg": 429, "/moved.jpg": 302}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_permanent_failures_are_rows_and_transient_ones_are_retried(http_server):
    allowed = policy(http_server + "/")
    assert fetch(f"{http_server}/a.jpg", allowed) == b"IMAGE"
    for name in ("gone", "forbidden"):
        with pytest.raises(MissingObjectError, match=r"HTTP 40[34]"):
            fetch(f"{http_server}/{name}.jpg", allowed)
    # a redirect could lead outside the allowed prefixes: it is not followed
    with pytest.raises(MissingObjectError, match=r"HTTP 302"):
        fetch(f"{http_server}/moved.jpg", allowed)
    for name in ("busy", "slow-down"):
        with pytest.raises(StorageError, match=r"HTTP (503|429) \(retried\)") as error:
            fetch(f"{http_server}/{name}.jpg", allowed)
        assert not isinstance(error.value, MissingObjectError)


def test_a_presigned_urls_query_is_not_quoted_in_errors(http_server):
    signed = f"{http_server}/gone.jpg?X-Amz-Credential=AKIAQUERY&X-Amz-Signature=SIGSECRET"
    with pytest.raises(MissingObjectError, match=r"gone\.jpg\?<query hidden>: HTTP 404") as error:
        fetch(signed, policy(http_server + "/"))
    assert "SIGSECRET" not in str(error.value) and "AKIAQUERY" not in str(error.value)
    # nor in the refusals made before any request
    with pytest.raises(MissingObjectError, match=r"<query hidden>: '\.' and '\.\.'") as error:
        fetch(f"{http_server}/a/../gone.jpg?X-Amz-Signature=SIGSECRET", policy(http_server + "/"))
    assert "SIGSECRET" not in str(error.value)


def test_http_refused_connection_is_retried():
    import socket

    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(StorageError, match=r"\(retried\)") as error:
        fetch(f"http://127.0.0.1:{port}/a.jpg", policy(f"http://127.0.0.1:{port}/"))
    assert not isinstance(error.value, MissingObjectError)


def test_s3_objects_folders_and_other_buckets(s3_server, s3_bucket):
    from jobs.storage import resolve, write_atomic

    write_atomic(resolve(f"s3://{s3_bucket}/images/a.jpg"), b"S3 IMAGE")
    write_atomic(resolve(f"s3://{s3_bucket}/images/sub/b.jpg"), b"B")
    write_atomic(resolve(f"s3://{s3_bucket}/private/c.jpg"), b"C")
    allowed = policy(f"s3://{s3_bucket}/images/", max_bytes=4)
    with pytest.raises(MissingObjectError, match=r"over --max-image-bytes \(4\)"):
        fetch(f"s3://{s3_bucket}/images/a.jpg", allowed)
    assert fetch(f"s3://{s3_bucket}/images/sub/b.jpg", allowed) == b"B"
    with pytest.raises(MissingObjectError, match=r"a folder or prefix"):
        fetch(f"s3://{s3_bucket}/images/sub", allowed)
    with pytest.raises(MissingObjectError, match=r"no such object"):
        fetch(f"s3://{s3_bucket}/images/missing.jpg", allowed)
    with pytest.raises(MissingObjectError, match=r"outside the prefixes"):
        fetch(f"s3://{s3_bucket}/private/c.jpg", allowed)
