"""--help shows each option's default."""

import pytest

from jobs.cli import build_parser


def _help(capsys, *command) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    return " ".join(capsys.readouterr().out.split())  # unwrap argparse's line breaks


def test_run_help_shows_defaults(capsys):
    text = _help(capsys, "run")
    assert "(default: 10000)" in text.split("--max-detections MAX_DETECTIONS")[-1][:120]
    assert "(default: 32)" in text.split("--rows-per-shard ROWS_PER_SHARD")[-1][:120]
    assert "(default: None)" not in text and "(default: False)" not in text
    webp = text.split("--webp-method WEBP_METHOD")[-1][:200]
    assert webp.startswith(" webp only: libwebp's effort 0..6, 0 fastest") and "effort 4)" in webp


def test_demo_help_shows_the_number_of_images(capsys):
    assert "number of demo images (default: 48)" in _help(capsys, "demo")
