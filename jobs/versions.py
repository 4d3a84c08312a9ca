"""The code version recorded in lineage and manifests, and why a committed output differs.

The version is the package version plus a hash of the package's source files' contents
(``cropcore/**/*.py`` and ``jobs/**/*.py``), so the same code has the same version everywhere: in
a git checkout, in a copy without ``.git`` (``ray job submit --working-dir`` does not upload it),
in an installed wheel. Any edit to a source file changes it; nothing else does.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["code_version", "describe_difference", "source_digest"]

PACKAGES = ("cropcore", "jobs")


def source_digest(roots: dict[str, Path] | None = None) -> str:
    """sha256 over the sorted ``<package>/<relative path>`` names and contents of every ``.py``
    file under each package root (``__pycache__`` skipped).

    Convention: line endings are normalized to ``\\n`` before hashing, so a Windows checkout
    (``core.autocrlf``) gives the same digest as a Linux one.
    """
    if roots is None:
        roots = {name: _package_dir(name) for name in PACKAGES}
    digest = hashlib.sha256()
    for name in sorted(roots):
        root = roots[name]
        files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
        for path in files:
            relative = f"{name}/{path.relative_to(root).as_posix()}"
            content = path.read_bytes().replace(b"\r\n", b"\n")
            digest.update(f"{relative}\n{len(content)}\n".encode())
            digest.update(content)
    return digest.hexdigest()


def _package_dir(name: str) -> Path:
    module = __import__(name)
    return Path(module.__file__).resolve().parent


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+src.<12 hex digits of source_digest()>``, e.g. ``0.1.0+src.3f2a...``."""
    try:
        package = version("cropcore")
    except PackageNotFoundError:
        package = "0+unknown"
    return f"{package}+src.{source_digest()[:12]}"


# Settings keys, grouped under the names a user knows them by.
_GROUPS = {"inputs": "inputs", "step": "step", "code_version": "code version"}


def describe_difference(committed: dict | None, settings: dict) -> str:
    """Which of inputs, step, settings or code version differ between a committed run and this
    one, as one phrase: ``"the step differs (committed {...}, now {...})"``.

    ``committed`` is the committed manifest's ``settings`` dict (what ``prepare`` hashes into the
    run id); a manifest written before settings were recorded has none: pass the manifest itself
    and its ``step``, ``code_version`` and ``format`` are compared. ``settings`` is this run's.
    """
    committed = committed or {}
    recorded = committed.get("settings", committed)
    if recorded is committed and "settings" not in committed and "step" in committed:
        # An older manifest: the step is stored parsed, the format under its own key.
        recorded = {"code_version": committed.get("code_version"),
                    "step": committed.get("step"), "format": committed.get("format")}
    differing = []
    for key in sorted(set(recorded) | set(settings)):
        if key not in recorded:
            continue  # not recorded then: cannot be compared
        old, new = _comparable(recorded.get(key)), _comparable(settings.get(key))
        if old != new:
            differing.append((key, recorded.get(key), settings.get(key)))
    if not differing:
        return "the run id differs (same inputs, step, settings and code version)" \
            if recorded else "its inputs, step, settings or code version differ (not recorded)"
    named = [(_GROUPS.get(k, "settings"), k, old, new) for k, old, new in differing]
    groups = list(dict.fromkeys(group for group, *_ in named))
    details = "; ".join(f"{k}: committed {_short(old)}, now {_short(new)}"
                        for _, k, old, new in named)
    return f"{_join(groups)} {'differs' if len(groups) == 1 else 'differ'} ({details})"


def _comparable(value):
    """A step may be stored as JSON text or parsed: compare both as parsed JSON."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _short(value, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join(names: list[str]) -> str:
    names = [f"the {n}" if n in ("step", "code version") else n for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
