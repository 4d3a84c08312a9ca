"""Object storage: URLs to pyarrow filesystems, listing, reading and atomic writes.

Every URL the job touches goes through ``resolve``: ``s3://``, ``gs://``, ``hdfs://`` and local
paths (``file://`` or plain) use pyarrow's native filesystems; any other protocol that fsspec
knows (``memory://``, ``az://``, ``https://``...) is wrapped with pyarrow's ``FSSpecHandler``.
Credentials and endpoints come only from the environment (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``...) or fsspec's own configuration; they are
never taken from the command line, and never logged: ``redact`` strips userinfo from URLs
before they reach a message.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = [
    "Location",
    "MissingObjectError",
    "StorageError",
    "atomic_output",
    "carries_credentials",
    "create_exclusive",
    "delete",
    "exists",
    "file_info",
    "glob_base",
    "join",
    "list_files",
    "list_tree",
    "open_parquet",
    "read_bytes",
    "read_parquet",
    "redact",
    "resolve",
    "same_filesystem",
    "write_atomic",
]

_NATIVE = {"s3", "gs", "gcs", "hdfs", "viewfs", "file", "local", "abfs", "abfss"}
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# A URL's userinfo, the part before its host. A password may hold "/" (about half of AWS secret
# keys do), so "name:" followed by anything up to an "@" is a password too, unless the colon
# starts a port ("host:9000/key@x" is a host, a port and a key with "@" in it).
_PASSWORD_INFO = r"[^/:@\s\[]*:(?![0-9]*(?:/|$|\s))[^@\s]*@"  # "[" opens an IPv6 host
_USER_INFO = rf"(?:{_PASSWORD_INFO}|[^/@\s]*@)"
_PASSWORD = re.compile(rf"^[a-zA-Z][a-zA-Z0-9+.-]*://{_PASSWORD_INFO}")
_URL_WITH_USERINFO = re.compile(rf"([a-zA-Z][a-zA-Z0-9+.-]*://){_USER_INFO}")


def carries_credentials(url: str) -> bool:
    """Whether a URL holds a userinfo part (``user@`` or ``user:password@``)."""
    return _URL_WITH_USERINFO.match(str(url)) is not None


class StorageError(OSError):
    """A URL could not be resolved, listed, read or written."""


class MissingObjectError(StorageError):
    """The object does not exist (or the URL cannot name one): retrying will not help."""


@dataclass(frozen=True)
class Location:
    """A resolved URL: the filesystem, the path inside it, and the URL as given (redacted)."""

    fs: pafs.FileSystem
    path: str
    url: str

    @property
    def is_local(self) -> bool:
        """On a local (or mounted) disk."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def is_s3(self) -> bool:
        """On S3 or an S3-compatible store."""
        return isinstance(self.fs, pafs.S3FileSystem)

    def child(self, *parts: str) -> Location:
        """The location ``parts`` below this one."""
        return Location(self.fs, join(self.path, *parts), join(self.url, *parts))

    def sibling(self, path: str) -> Location:
        """Another ``path`` on the same filesystem (a path as this filesystem spells it, such as
        one ``list_tree`` led to), with a URL in the same style as this location's."""
        if self.url.endswith(self.path):
            return Location(self.fs, path, self.url[: len(self.url) - len(self.path)] + path)
        return Location(self.fs, path, path)


def redact(text: str) -> str:
    """A URL, or a message quoting URLs, without any ``user:password@`` part."""
    return _URL_WITH_USERINFO.sub(r"\1", str(text))


def join(base: str, *parts: str) -> str:
    """``base`` and ``parts`` joined with single slashes.

    >>> join("s3://bucket/out/", "/crops", "a.parquet")
    's3://bucket/out/crops/a.parquet'
    """
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p)])


def _region_default() -> None:
    # pyarrow asks AWS for a bucket's region when none is configured, which fails against
    # S3-compatible servers; an explicit region in the environment avoids that lookup.
    if os.environ.get("AWS_ENDPOINT_URL") and not os.environ.get("AWS_DEFAULT_REGION"):
        os.environ.setdefault("AWS_REGION", "us-east-1")


# Transient S3 failures (connection refused or reset, 5xx, throttling, timeouts) are retried by
# the AWS SDK with jittered exponential backoff (up to 1, 2, 4, 8, 16 s between attempts): six
# attempts wait about 15 s in all (31 s at most), so an unreachable endpoint still fails in
# seconds, while the crop tasks' own retries (jobs.pipeline.TASK_RETRIES) carry the job through
# longer outages. Errors that cannot heal (access denied, no such bucket) are not retried.
# The SDK's own timeouts (1 s to connect, 3 s without progress) are tight for a loaded store.
S3_MAX_ATTEMPTS = 6
S3_CONNECT_TIMEOUT_S = 5.0
S3_REQUEST_TIMEOUT_S = 30.0


@lru_cache(maxsize=32)
def _s3_filesystem(endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    kwargs: dict = {
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS),
        "connect_timeout": S3_CONNECT_TIMEOUT_S,
        "request_timeout": S3_REQUEST_TIMEOUT_S,
    }
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def resolve(url: str) -> Location:
    """The filesystem and path of a URL or local path."""
    url = str(url)
    if _PASSWORD.match(url):
        # Filesystems quote the URL in their errors, where redact() cannot find it.
        raise MissingObjectError(f"cannot open {redact(url)}: URLs must not carry credentials; "
                           f"set them in the environment")
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else "file"
    try:
        if scheme == "s3":
            _region_default()
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            return Location(_s3_filesystem(endpoint, region), url[len("s3://") :], redact(url))
        if scheme in _NATIVE:
            if not match:
                # Absolute from here on: workers (on other nodes, or with another working
                # directory) resolve the same URL again, and must find the same file.
                path = os.path.abspath(url)
                return Location(pafs.LocalFileSystem(), path, path)
            fs, path = pafs.FileSystem.from_uri(url)
            return Location(fs, path, redact(url))
        import fsspec

        fs, path = fsspec.core.url_to_fs(url)
        return Location(pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path, redact(url))
    except (ValueError, OSError, ImportError) as error:
        raise MissingObjectError(f"cannot open {redact(url)}: {_clean(error)}") from None


def _clean(error: BaseException) -> str:
    return redact(str(error).splitlines()[0] if str(error) else type(error).__name__)


def glob_base(location: Location) -> str | None:
    """The folder a glob pattern searches (the part before its first ``*``, ``?`` or ``[``),
    or None when ``location`` is no pattern: no such character, or a file or folder of that
    very name exists (``images[2024]/`` is a folder, not a pattern)."""
    path = location.path
    wildcard = [path.index(ch) for ch in "*?[" if ch in path]
    if not wildcard:
        return None
    try:
        if location.fs.get_file_info(path).type != pafs.FileType.NotFound:
            return None
    except (OSError, ValueError):
        pass  # the pattern is not a path this store accepts: treated as a pattern
    return path[: min(wildcard)].rsplit("/", 1)[0]


def list_files(location: Location, suffix: str = ".parquet") -> list[Location]:
    """The files at a location: the file itself, every ``suffix`` file below a directory
    (sorted, hidden and ``_``-prefixed names skipped), or the matches of a glob pattern (a path
    with ``*``, ``?`` or ``[`` that names no existing file or folder)."""
    fs, path = location.fs, location.path
    try:
        base = glob_base(location)
        if base is not None:
            import fnmatch

            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
            paths = [i.path for i in infos if i.is_file and fnmatch.fnmatch(i.path, path)]
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise StorageError(f"{location.url} does not exist")
            if info.is_file:
                return [location]
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            paths = [
                i.path
                for i in infos
                if i.is_file
                and i.path.endswith(suffix)
                and not any(p.startswith(("_", ".")) for p in i.path[len(path) :].split("/"))
            ]
    except StorageError:
        raise
    except (OSError, ValueError) as error:  # ValueError: ArrowInvalid for malformed paths
        raise StorageError(f"cannot list {location.url}: {_clean(error)}") from None
    prefix = location.url[: len(location.url) - len(path)] if location.url.endswith(path) else ""
    return [Location(fs, p, prefix + p if prefix else p) for p in sorted(paths)]


def read_bytes(location: Location, max_bytes: int | None = None) -> bytes:
    """The object's bytes; with ``max_bytes``, at most that many plus one (so a caller can tell
    an object over its cap without reading all of it)."""
    try:
        with location.fs.open_input_stream(location.path) as stream:
            return stream.read() if max_bytes is None else stream.read(max_bytes + 1)
    except (FileNotFoundError, IsADirectoryError, ValueError) as error:
        # ValueError: ArrowInvalid for paths the filesystem refuses; permanent like a 404
        raise MissingObjectError(f"cannot read {location.url}: {_clean(error)}") from None
    except OSError as error:
        raise StorageError(f"cannot read {location.url}: {_clean(error)}") from None


def open_parquet(location: Location) -> pq.ParquetFile:
    """The Parquet file at ``location``, open for reading its metadata, schema and row groups.

    The one place that opens Parquet: a missing object raises ``MissingObjectError``, any other
    failure (unreachable store, a file that is not Parquet) ``StorageError``, each naming the
    redacted URL and the first line of the cause. Errors while reading row groups later come
    from pyarrow (``OSError``, ``pa.ArrowInvalid``).
    """
    try:
        return pq.ParquetFile(location.fs.open_input_file(location.path))
    except (FileNotFoundError, IsADirectoryError) as error:
        raise MissingObjectError(f"cannot read Parquet file {location.url}: "
                                 f"{_clean(error)}") from None
    except (OSError, pa.ArrowInvalid) as error:
        raise StorageError(f"cannot read Parquet file {location.url}: {_clean(error)}") from None


def read_parquet(location: Location, columns: list[str] | None = None,
                 filters=None) -> pa.Table:
    """The whole Parquet file at ``location`` (only ``columns`` when given, only the rows that
    match ``filters``, pyarrow's filter expressions, when given), with ``open_parquet``'s
    errors."""
    try:
        return pq.read_table(location.path, filesystem=location.fs, columns=columns,
                             filters=filters)
    except (FileNotFoundError, IsADirectoryError) as error:
        raise MissingObjectError(f"cannot read Parquet file {location.url}: "
                                 f"{_clean(error)}") from None
    except (OSError, pa.ArrowInvalid) as error:
        raise StorageError(f"cannot read Parquet file {location.url}: {_clean(error)}") from None


def write_atomic(location: Location, data: bytes | pa.Buffer, tag: str = "") -> None:
    """Write ``data`` (bytes or an Arrow buffer) so that readers see the whole object or nothing.

    Object stores publish an object only when its upload completes; on a local or mounted
    filesystem we write a temporary sibling (``<name>.tmp-<tag><uuid>``) and rename it over the
    target. A writer that dies in between leaves the sibling; ``tag`` (the job passes its run's
    fingerprint prefix) lets a later attempt prove the sibling is its own before deleting it.
    """
    with atomic_output(location, tag) as stream:
        stream.write(data)


@contextmanager
def atomic_output(location: Location, tag: str = "") -> Iterator[pa.NativeFile]:
    """A stream to write the object at ``location`` in pieces (``pq.write_table(table, stream)``),
    published as ``write_atomic`` publishes: whole when the block ends, never half.

    On a local disk the data goes to a temporary sibling, renamed over the target at the end
    and removed if the block raises. An object store publishes the object when the stream
    closes, so an upload cut short by an error in the block is published as far as it got:
    delete it (the importers do). Filesystem errors raise ``StorageError``. ``tag`` as for
    ``write_atomic``.
    """
    fs, path = location.fs, location.path
    temporary = f"{path}.tmp-{tag}{uuid.uuid4().hex}" if location.is_local else None
    try:
        try:
            if temporary is not None:
                fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            with fs.open_output_stream(temporary or path) as stream:
                yield stream
            if temporary is not None:
                os.replace(temporary, path)
        except OSError as error:
            raise StorageError(f"cannot write {location.url}: {_clean(error)}") from None
        except NotImplementedError:  # a read-only fsspec filesystem (http, for one)
            scheme = location.url.split("://", 1)[0] if "://" in location.url else "local"
            raise StorageError(f"cannot write {location.url}: the {scheme} filesystem is "
                               f"read-only") from None
    except BaseException:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass
        raise


def same_filesystem(a: Location, b: Location) -> bool:
    """Whether two locations are on the same kind of filesystem (so their paths compare)."""
    return type(a.fs) is type(b.fs)


def exists(location: Location) -> bool:
    """Whether an object (or folder) is at ``location``."""
    try:
        return location.fs.get_file_info(location.path).type != pafs.FileType.NotFound
    except OSError as error:
        raise StorageError(f"cannot stat {location.url}: {_clean(error)}") from None


def delete(location: Location) -> None:
    """Delete the object at ``location``; nothing there is not an error."""
    try:
        location.fs.delete_file(location.path)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise StorageError(f"cannot delete {location.url}: {_clean(error)}") from None


def file_info(location: Location) -> pafs.FileInfo:
    """Type and size of the object at ``location`` (``FileType.NotFound`` when there is none)."""
    try:
        return location.fs.get_file_info(location.path)
    except (OSError, ValueError) as error:
        raise StorageError(f"cannot stat {location.url}: {_clean(error)}") from None


def list_tree(location: Location) -> list[str]:
    """Every file below a directory (hidden ones included), as paths relative to it, sorted.
    A location that does not exist lists nothing."""
    try:
        info = location.fs.get_file_info(location.path)
        if info.type == pafs.FileType.NotFound:
            return []
        if info.is_file:
            raise StorageError(f"{location.url} is a file, not a folder")
        # allow_not_found: on an object store a folder is only a prefix, which vanishes when
        # its last object is deleted between the two calls (another run's writable probe)
        infos = location.fs.get_file_info(pafs.FileSelector(location.path, recursive=True,
                                                            allow_not_found=True))
    except StorageError:
        raise
    except (OSError, ValueError) as error:
        raise StorageError(f"cannot list {location.url}: {_clean(error)}") from None
    base = location.path.rstrip("/") + "/"
    return sorted(i.path[len(base):] for i in infos if i.is_file and i.path.startswith(base))


def create_exclusive(location: Location, data: bytes) -> bool:
    """Create the object with ``data`` only if nothing exists at ``location``; ``True`` when this
    call created it, ``False`` when an object was already there (it is left as it was).

    Local disks: the data is written to a temporary sibling and hard-linked to the target, which
    fails atomically if the target exists. S3: a conditional ``PutObject`` (``If-None-Match: *``)
    that AWS S3 (since 2024-08) and SeaweedFS (tested here) apply atomically, so of two
    concurrent creators exactly one wins. Other stores have no portable conditional create: the
    object is written when absent and read back, a check that narrows but cannot close the race
    window (see README, Reliability).
    """
    if location.is_local:
        return _create_exclusive_local(location, data)
    if location.is_s3:
        return _create_exclusive_s3(location, data)
    if exists(location):
        return False
    write_atomic(location, data)
    return read_bytes(location) == data


def _create_exclusive_local(location: Location, data: bytes) -> bool:
    path = location.path
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    except OSError as error:
        raise StorageError(f"cannot write {location.url}: {_clean(error)}") from None
    finally:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def _s3_client():
    import botocore.config
    import botocore.session

    _region_default()
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": S3_MAX_ATTEMPTS},
        connect_timeout=S3_CONNECT_TIMEOUT_S, read_timeout=S3_REQUEST_TIMEOUT_S)
    return botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint or None, region_name=region or None, config=config)


def _create_exclusive_s3(location: Location, data: bytes) -> bool:
    import botocore.exceptions

    bucket, _, key = location.path.partition("/")
    client = _s3_client()
    for attempt in range(8):
        try:
            client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except botocore.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412"):
                return False
            if code in ("ConditionalRequestConflict", "409"):
                # AWS: another conditional write to this key is in flight; ask again shortly
                time.sleep(0.2 * (attempt + 1))
                continue
            raise StorageError(f"cannot write {location.url}: {redact(str(error))}") from None
        except botocore.exceptions.BotoCoreError as error:
            raise StorageError(f"cannot write {location.url}: {redact(str(error))}") from None
    return False
