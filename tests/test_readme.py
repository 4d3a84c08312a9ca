"""The README's lists of output columns and error reasons are the schema's constants."""

import re
from pathlib import Path

from jobs import schema

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
IDENTIFIER = re.compile(r"`([a-z][a-z0-9_]*)`")


def names_in(text: str) -> list[str]:
    return IDENTIFIER.findall(text)


def table_row(path: str) -> str:
    (row,) = [line for line in README.splitlines() if line.startswith(f"| `{path}` |")]
    return row


def root_columns_paragraph() -> str:
    start = README.index("The root columns, on crops and lineage alike:")
    return README[start : README.index("\n\n", start)]


def test_readme_root_columns_are_the_schemas():
    assert names_in(root_columns_paragraph()) == list(schema.ROOT_COLUMNS)


def test_readme_crops_columns_are_the_schemas():
    listed = names_in(table_row("crops/part-*.parquet")) + list(schema.ROOT_COLUMNS)
    assert listed == list(schema.CROP_COLUMNS)


def test_readme_lineage_columns_are_the_schemas():
    listed = names_in(table_row("lineage/part-*.parquet")) + list(schema.ROOT_COLUMNS)
    assert listed == list(schema.LINEAGE_COLUMNS)


def test_readme_errors_columns_are_the_schemas():
    assert names_in(table_row("errors/part-*.parquet")) == schema.ERROR_SCHEMA.names


def test_readme_error_reasons_are_the_schemas():
    start = README.index("**Bad data never stops the job**")
    bullet = README[start : README.index("A missing or mistyped column", start)]
    listed = names_in(bullet)
    assert len(listed) == len(set(listed))
    assert set(listed) == set(schema.ERROR_REASONS)
