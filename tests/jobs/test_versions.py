"""Code version from source contents, and naming what differs from a committed run."""

import shutil
import subprocess
import sys
from pathlib import Path

from jobs.versions import code_version, describe_difference, source_digest

ROOT = Path(__file__).resolve().parents[2]


def _copy_sources(target: Path) -> dict[str, Path]:
    for name in ("cropcore", "jobs"):
        shutil.copytree(ROOT / name, target / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return {name: target / name for name in ("cropcore", "jobs")}


def test_code_version_is_a_hash_of_the_sources():
    version = code_version()
    assert "+src." in version and len(version.split("+src.")[1]) == 12
    assert version.split("+src.")[1] == source_digest()[:12]


def test_same_code_without_git_has_the_same_version(tmp_path):
    """What ``ray job submit --working-dir .`` uploads: the sources, no .git."""
    _copy_sources(tmp_path)
    assert not (tmp_path / ".git").exists()
    out = subprocess.run(
        [sys.executable, "-c", "import jobs.versions as v; print(v.__file__); "
                               "print(v.code_version())"],
        cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith(str(tmp_path))  # the copy ran, not the checkout
    assert out[1] == code_version()


def test_an_edit_changes_the_digest_and_caches_and_line_endings_do_not(tmp_path):
    roots = _copy_sources(tmp_path)
    before = source_digest(roots)
    (roots["jobs"] / "__pycache__").mkdir(exist_ok=True)
    (roots["jobs"] / "__pycache__" / "stray.py").write_text("x = 1\n")
    assert source_digest(roots) == before
    steps = roots["jobs"] / "steps.py"
    steps.write_bytes(steps.read_bytes().replace(b"\n", b"\r\n"))
    assert source_digest(roots) == before
    steps.write_bytes(steps.read_bytes() + b"# edited\r\n")
    assert source_digest(roots) != before


SETTINGS = {"code_version": "0.1.0+src.aaaaaaaaaaaa", "step": '{"type":"x","w":1}',
            "format": "png", "quality": None, "inputs": "digest-1", "max_detections": 10}


def test_describe_difference_names_each_kind():
    committed = {"settings": SETTINGS}
    assert describe_difference(committed, {**SETTINGS, "inputs": "digest-2"}) == \
        "inputs differs (inputs: committed digest-1, now digest-2)"
    assert describe_difference(committed, {**SETTINGS, "step": '{"type":"x","w":2}'}).startswith(
        "the step differs (step: committed ")
    both = describe_difference(committed, {**SETTINGS, "code_version": "0.1.0+src.b",
                                           "max_detections": 5})
    assert both.startswith("the code version and settings differ (code_version: committed "
                           "0.1.0+src.aaaaaaaaaaaa, now 0.1.0+src.b; max_detections: committed "
                           "10, now 5)")
    assert describe_difference(committed, SETTINGS).startswith("the run id differs")


def test_describe_difference_on_an_older_manifest_compares_what_it_recorded():
    manifest = {"step": {"type": "x", "w": 1}, "code_version": "0.1.0+gabc", "format": "png"}
    assert describe_difference(manifest, SETTINGS) == (
        "the code version differs (code_version: committed 0.1.0+gabc, now "
        "0.1.0+src.aaaaaaaaaaaa)")
    assert "not recorded" in describe_difference(None, SETTINGS)
