"""The one-command demo (``make demo``).

Starts the bundled sandbox, registers a client per vendor profile, shows the token exchange for
each of five vendors (MyDataHelps, Koppeltaal, HelseID, Redox, NHS England) through the hook,
runs the example DAGs with real Airflow (``airflow dags test``) against the sandbox with
connections from ``AIRFLOW_CONN_*``, prints what was fetched, and ends with a query over the
SQL-on-FHIR tables the bulk export DAG wrote (DuckDB). Everything lands under ``.demo/``;
nothing is left running.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".demo"
AIRFLOW_HOME = WORK / "airflow"
OUTPUT = WORK / "output"
LOGS = WORK / "logs"
LOGICAL_DATE = "2024-06-01T00:00:00+00:00"

# The vendors whose token rules the sandbox enforces, and their connection ids.
SEED_VENDORS = ("mydatahelps", "koppeltaal", "helseid", "redox", "nhs_england")

# (dag_id, what it shows). The DAG files live in dags_examples/.
DAGS: tuple[tuple[str, str], ...] = (
    ("backendauth_fhir_search", "FHIR search: patients + observations of the interval -> NDJSON"),
    ("backendauth_mydatahelps_participants", "REST with pagination: MyDataHelps participants"),
    *((f"backendauth_vendor_{v}", f"{v} connection: one token-checked call") for v in SEED_VENDORS),
    ("backendauth_bulk_export", "Bulk Data: nightly Group $export (since=auto) -> Delta tables"),
    ("backendauth_bulk_export_mapped", "Bulk Data: $export with mapped per-file downloads"),
)


def main() -> int:
    started = time.monotonic()
    shutil.rmtree(WORK, ignore_errors=True)
    for folder in (AIRFLOW_HOME, OUTPUT, LOGS):
        folder.mkdir(parents=True)
    env = airflow_env()
    os.environ.update(env)

    from backendauth_sandbox import Sandbox

    step("Preparing Airflow's metadata database")
    airflow(["db", "migrate"], env, "db-migrate")

    with Sandbox(patients=200, seed=2024) as sb:
        step(f"Sandbox running at {sb.url} (FHIR base {sb.fhir_base})")
        connections = register_clients(sb)
        env.update(connections)
        os.environ.update(connections)

        step("Token exchange through BackendAuthHook, one connection per vendor profile")
        token_results = show_tokens(sb)

        step("Running the example DAGs with `airflow dags test`")
        dag_results = [run_dag(dag_id, about, env) for dag_id, about in dag_list()]

        stats = sb.stats
    tables_ok = query_tables()
    summary(token_results, dag_results, stats, time.monotonic() - started)
    failed = [r for r in dag_results if not r["ok"]] + [t for t in token_results if not t["ok"]]
    return 1 if failed or not tables_ok else 0


def query_tables() -> bool:
    """Query the tables the bulk export DAG wrote: vital signs per patient gender."""
    import duckdb

    from airflow_provider_backendauth.core.tables import table_files

    step("SQL-on-FHIR tables (Delta Lake), queried with DuckDB")
    root = OUTPUT / "tables" / "group-all"
    try:
        observations = table_files(root / "observation")
        patients = table_files(root / "patient_demographics")
    except Exception as exc:
        print(f"  FAIL no tables under {root.relative_to(REPO)}: {exc}")
        return False
    for table in sorted(p for p in root.iterdir() if p.is_dir()):
        (rows,) = duckdb.execute(
            "SELECT count(*) FROM read_parquet(?)", [table_files(table)]
        ).fetchone() or (0,)
        print(f"  {table.relative_to(OUTPUT)}: {rows} rows")
    query = """
        SELECT o.code_display AS vital, p.gender, count(*) AS n,
               round(avg(CAST(o.value AS DOUBLE)), 1) AS mean, any_value(o.unit) AS unit
        FROM read_parquet(?) AS o JOIN read_parquet(?) AS p ON o.patient = p.id
        GROUP BY ALL ORDER BY vital, p.gender LIMIT 8
    """
    print("\n  " + " ".join(line.strip() for line in query.strip().splitlines()))
    result = duckdb.execute(query, [observations, patients])
    header = [d[0] for d in result.description]
    rows = result.fetchall()
    widths = [max(len(str(v)) for v in [h, *(r[i] for r in rows)]) for i, h in enumerate(header)]
    for line in [header, *rows]:
        print("  " + "  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)))
    return bool(rows)


def airflow_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(AIRFLOW_HOME),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags_examples"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__TEST_CONNECTION="Enabled",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        BACKENDAUTH_OUTPUT=OUTPUT.as_uri(),
        PYTHONWARNINGS="ignore",
    )
    return env


def register_clients(sb: Any) -> dict[str, str]:
    """One client and key per profile; returns AIRFLOW_CONN_* variables pointing at the sandbox."""
    from backendauth_sandbox.testing import generate_client_key

    variables: dict[str, str] = {}
    for vendor in ("smart", *SEED_VENDORS):
        key = generate_client_key("EC-P384" if vendor == "smart" else "RSA")
        client_id = f"demo-{vendor}"
        sb.register_client(client_id, key.public_jwks, vendor=vendor)
        extra: dict[str, Any] = {"profile": vendor}
        if vendor != "smart":
            extra["auth_url"] = sb.token_url  # stands in for the vendor's real token URL
        host = f"{sb.url}/api/v1/administration" if vendor == "mydatahelps" else sb.fhir_base
        conn = {
            "conn_type": "backendauth",
            "host": host,
            "login": client_id,
            "password": key.private_pem,
            "extra": extra,
        }
        variables[f"AIRFLOW_CONN_BACKENDAUTH_{vendor.upper()}"] = json.dumps(conn)
    # The FHIR example DAGs use the generic SMART connection under their documented id.
    variables["AIRFLOW_CONN_BACKENDAUTH_FHIR"] = variables["AIRFLOW_CONN_BACKENDAUTH_SMART"]
    return variables


def show_tokens(sb: Any) -> list[dict[str, Any]]:
    import logging

    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    logging.getLogger("airflow_provider_backendauth").setLevel(logging.WARNING)
    results = []
    for vendor in ("smart", *SEED_VENDORS):
        conn_id = f"backendauth_{vendor}"
        hook = BackendAuthHook(conn_id)
        ok, message = hook.test_connection()
        client = hook.client
        kid = "yes" if client.kid else "no"
        line = f"{vendor:<12} {client.algorithm:<6} kid={kid:<3} {message}"
        print(("  ok   " if ok else "  FAIL ") + line)
        results.append({"vendor": vendor, "ok": ok, "message": message})
    return results


def dag_list() -> tuple[tuple[str, str], ...]:
    return DAGS


def run_dag(dag_id: str, about: str, env: dict[str, str]) -> dict[str, Any]:
    log = LOGS / f"{dag_id}.log"
    begun = time.monotonic()
    code = airflow(["dags", "test", dag_id, LOGICAL_DATE], env, log.stem, check=False)
    seconds = time.monotonic() - begun
    ok = code == 0
    print(f"  {'ok  ' if ok else 'FAIL'} {dag_id:<40} {seconds:5.1f} s  {about}")
    if not ok:
        print(f"       see {log.relative_to(REPO)}")
        print("       " + "\n       ".join(log.read_text(errors="replace").splitlines()[-15:]))
    return {"dag_id": dag_id, "ok": ok, "seconds": seconds}


def airflow(args: list[str], env: dict[str, str], log_name: str, check: bool = True) -> int:
    with (LOGS / f"{log_name}.log").open("wb") as log:
        result = subprocess.run(  # noqa: S603 - our own interpreter and fixed arguments
            [sys.executable, "-m", "airflow", *args], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    if check and result.returncode != 0:
        print(f"airflow {' '.join(args)} failed; see {LOGS / (log_name + '.log')}")
        raise SystemExit(result.returncode)
    return result.returncode


def summary(
    tokens: list[dict[str, Any]], dags: list[dict[str, Any]], stats: dict[str, Any], seconds: float
) -> None:
    step("What was fetched")
    files = sorted(
        p
        for p in OUTPUT.rglob("*")
        if p.is_file()
        and not p.name.startswith(".")
        and "tables" not in p.relative_to(OUTPUT).parts
    )
    # The export log (bulk-data-client's log.ndjson) is NDJSON too, but no data.
    from airflow_provider_backendauth.core.bulk.exportlog import LOG_NAME as EXPORT_LOG_NAME

    logs = [p for p in files if p.name == EXPORT_LOG_NAME]
    data = [p for p in files if p.suffix == ".ndjson" and p.name != EXPORT_LOG_NAME]
    for source in sorted({p.relative_to(OUTPUT).parts[0] for p in data}):
        counts: Counter[str] = Counter()
        for path in (p for p in data if p.relative_to(OUTPUT).parts[0] == source):
            with path.open("rb") as handle:
                for line in handle:
                    counts[json.loads(line).get("resourceType") or path.stem] += 1
        listed = ", ".join(f"{n} {rtype}" for rtype, n in sorted(counts.items()))
        print(f"  {source:<12} {listed}")
    state = [p for p in files if "_bulk_state" in p.parts]
    manifests = len(files) - len(data) - len(state) - len(logs)
    print(
        f"  files written under {OUTPUT.relative_to(REPO)}/: {len(data)} NDJSON, "
        f"{manifests} bulk manifests, {len(logs)} export logs, {len(state)} bulk state files"
    )
    for path in data + logs:
        print(f"    {path.relative_to(OUTPUT)}  ({path.stat().st_size:,} bytes)")
    by_client = ", ".join(f"{c}: {n}" for c, n in stats["token_requests_by_client"].items())
    print(f"  token requests made: {stats['token_requests']} ({by_client})")
    print(f"  API requests served by the sandbox: {stats['requests']}")
    good_dags = sum(1 for d in dags if d["ok"])
    good_tokens = sum(1 for t in tokens if t["ok"])
    print(
        f"\nDemo finished in {seconds:.0f} s: {good_tokens}/{len(tokens)} token exchanges, "
        f"{good_dags}/{len(dags)} DAG runs succeeded. Sandbox stopped."
    )


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
