"""``backendauth flatten VIEW.json INPUT.ndjson[.gz]... --out PATH``: try a ViewDefinition on
NDJSON files by hand. Writes the view's table (Parquet committed as a Delta Lake version, see
docs/tables.md) at ``PATH`` and prints a summary; ``--incremental`` merges into the table
there instead (with ``--deleted`` files of a bulk export). Needs the ``tables`` extra.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from airflow_provider_backendauth.cli.main import CommandError


def load_view(path: str) -> dict[str, Any]:
    """A ViewDefinition from a JSON file (bounded: a view is small)."""
    file = Path(path)
    try:
        with file.open("rb") as handle:
            data = handle.read(4 * 2**20 + 1)
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror or exc}") from exc
    if len(data) > 4 * 2**20:
        raise CommandError(f"{path}: larger than 4 MiB; not a ViewDefinition")
    try:
        view = json.loads(data)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path}: not UTF-8 JSON") from exc
    if not isinstance(view, dict):
        raise CommandError(f"{path}: a ViewDefinition is a JSON object")
    return view


def flatten(args: argparse.Namespace) -> int:
    from airflow_provider_backendauth.core.tables import TypeOptions
    from airflow_provider_backendauth.core.tables.flatten import flatten as write_table

    view = load_view(args.view)
    for given in [*args.inputs, *(args.deleted or [])]:
        if "://" not in given and not Path(given).is_file():
            raise CommandError(f"{given}: no such file")
    result = write_table(
        view,
        args.inputs,
        args.out,
        incremental=args.incremental,
        deleted=args.deleted or [],
        options=TypeOptions(decimals=args.decimals, temporal=args.temporal),
    )
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        verb = "merged into" if result.mode == "merge" else "wrote"
        print(
            f"{verb} {result.path} (version {result.version}): {result.rows_written} rows written, "
            f"{result.rows_removed} removed, {result.rows} in the table; "
            f"columns: {', '.join(result.columns)}"
        )
    return 0
