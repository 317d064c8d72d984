"""NDJSON -> table: this provider's ``flatten`` against DuckDB and the reference runner.

    .venv/bin/python benchmarks/tables.py                       # 1 GiB of Observations
    .venv/bin/python benchmarks/tables.py --quick               # 40 MiB smoke run
    .venv/bin/python benchmarks/tables.py --sof-js DIR          # also the reference runner

The input is Synthea-shaped Observation NDJSON (``views.py``'s generator: one or two codings,
a Quantity or a CodeableConcept value), generated into a temporary folder at bench time and
deleted afterwards. The view is ``views.py``'s ``OBSERVATION_VIEW`` (one row per
``code.coding``, the subject's key, the value, the category). Contenders, each in a fresh
process (start-up and imports included), timed by wall clock with the child's CPU time and
peak RSS (``wait4``):

- ``backendauth flatten``: ``core.tables.flatten.flatten`` -> a Delta table (Parquet,
  snappy), typed per the spec (decimals as their exact text);
- ``DuckDB read_json + SQL``: the same columns by SQL (``UNNEST(code.coding)``), ``COPY`` to
  one Parquet file (snappy); DuckDB uses every core;
- ``sof-js`` (with ``--sof-js``): the SQL-on-FHIR reference implementation's ``evaluate()``
  under node (``sof_js_runner.mjs``: batches of 1,000 resources, since ``evaluate()``
  validates the view on every call) over the first ``--sof-js-sample`` lines (a run over the
  whole input would take hours at its rate); its figure is per second of that sample.
  ``DIR`` is a folder holding the reference repository's ``sof-js/src`` files with
  ``fhirpath`` and ``ajv`` installed (``npm install fhirpath@3.9.0 ajv@8``); nothing of it is
  part of this repository.

The load average (1/5/15 minutes) is recorded at the start and after every contender: on a
busy machine every figure is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from load import Load, add_arguments, check
from views import CATEGORY, OBSERVATION_VIEW, _observation, _uuid

MiB = 2**20

FLATTEN = """
import json, sys
from airflow_provider_backendauth.core.tables.flatten import flatten
view = json.load(open(sys.argv[1]))
result = flatten(view, [sys.argv[2]], sys.argv[3])
print(json.dumps({"rows": result.rows}))
"""

# $category, $input and $output are replaced by the child (our constant, our temporary paths).
DUCKDB_SQL = """
COPY (
    SELECT o.id AS id,
           CASE WHEN starts_with(o.subject.reference, 'Patient/')
                THEN split_part(o.subject.reference, '/', 2) END AS patient_id,
           o.status AS status,
           o.effectiveDateTime AS effective,
           CAST(o.valueQuantity.value AS VARCHAR) AS value,
           o.valueQuantity.code AS unit,
           o.valueCodeableConcept.coding[1].code AS value_code,
           list_filter(flatten(list_transform(o.category, lambda c: c.coding)),
                       lambda c: c.system = $category)[1].code AS category,
           coding.system AS code_system, coding.code AS code, coding.display AS display
    FROM read_json($input, format = 'newline_delimited') AS o,
         UNNEST(o.code.coding) AS t(coding)
) TO $output (FORMAT parquet, COMPRESSION snappy)
"""

DUCKDB = """
import duckdb, json, sys
quoted = {"$input": sys.argv[2], "$output": sys.argv[3], "$category": sys.argv[4]}
sql = sys.argv[1]
for name, value in quoted.items():
    sql = sql.replace(name, "'" + value + "'")
duckdb.sql(sql)
rows = duckdb.execute("SELECT count(*) FROM read_parquet(?)", [sys.argv[3]]).fetchall()[0][0]
print(json.dumps({"rows": rows}))
"""


def generate(path: Path, size: int, seed: int = 19) -> int:
    """Write Observations until the file holds ``size`` bytes; returns how many. A block of
    distinct resources is written again and again (the runner's cost does not depend on
    ids being unique)."""
    rng = random.Random(seed)
    patients = [_uuid(rng) for _ in range(5_000)]
    block = b"".join(
        json.dumps(_observation(rng, rng.choice(patients))).encode() + b"\n" for _ in range(20_000)
    )
    lines_per_block = block.count(b"\n")
    written = count = 0
    with path.open("wb") as out:
        while written < size:
            out.write(block)
            written += len(block)
            count += lines_per_block
    return count


def timed(argv: list[str], cwd: Path | None = None) -> dict[str, Any]:
    """Run ``argv`` to completion: its JSON answer, wall seconds, CPU seconds, peak RSS."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=cwd)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"{argv[:2]} failed with exit status {child.returncode}")
    answer = json.loads(output.decode().strip().splitlines()[-1])
    return {
        **answer,
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=1024, help="input size in MiB (default 1024)")
    parser.add_argument("--quick", action="store_true", help="a 40 MiB smoke run")
    parser.add_argument("--sof-js", type=Path, help="the reference runner's folder (see above)")
    parser.add_argument("--sof-js-sample", type=int, default=3_000, help="its sample, in lines")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    add_arguments(parser)
    args = parser.parse_args()
    size = (40 if args.quick else args.mb) * MiB
    start_load = check(args.require_idle, "the tables benchmark")
    work = Path(tempfile.mkdtemp(prefix="backendauth-tables-bench-"))
    results: list[tuple[str, dict[str, Any], Load, float]] = []
    try:
        data = work / "Observation.000.ndjson"
        resources = generate(data, size)
        size = data.stat().st_size
        view = work / "view.json"
        view.write_text(json.dumps(OBSERVATION_VIEW))
        print(f"input: {resources:,} Observations, {size / MiB:,.0f} MiB; load {start_load}")
        ours = timed([sys.executable, "-c", FLATTEN, str(view), str(data), str(work / "table")])
        results.append(("backendauth flatten -> Delta table", ours, Load.now(), size))
        duck = timed(
            [
                sys.executable,
                "-c",
                DUCKDB,
                DUCKDB_SQL,
                str(data),
                str(work / "duck.parquet"),
                CATEGORY,
            ]
        )
        results.append(("DuckDB read_json + SQL -> Parquet", duck, Load.now(), size))
        if ours["rows"] != duck["rows"]:
            raise SystemExit(f"row counts differ: ours {ours['rows']}, DuckDB {duck['rows']}")
        if args.sof_js:
            sample = work / "sample.ndjson"
            with data.open("rb") as source, sample.open("wb") as out:
                for _ in range(args.sof_js_sample):
                    out.write(source.readline())
            runner = Path(__file__).with_name("sof_js_runner.mjs")
            sof = timed(["node", str(runner), str(args.sof_js.resolve()), str(view), str(sample)])
            sof["resources_measured"] = args.sof_js_sample
            results.append(
                (
                    f"sof-js (reference), first {args.sof_js_sample:,} lines",
                    sof,
                    Load.now(),
                    sample.stat().st_size,
                )
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print("| contender | resources/s | MB/s | wall s | CPU s | peak RSS MB | load after |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, result, load, nbytes in results:
        count = result.get("resources_measured", resources)
        seconds = result.get("seconds") or result["wall"]  # sof-js times its own loop
        print(
            f"| {name} | {count / seconds:,.0f} | {nbytes / 1e6 / seconds:,.2f} | "
            f"{result['wall']:.1f} | {result['cpu']:.1f} | {result['rss_mb']:,.0f} | {load} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
