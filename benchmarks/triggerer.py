"""Hundreds of deferred exports in one triggerer: ``make bench``.

    .venv/bin/python benchmarks/triggerer.py                 # K = 10, 100, 1000
    .venv/bin/python benchmarks/triggerer.py --k 10,100 --window 20

Users defer one export per EHR group or site, hundreds at once, into one triggerer: one
process, one event loop, that every provider's triggers share. This runs K
``BulkExportTrigger.run()`` coroutines in one event loop (a fresh interpreter per K, so one
K's memory is not the next one's baseline) against the sandbox in its own process (its CPU is
not counted), with exports that stay pending, ``Retry-After: 2`` and 40 s tokens, and
measures:

- RSS per deferred export: the process's RSS with the K triggers started and polling, less
  its RSS before (imports done, one trigger run to warm them), over K, after a full GC;
- start-up CPU per export: the process CPU from starting the K coroutines until every one
  has polled once (the sandbox's poll counter says when), over K; the triggers spread their
  first polls over the shortest wait (2 s), so the start-up's seconds are about that;
- CPU per poll, polls on schedule and loop lag over ``--window`` seconds after the start-up:
  polls counted by the sandbox; "on schedule" is polls over the polls K triggers make at
  the server's 2 s plus the poller's mean jitter (5%); loop lag is how late a 10 ms
  ``asyncio.sleep`` wakes (p50, p99, max);
- poll round trips (each status request, from the trigger's side: p50, p99) and the
  garbage collector's full collections in the window (count, longest pause): what adds to a
  wait besides the loop's lag;
- open connections (established TCP connections from this process to the sandboxes) at the
  end of the window, and token requests (the sandbox's counter) in the window;
- a slow token endpoint: K triggers on connection A and K on connection B (two sandboxes).
  A's tokens are expired and A's token endpoint held (the sandbox's fault controls hold the
  answer until released): A's triggers all need a new token and cannot get one. B's polls in
  that window, over B's schedule, show whether one connection's token endpoint can delay
  another connection's polls.

Every figure is printed with the load average (``load.py``): a loaded machine delays the
loop for reasons of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests
from load import Load, add_arguments, check, span
from servers import SandboxProcess, sandbox

RETRY_AFTER = 2.0
TOKEN_LIFETIME = 40
MEAN_JITTER = 1.05  # the poller stretches each wait by 0-10%, 5% on average
LAG_TICK = 0.01
CONN_A, CONN_B = "bench_trigger_a", "bench_trigger_b"


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


# --- the parent: sandboxes, clients, one child per measurement ----------------------------


def register(sb: SandboxProcess, client_id: str, jwks: dict[str, Any]) -> None:
    sb.control("POST", "clients", {"client_id": client_id, "public_jwks": jwks})
    sb.control("POST", "token-lifetime", {"seconds": TOKEN_LIFETIME})
    sb.control("POST", "settings", {"bulk_job_seconds": 86400})  # exports stay pending


def connection(sb: SandboxProcess, client_id: str, pem: str) -> str:
    return json.dumps(
        {
            "conn_type": "backendauth",
            "host": sb.fhir_base,
            "login": client_id,
            "password": pem,
            "extra": {"scope": "system/*.rs"},
        }
    )


def child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"the measuring child failed:\n{result.stdout}\n{result.stderr[-4000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def parent(options: argparse.Namespace) -> int:
    from backendauth_sandbox.testing import generate_client_key

    start_load = check(options.require_idle, "benchmarks/triggerer.py")
    key = generate_client_key("EC-P384")
    settings = (f"bulk_retry_after={RETRY_AFTER:g}",)
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-triggerer-{os.getpid()}"
    env = {**os.environ, "AIRFLOW_HOME": str(home)}
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        a = stack.enter_context(sandbox(10, *settings))
        b = stack.enter_context(sandbox(10, *settings))
        for sb, conn in ((a, CONN_A), (b, CONN_B)):
            register(sb, conn, key.public_jwks)
            env[f"AIRFLOW_CONN_{conn.upper()}"] = connection(sb, conn, key.private_pem)
        urls = ["--a", a.url, "--b", b.url, "--window", str(options.window)]
        for k in options.k_list:
            before = check(False, f"K={k}")
            row = child([*urls, "--k", str(k), "--scenario", "scale"], env)
            row["load"] = span(before, Load.now())
            rows.append(row)
            print(json.dumps(row), flush=True)
        slow_k = options.slow_token_k
        slow: dict[str, Any] = {}
        if slow_k:
            before = check(False, "slow token endpoint")
            slow = child([*urls, "--k", str(slow_k), "--scenario", "slow-token"], env)
            slow["load"] = span(before, Load.now())
            print(json.dumps(slow), flush=True)
    end_load = Load.now()
    print(
        f"\nDeferred exports in one event loop (sandbox in its own process, Retry-After "
        f"{RETRY_AFTER:g} s, {TOKEN_LIFETIME} s tokens, {options.window:g} s window); load "
        f"average {start_load} at the start, {end_load} at the end on {end_load.cores} cores:"
    )
    print(
        "| K | RSS KB/export | start-up CPU ms/export | start-up s | CPU ms/poll | polls on "
        "schedule | loop lag p50/p99/max ms | poll round trip p50/p99 ms | full GCs (max ms) "
        "| open connections | token requests | load (1 min) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['k']} | {r['rss_kb_per_export']:.0f} | {r['startup_cpu_ms_per_export']:.1f} "
            f"| {r['startup_s']:.1f} | {r['cpu_ms_per_poll']:.2f} | {r['on_schedule']:.3f} "
            f"| {r['lag_p50_ms']:.1f}/{r['lag_p99_ms']:.1f}/{r['lag_max_ms']:.0f} "
            f"| {r['round_trip_p50_ms']:.1f}/{r['round_trip_p99_ms']:.1f} "
            f"| {r['gc_full_collections']} ({r['gc_full_max_ms']:.0f}) "
            f"| {r['open_connections']} | {r['token_requests']} | {r['load']} |"
        )
    if slow:
        print(
            f"\nSlow token endpoint: {slow_k} exports on connection A (tokens expired, token "
            f"endpoint held) beside {slow_k} on connection B: B's polls on schedule "
            f"{slow['b_on_schedule_held']:.3f} while A was held (before: "
            f"{slow['b_on_schedule_before']:.3f}); A's polls while held: {slow['a_polls_held']}; "
            f"loop lag p99 {slow['lag_p99_ms']:.1f} ms; load (1 min) {slow['load']}"
        )
    if options.json:
        options.json.write_text(json.dumps({"scale": rows, "slow_token": slow}, indent=1))
    check(False, "the end of the run")
    return 0


# --- the child: K triggers in one event loop ----------------------------------------------


class Sandboxes:
    """The sandboxes' control API, called from a thread of the benchmark's own (never the
    loop's default executor, which the triggers use)."""

    def __init__(self, a: str, b: str) -> None:
        self.urls = {"a": a, "b": b}
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="bench-control")

    def _call(self, which: str, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.urls[which]}/_sandbox/{path}"
        response = requests.request(method, url, json=body, timeout=60)
        response.raise_for_status()
        return response.json()

    async def call(self, which: str, method: str, path: str, body: Any = None) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self._call, which, method, path, body)

    async def polls(self, which: str) -> int:
        return int((await self.call(which, "GET", "stats"))["bulk_status_polls"])

    async def tokens(self, which: str) -> int:
        return int((await self.call(which, "GET", "stats"))["token_requests"])


def kick_off(base: str, conn: str, k: int) -> list[str]:
    """K pending exports of the connection's client, kicked off with a control token."""
    token = requests.post(
        f"{base}/_sandbox/tokens", json={"client_id": conn, "lifetime": 7200}, timeout=60
    ).json()["access_token"]
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {token}", "Prefer": "respond-async"})
    urls = []
    for _ in range(k):
        answer = session.get(
            f"{base}/fhir/$export", headers={"Accept": "application/fhir+json"}, timeout=60
        )
        answer.raise_for_status()
        urls.append(answer.headers["Content-Location"])
    return urls


class LagMonitor:
    """How late a short ``asyncio.sleep`` wakes: the loop's lag, sampled every 10 ms."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(LAG_TICK)
            self.samples.append(max(0.0, time.perf_counter() - started - LAG_TICK))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def reset(self) -> None:
        self.samples = []

    def figures(self) -> dict[str, float]:
        return {
            "lag_p50_ms": percentile(self.samples, 0.5) * 1000,
            "lag_p99_ms": percentile(self.samples, 0.99) * 1000,
            "lag_max_ms": max(self.samples, default=0.0) * 1000,
        }


def open_connections(ports: set[int]) -> int:
    import psutil

    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED
    )


async def consume(trigger: Any) -> None:
    async for _ in trigger.run():
        return


async def start(triggers: list[Any]) -> list[asyncio.Task[None]]:
    loop = asyncio.get_running_loop()
    return [loop.create_task(consume(t)) for t in triggers]


async def wait_for_polls(control: Sandboxes, which: str, target: int) -> None:
    while await control.polls(which) < target:
        await asyncio.sleep(0.2)


class RoundTrips:
    """How long each poll's request takes, from the trigger's side (wraps ``_send``): what
    the server's answer adds to each wait, beside the loop's own lag."""

    def __init__(self, trigger_class: Any) -> None:
        self.samples: list[float] = []
        send = trigger_class._send

        async def timed(trigger: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await send(trigger, *args, **kwargs)
            finally:
                self.samples.append(time.perf_counter() - started)

        trigger_class._send = timed

    def figures(self) -> dict[str, float]:
        return {
            "round_trip_p50_ms": percentile(self.samples, 0.5) * 1000,
            "round_trip_p99_ms": percentile(self.samples, 0.99) * 1000,
        }


class GcPauses:
    """The garbage collector's pauses (``gc.callbacks``): a full collection walks every
    object the process holds, and stops the loop while it does."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    def reset(self) -> None:
        self.pauses = {0: [], 1: [], 2: []}

    def figures(self) -> dict[str, float]:
        full = self.pauses[2]
        return {
            "gc_full_collections": len(full),
            "gc_full_max_ms": max(full, default=0.0) * 1000,
            "gc_ms_total": sum(sum(p) for p in self.pauses.values()) * 1000,
        }


async def scale(options: argparse.Namespace, urls: list[str], control: Sandboxes) -> dict:
    from airflow_provider_backendauth.triggers.bulk import BulkExportTrigger

    trips = RoundTrips(BulkExportTrigger)

    # One trigger polls once first: the imports and first-use costs every trigger after it
    # is spared (the hook, httpx's transport, the connection's key) are not per export.
    warm, urls = urls[0], urls[1:]
    polls = await control.polls("a")
    (warming,) = await start([BulkExportTrigger(CONN_A, warm)])
    await wait_for_polls(control, "a", polls + 1)
    warming.cancel()
    await asyncio.gather(warming, return_exceptions=True)
    k = len(urls)
    monitor = LagMonitor()
    monitor.start()
    gc.collect()
    rss0, polls0 = rss_kb(), await control.polls("a")
    cpu0, t0 = cpu_now(), time.perf_counter()
    tasks = await start([BulkExportTrigger(CONN_A, url) for url in urls])
    await wait_for_polls(control, "a", polls0 + k)
    startup_cpu, startup_s = cpu_now() - cpu0, time.perf_counter() - t0
    gc.collect()
    rss1 = rss_kb()
    # The window: steady polling after the start-up.
    monitor.reset()
    trips.samples = []
    pauses = GcPauses()
    polls1, tokens1, cpu1 = await control.polls("a"), await control.tokens("a"), cpu_now()
    await asyncio.sleep(options.window)
    polls2, tokens2, cpu2 = await control.polls("a"), await control.tokens("a"), cpu_now()
    connections = open_connections({int(u.rsplit(":", 1)[1]) for u in control.urls.values()})
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    polls = polls2 - polls1
    expected = k * options.window / (RETRY_AFTER * MEAN_JITTER)
    return {
        "k": k,
        "rss_kb_per_export": (rss1 - rss0) / k,
        "startup_cpu_ms_per_export": startup_cpu * 1000 / k,
        "startup_s": startup_s,
        "polls": polls,
        "expected_polls": round(expected, 1),
        "on_schedule": polls / expected,
        "cpu_ms_per_poll": (cpu2 - cpu1) * 1000 / max(1, polls),
        "open_connections": connections,
        "token_requests": tokens2 - tokens1,
        **monitor.figures(),
        **trips.figures(),
        **pauses.figures(),
    }


async def slow_token(options: argparse.Namespace, control: Sandboxes, k: int) -> dict:
    from airflow_provider_backendauth.triggers.bulk import BulkExportTrigger

    a_urls = await asyncio.get_running_loop().run_in_executor(
        control.pool, kick_off, control.urls["a"], CONN_A, k
    )
    b_urls = await asyncio.get_running_loop().run_in_executor(
        control.pool, kick_off, control.urls["b"], CONN_B, k
    )
    monitor = LagMonitor()
    monitor.start()
    a0, b0 = await control.polls("a"), await control.polls("b")
    tasks = await start(
        [BulkExportTrigger(CONN_A, u) for u in a_urls]
        + [BulkExportTrigger(CONN_B, u) for u in b_urls]
    )
    await wait_for_polls(control, "a", a0 + k)
    await wait_for_polls(control, "b", b0 + k)
    expected = k * options.window / (RETRY_AFTER * MEAN_JITTER)
    b1 = await control.polls("b")
    await asyncio.sleep(options.window)
    b_before = (await control.polls("b")) - b1
    # Hold A's token endpoint and expire A's tokens: every A trigger's next poll gets a 401
    # and needs a new token, which does not come until the rule is released.
    rule = await control.call("a", "POST", "faults", {"path": "/auth/token", "times": None,
                                                     "hold_after_bytes": 0})  # fmt: skip
    await control.call("a", "POST", "expire-tokens")
    monitor.reset()
    a1, b1 = await control.polls("a"), await control.polls("b")
    await asyncio.sleep(options.window)
    a2, b2 = await control.polls("a"), await control.polls("b")
    await control.call("a", "POST", f"faults/{rule['id']}/release")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "k_per_connection": k,
        "b_on_schedule_before": b_before / expected,
        "b_on_schedule_held": (b2 - b1) / expected,
        "a_polls_held": a2 - a1,
        **monitor.figures(),
    }


def child_main(options: argparse.Namespace) -> int:
    import logging

    logging.disable(logging.WARNING)  # a held token endpoint makes the triggers say so
    control = Sandboxes(options.a, options.b)
    # Imports and first-use costs out of the measurement: one trigger's module loading.
    from airflow_provider_backendauth.triggers.bulk import _load_modules

    _load_modules()
    if options.scenario == "scale":
        urls = kick_off(options.a, CONN_A, options.k + 1)  # one more to warm up with
        result = asyncio.run(scale(options, urls, control))
    else:
        result = asyncio.run(slow_token(options, control, options.k))
    control.pool.shutdown()
    print(json.dumps(result))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", default="10,100,1000", help="deferred exports, comma-separated")
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--slow-token-k", type=int, default=100, help="exports per connection")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", default="scale", help=argparse.SUPPRESS)
    parser.add_argument("--a", help=argparse.SUPPRESS)
    parser.add_argument("--b", help=argparse.SUPPRESS)
    add_arguments(parser)
    options = parser.parse_args(argv)
    if options.child:
        options.k = int(options.k)
    else:
        options.k_list = [int(k) for k in options.k.split(",")]
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    return child_main(options) if options.child else parent(options)


if __name__ == "__main__":
    sys.exit(main())
