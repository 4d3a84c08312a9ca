"""Fetching images named by a dataset (a ``uri`` column, or a Hugging Face ``path``), safely.

A dataset is data, not authority: whoever wrote it must not make the job read a file, bucket
or endpoint that the person running the job did not allow. So a value is read only when

- it lies under one of the prefixes given with ``--allow-uris`` (compared after resolution:
  symlinks and ``..`` on local disks, and ``..`` segments are refused everywhere else);
- a relative local path resolves against the folder of the images file that names it (never
  the worker's working directory) and stays inside that folder;
- it names a regular file (not a folder, prefix, FIFO or device) of at most
  ``--max-image-bytes``, and no more than that is ever read.

Failures that retrying cannot heal (not allowed, missing, forbidden, a folder, too big) raise
``MissingObjectError``, which the crop UDF turns into a ``fetch_failed`` row. Everything else
(HTTP 5xx and 429, refused or reset connections, timeouts, S3 storage errors) raises
``StorageError``, which fails the task so that it is retried: a passing outage never leaves a
permanent error row. Messages name the URL (redacted), never the content.
"""

from __future__ import annotations

import http.client
import os
import posixpath
import re
import stat
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import pyarrow.fs as pafs

from jobs.storage import (
    MissingObjectError,
    StorageError,
    carries_credentials,
    file_info,
    read_bytes,
    redact,
    resolve,
)

__all__ = ["DEFAULT_MAX_IMAGE_BYTES", "FetchPolicy", "canonical_url", "dot_segments", "fetch",
           "parse_allow_list"]

DEFAULT_MAX_IMAGE_BYTES = 256 << 20
HTTP_TIMEOUT_S = 30.0
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# HTTP answers that retrying cannot change; every other failure is retried.
_PERMANENT_HTTP = {400, 401, 403, 404, 405, 410, 414, 451}
# Characters no path or URL holds; Python's file and HTTP functions raise on some of them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class FetchPolicy:
    """What a worker may read: canonical prefixes, the base folder of relative paths, a size cap."""

    allowed: tuple[str, ...]
    base: str
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES


def parse_allow_list(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """``--allow-uris`` as canonical folder prefixes (each ends with ``/``).

    >>> parse_allow_list("s3://bucket/images, file:///data/")
    ('s3://bucket/images/', 'file:///data/')
    """
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    prefixes = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        if not _SCHEME.match(item) and not os.path.isabs(item):
            raise ValueError(f"--allow-uris entries must be absolute paths or URLs, got {item!r}")
        prefixes.append(canonical_url(item, base=None).rstrip("/") + "/")
    return tuple(dict.fromkeys(prefixes))


def canonical_url(value: str, base: str | None) -> str:
    """The URL a value names: local paths as ``file://`` + the resolved absolute path, relative
    paths joined to ``base``; ``MissingObjectError`` for a value that cannot be made safe."""
    value = str(value)
    if _CONTROL.search(value):
        raise MissingObjectError(f"cannot open {_shown(value)!r}: control characters (NUL, "
                                 f"newline...) in a path or URL")
    if carries_credentials(value):
        raise MissingObjectError(f"cannot open {_shown(value)}: URLs must not carry credentials")
    match = _SCHEME.match(value)
    if match is None:
        if not os.path.isabs(value):
            if base is None:
                raise MissingObjectError(f"cannot open {value}: a relative path needs a base")
            joined = _join_relative(base, value)
            return canonical_url(joined, base=None)
        return "file://" + os.path.realpath(value)
    scheme = match.group(1).lower()
    rest = value[match.end():]
    if scheme in ("file", "local"):
        parsed = urllib.parse.urlsplit(value)
        if parsed.netloc not in ("", "localhost"):
            raise MissingObjectError(f"cannot open {_shown(value)}: file URLs name this machine")
        return "file://" + os.path.realpath(urllib.parse.unquote(parsed.path) or "/")
    host, _, path = rest.partition("/")
    if dot_segments(re.split(r"[?#]", path, maxsplit=1)[0]):  # a query may hold %2F (SigV4)
        raise MissingObjectError(f"cannot open {_shown(value)}: '.' and '..' path segments are "
                                 f"not allowed, nor are encoded ones or encoded separators")
    if scheme not in ("http", "https") and re.search(r"[?#]", rest):
        # pyarrow reads a store's options from a URL's query (gs://...?endpoint_override=...):
        # a dataset's URL must not choose where its reads, and the credentials, go
        raise MissingObjectError(f"cannot open {_shown(value)}: a {scheme}:// URL may not hold "
                                 f"'?' or '#' (a query could set the store's endpoint)")
    if scheme in ("http", "https"):
        if " " in value:
            raise MissingObjectError(f"cannot open {_shown(value)}: a URL cannot hold a space "
                                     f"(percent-encode it as %20)")
        host = host.lower()
    return f"{scheme}://{host}/{path}"


def dot_segments(path: str) -> bool:
    """Whether a URL path holds a ``.`` or ``..`` segment, as it is or once a server has
    percent-decoded it (once or twice), or an encoded ``/`` or ``\\`` that a server may decode
    into a separator: ``..%2fsecret`` climbs out of a folder on such servers."""
    for _ in range(3):
        if any(s in ("..", ".") for s in re.split(r"[/\\]", path)):
            return True
        decoded = urllib.parse.unquote(path)
        if decoded == path:
            return False
        if re.search(r"%(2f|5c)", path, re.IGNORECASE):
            return True
        path = decoded
    return True  # still encoded after three decodings: not a name anyone writes by accident


def _join_relative(base: str, relative: str) -> str:
    """``relative`` inside the folder ``base`` (a path or URL); refused if it leaves it."""
    joined = posixpath.normpath(posixpath.join("/", relative))  # "/" anchors: ".." cannot climb
    if posixpath.normpath(relative).startswith("..") or relative.startswith("/"):
        raise MissingObjectError(f"cannot open {relative}: a relative path must stay inside the "
                                 f"images file's folder")
    return base.rstrip("/") + joined


def allowed(url: str, policy: FetchPolicy) -> bool:
    return any(url.startswith(prefix) or url == prefix.rstrip("/") for prefix in policy.allowed)


def fetch(value: str, policy: FetchPolicy) -> bytes:
    """The bytes of the image a dataset names, within ``policy`` (see the module's docstring)."""
    url = canonical_url(value, policy.base)
    shown = _shown(str(value))
    if not allowed(url, policy):
        hint = ("no --allow-uris was given" if not policy.allowed
                else "allowed: " + ", ".join(policy.allowed))
        raise MissingObjectError(f"{shown} is outside the prefixes this job may read ({hint})")
    if url.startswith("file://"):
        return _fetch_local(url[len("file://"):], shown, policy.max_bytes)
    if url.startswith(("http://", "https://")):
        return _fetch_http(url, shown, policy.max_bytes)
    return _fetch_store(url, shown, policy.max_bytes)


def _shown(value: str) -> str:
    """A value as error rows quote it: no userinfo, and no query string of a URL (presigned
    URLs carry their signature and credential there)."""
    value = redact(value)
    if _SCHEME.match(value) and "?" in value:
        return value.split("?", 1)[0] + "?<query hidden>"
    return value


def _too_big(shown: str, size: int, cap: int) -> MissingObjectError:
    return MissingObjectError(f"{shown} is {size} bytes, over --max-image-bytes ({cap})")


def _fetch_local(path: str, shown: str, cap: int) -> bytes:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise MissingObjectError(f"cannot read {shown}: no such file") from None
    except OSError as error:
        raise MissingObjectError(f"cannot read {shown}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise MissingObjectError(f"cannot read {shown}: {kind}")
    if info.st_size > cap:
        raise _too_big(shown, info.st_size, cap)
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, open does not wait
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise MissingObjectError(f"cannot read {shown}: {error.strerror}") from None
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise MissingObjectError(f"cannot read {shown}: not a regular file")
        data = stream.read(cap + 1)
    if len(data) > cap:
        raise _too_big(shown, len(data), cap)
    return data


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect could leave the allowed prefixes: it is an answer, not a place to follow.
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _fetch_http(url: str, shown: str, cap: int) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "cropcore"})
    try:
        with _OPENER.open(request, timeout=HTTP_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > cap:
                raise _too_big(shown, int(length), cap)
            data = response.read(cap + 1)
    except (http.client.InvalidURL, ValueError) as error:  # a malformed URL: no retry heals it
        raise MissingObjectError(f"cannot read {shown}: {type(error).__name__}: "
                                 f"{redact(str(error))}") from None
    except urllib.error.HTTPError as error:
        if error.code in _PERMANENT_HTTP or 300 <= error.code < 400:
            raise MissingObjectError(f"cannot read {shown}: HTTP {error.code}") from None
        raise StorageError(f"cannot read {shown}: HTTP {error.code} (retried)") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise StorageError(f"cannot read {shown}: {type(reason).__name__} (retried)") from None
    if len(data) > cap:
        raise _too_big(shown, len(data), cap)
    return data


def _fetch_store(url: str, shown: str, cap: int) -> bytes:
    location = resolve(url)
    try:
        info = file_info(location)
    except StorageError as error:
        if _forbidden(str(error)):
            raise MissingObjectError(f"cannot read {shown}: access denied") from None
        raise
    if info.type == pafs.FileType.NotFound:
        raise MissingObjectError(f"cannot read {shown}: no such object")
    if info.type != pafs.FileType.File:
        raise MissingObjectError(f"cannot read {shown}: a folder or prefix, not an object")
    if info.size is not None and info.size > cap:
        raise _too_big(shown, info.size, cap)
    try:
        data = read_bytes(location, max_bytes=cap)
    except MissingObjectError:
        raise
    except StorageError as error:
        if _forbidden(str(error)):
            raise MissingObjectError(f"cannot read {shown}: access denied") from None
        raise
    if len(data) > cap:
        raise _too_big(shown, len(data), cap)
    return data


def _forbidden(message: str) -> bool:
    return "ACCESS_DENIED" in message or "AccessDenied" in message or "HTTP status 403" in message
