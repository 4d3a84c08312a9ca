"""Export a committed run to other tools: WebDataset tar shards and OpenLineage run events.

``python -m jobs export OUTPUT --webdataset --openlineage`` reads only what the run's
``_manifest.json`` lists (through ``jobs.runs``, so files of a crashed attempt are never exported)
and writes beside it::

    webdataset/shard-000000.tar     one tar per crops shard (or per --samples-per-shard samples)
    openlineage/events.jsonl        a START and a COMPLETE OpenLineage RunEvent, one per line

Each format is a module of this package (``webdataset``, ``openlineage``); this one holds the
command and names the formats' public functions.
"""

from __future__ import annotations

import argparse
import sys

from jobs.exports.openlineage import (
    PRODUCER_ENV,
    RUN_UUID_NAMESPACE,
    dataset_name,
    default_producer,
    openlineage_events,
    write_openlineage,
)
from jobs.exports.webdataset import PREDICTION_COLUMNS, export_webdataset, sample_json, tar_bytes
from jobs.runs import RunError, hf_features_metadata, with_hf_features

__all__ = [
    "PREDICTION_COLUMNS",
    "RUN_UUID_NAMESPACE",
    "ExportError",
    "add_arguments",
    "command",
    "dataset_name",
    "default_producer",
    "export_webdataset",
    "hf_features_metadata",
    "openlineage_events",
    "sample_json",
    "tar_bytes",
    "with_hf_features",
    "write_openlineage",
]

# An export fails for the reasons reading the run does (not a committed run) or for its own
# (a bad --samples-per-shard or producer): one class, so the command catches one.
ExportError = RunError

EXAMPLE = """example:
  python -m jobs export demo-output/crops-run --webdataset
  python -m jobs export s3://bucket/crops-v1/ --webdataset --samples-per-shard 1000 --openlineage
then read the shards with webdataset:
  wds.WebDataset("demo-output/crops-run/webdataset/shard-{000000..000001}.tar").decode()"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``export`` command's arguments: OUTPUT and the formats to write."""
    parser.description = ("Export a committed run's output: WebDataset tar shards of its crops\n"
                          "(predictions and lineage as JSON beside each crop) and OpenLineage\n"
                          "run events.")
    parser.epilog = EXAMPLE
    parser.add_argument("output", metavar="OUTPUT", help="the run's output folder (path or URL)")
    parser.add_argument("--webdataset", action="store_true",
                        help="write OUTPUT/webdataset/shard-NNNNNN.tar")
    parser.add_argument("--samples-per-shard", type=int, default=None,
                        help="crops per tar (default: one tar per crops shard of the run)")
    parser.add_argument("--openlineage", action="store_true",
                        help="write OUTPUT/openlineage/events.jsonl (START and COMPLETE)")
    parser.add_argument("--producer", default=None,
                        help=f"OpenLineage producer URI (default: ${PRODUCER_ENV}, else "
                             f"urn:cropcore:<version>)")


def command(args: argparse.Namespace) -> int:
    """Run ``python -m jobs export``; returns the exit code (2 for nothing to export or a
    folder that is not a committed run)."""
    if not (args.webdataset or args.openlineage):
        print("error: nothing to export: expected --webdataset and/or --openlineage",
              file=sys.stderr)
        return 2
    try:
        if args.webdataset:
            tars = export_webdataset(args.output, args.samples_per_shard)
            print(f"webdataset  {len(tars)} tar shards"
                  + "".join(f"\n  {url}" for url in tars[:3])
                  + (f"\n  ... {len(tars) - 3} more" if len(tars) > 3 else ""))
        if args.openlineage:
            print(f"openlineage {write_openlineage(args.output, args.producer)}")
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
