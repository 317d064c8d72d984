#!/usr/bin/env python3
"""A production-shaped Airflow deployment on 127.0.0.1, up and down with one command.

    python scripts/stack.py up [--dir .stack] [--dags DIR] [--workers 2] [--set KEY=VALUE ...]
    python scripts/stack.py status | restart NAME | kill NAME | down [--dir .stack]

``up`` starts, each on a free port of 127.0.0.1 and as its own process group:

- Postgres (Debian ``postgresql``): a private cluster made by ``initdb`` in a temporary
  directory (run as the ``postgres`` user when we are root: Postgres refuses to run as
  root), the metadata database;
- Redis (Debian ``redis-server``), no persistence: the Celery broker;
- Airflow with the CeleryExecutor: API server, scheduler, DAG processor, triggerer and
  ``--workers`` Celery workers (``worker-1``, ``worker-2``, ...); their log servers are off
  (Airflow binds them to every interface), the API server reads the shared log folder.

It installs what is missing first: the Debian packages with ``flock /tmp/apt.lock apt-get``
(as root), and the Python side from this project's ``stack`` extra (``pip install -e
.[stack]``). ``--dir`` then holds ``stack.json`` (ports, pids, the environment every
Airflow process gets: ``env`` lists it as shell ``export`` lines), ``logs/NAME.log``, and
the Airflow home. ``down`` stops every process (SIGTERM, then SIGKILL after a grace period),
stops Postgres and deletes the directory: nothing stays running or on disk. ``kill NAME``
SIGKILLs one component's whole process group (a machine dying); ``restart NAME`` starts
it again. Documented in docs/deployment.md.

The script uses only the standard library, so that it can install the rest itself.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / ".stack"
APT_LOCK = "/tmp/apt.lock"
DEBIAN_PACKAGES = ("postgresql", "redis-server")
PYTHON_MODULES = ("airflow.providers.celery", "psycopg2", "asyncpg", "redis")
STOP_GRACE = 20.0  # seconds between SIGTERM and SIGKILL on `down`


_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[stack {time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A port nobody listens on right now (Postgres and Redis cannot bind port 0 and say
    which port they got, so the port is picked here)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- installing what is missing ----------------------------------------------------------


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def ensure_debian_packages() -> None:
    missing = []
    if postgres_bin() is None:
        missing.append("postgresql")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"stack: missing Debian packages {missing}: apt-get install {' '.join(missing)}")
    log(f"installing {', '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["flock", APT_LOCK, "apt-get", "install", "-y", "-qq", *missing]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["flock", APT_LOCK, "apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(install, env=env, check=True)


def ensure_python_packages() -> None:
    probe = "import " + ", ".join(PYTHON_MODULES)
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0:
        return
    log("installing the project's [stack] extra")
    target = f"{REPO}[stack]"
    uv = Path(sys.executable).with_name("uv")
    if uv.exists():
        cmd = [str(uv), "pip", "install", "--quiet", "--python", sys.executable, "-e", target]
    else:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "-e", target]
    subprocess.run(cmd, check=True)


# --- processes ---------------------------------------------------------------------------


def as_postgres_user(cmd: list[str]) -> list[str]:
    """Postgres refuses to run as root: use the Debian package's ``postgres`` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def spawn(state: dict[str, Any], name: str, cmd: list[str], env: dict[str, str]) -> int:
    logs = Path(state["dir"]) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as out:
        process = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped or killed as a whole
            cwd=state["dir"],
        )
    state["pids"][name] = process.pid
    state["commands"][name] = cmd
    save(state)
    return process.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
    return True


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every live process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def family(pid: int) -> set[int]:
    """``pid``'s process group and every descendant (a task process may start a session
    of its own, and must die with its worker all the same)."""
    table = _processes()
    members = {p for p, (_, group) in table.items() if group == pid} | {pid}
    grew = True
    while grew:
        children = {p for p, (parent, _) in table.items() if parent in members} - members
        members |= children
        grew = bool(children)
    return {p for p in members if p in table}


def signal_group(pid: int, sig: int) -> None:
    for member in family(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def group_alive(pgid: int) -> bool:
    """Whether any process of the group, or a descendant, still runs."""
    return bool(family(pgid))


def stop_groups(pids: list[int], grace: float = STOP_GRACE) -> None:
    for pid in pids:
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(group_alive(p) for p in pids):
        for pid in pids:
            alive(pid)  # reap our own children
        time.sleep(0.2)
    for pid in pids:
        if group_alive(pid):
            signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(group_alive(p) for p in pids):
        time.sleep(0.1)


def wait_for(what: str, check: Any, timeout: float, state: dict[str, Any], name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        pid = state["pids"].get(name)
        if pid is not None and not alive(pid):
            break
        time.sleep(0.5)
    tail = ""
    with contextlib.suppress(OSError):
        tail = (Path(state["dir"]) / "logs" / f"{name}.log").read_text()[-3000:]
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s; its log ends:\n{tail}")


# --- state -------------------------------------------------------------------------------


def state_file(directory: Path) -> Path:
    return directory / "stack.json"


def save(state: dict[str, Any]) -> None:
    path = state_file(Path(state["dir"]))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def load(directory: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(state_file(directory).read_text()))
    except FileNotFoundError:
        sys.exit(f"stack: no stack in {directory} (run `up` first)")


# --- the components ----------------------------------------------------------------------


def start_postgres(state: dict[str, Any]) -> None:
    bin_dir = postgres_bin()
    assert bin_dir is not None
    data = Path(tempfile.mkdtemp(prefix="stack-pg-"))
    state["postgres_dir"] = str(data)
    save(state)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = state["ports"]["postgres"]
    subprocess.run(
        as_postgres_user(
            [str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "airflow", "-A", "trust"]
        ),
        check=True,
        capture_output=True,
    )
    log_file = data / "postgres.log"
    # fsync off: a throwaway cluster (the data goes with `down`).
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = ["-o", options, "-l", str(log_file), "-w", "-t", "60", "start"]
    subprocess.run(
        as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data / "db"), *start]),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", "airflow"],
        check=True,
        capture_output=True,
    )
    log(f"postgres on 127.0.0.1:{port} ({data})")


def stop_postgres(state: dict[str, Any]) -> None:
    data = state.get("postgres_dir")
    bin_dir = postgres_bin()
    if not data or not Path(data, "db").exists() or bin_dir is None:
        return
    subprocess.run(
        as_postgres_user(
            [str(bin_dir / "pg_ctl"), "-D", f"{data}/db", "-m", "fast", "-w", "-t", "30", "stop"]
        ),
        check=False,
        capture_output=True,
    )
    shutil.rmtree(data, ignore_errors=True)


def start_redis(state: dict[str, Any]) -> None:
    port = state["ports"]["redis"]
    spawn(
        state,
        "redis",
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        dict(os.environ),
    )

    def ping() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    wait_for("redis", ping, 30, state, "redis")
    log(f"redis on 127.0.0.1:{port}")


AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def airflow_command(state: dict[str, Any], name: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, **state["env"]}
    airflow = [sys.executable, "-m", "airflow"]
    if name == "api-server":
        port = str(state["ports"]["api"])
        return [*airflow, "api-server", "-H", "127.0.0.1", "-p", port, "-w", "1"], env
    # The log servers of workers and triggerer bind every interface (Airflow hard-codes
    # the host): skip them. All components share this machine's AIRFLOW_HOME/logs, which
    # the API server reads directly.
    if name.startswith("worker-"):
        concurrency = str(state["worker_concurrency"])
        return [
            *airflow,
            "celery",
            "worker",
            "--celery-hostname",
            f"{name}@%h",
            "--concurrency",
            concurrency,
            "--without-gossip",
            "--without-mingle",
            "--skip-serve-logs",
        ], env
    if name in ("triggerer", "scheduler"):
        return [*airflow, name, "--skip-serve-logs"], env
    return [*airflow, name], env


def start_component(state: dict[str, Any], name: str) -> int:
    cmd, env = airflow_command(state, name)
    return spawn(state, name, cmd, env)


def api_health(state: dict[str, Any]) -> dict[str, Any]:
    url = f"http://127.0.0.1:{state['ports']['api']}/api/v2/monitor/health"
    with urllib.request.urlopen(url, timeout=5) as answer:
        return dict(json.loads(answer.read()))


def healthy(state: dict[str, Any], *parts: str) -> bool:
    health = api_health(state)
    return all(health.get(part, {}).get("status") == "healthy" for part in parts)


def worker_ready(state: dict[str, Any], name: str) -> bool:
    text = (Path(state["dir"]) / "logs" / f"{name}.log").read_text(errors="replace")
    return " ready." in text


def up(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(args.dir).resolve()
    if state_file(directory).exists():
        sys.exit(f"stack: a stack already runs in {directory} (run `down` first)")
    ensure_debian_packages()
    ensure_python_packages()
    directory.mkdir(parents=True, exist_ok=True)
    home = directory / "airflow"
    home.mkdir(exist_ok=True)
    workers = [f"worker-{i}" for i in range(1, args.workers + 1)]
    ports = {name: free_port() for name in ("postgres", "redis", "api")}
    db = f"airflow@127.0.0.1:{ports['postgres']}/airflow"
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{db}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(args.dags).resolve()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{ports['api']}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{ports['api']}",
        # Every component signs or checks the execution API's tokens with this one secret.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "PYTHONUNBUFFERED": "1",
    }
    for item in args.set or []:
        key, _, value = item.partition("=")
        env[key] = value
    state: dict[str, Any] = {
        "dir": str(directory),
        "ports": ports,
        "pids": {},
        "commands": {},
        "env": env,
        "workers": workers,
        "worker_concurrency": args.worker_concurrency,
        "started": time.time(),
    }
    save(state)
    try:
        start_postgres(state)
        start_redis(state)
        log("airflow db migrate")
        migrate = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
        if migrate.returncode != 0:
            raise RuntimeError(
                f"airflow db migrate failed:\n{migrate.stdout[-2000:]}{migrate.stderr[-3000:]}"
            )
        log("starting the API server, scheduler, DAG processor, triggerer and workers")
        start_component(state, "api-server")
        wait_for("the API server", lambda: api_health(state), 180, state, "api-server")
        for name in ("scheduler", "dag-processor", "triggerer", *workers):
            start_component(state, name)
        wait_for(
            "scheduler, DAG processor and triggerer",
            lambda: healthy(state, "metadatabase", "scheduler", "triggerer", "dag_processor"),
            180,
            state,
            "scheduler",
        )
        for name in workers:
            wait_for(name, lambda n=name: worker_ready(state, n), 180, state, name)
    except BaseException:
        log(f"start-up failed; tearing down (logs kept in {directory / 'logs'})")
        down_state(state, keep_logs=True)
        raise
    log(f"up: API server http://127.0.0.1:{ports['api']}, {len(workers)} Celery workers")
    return state


def down_state(state: dict[str, Any], *, keep_logs: bool = False) -> None:
    pids = [pid for name, pid in state["pids"].items() if name != "redis"]
    stop_groups(pids)  # Airflow first, while its broker and database still answer
    if "redis" in state["pids"]:
        stop_groups([state["pids"]["redis"]], grace=5)
    stop_postgres(state)
    if keep_logs:
        for child in Path(state["dir"]).iterdir():
            if child.name != "logs":
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
        log("down: every process stopped; only the logs are left")
        return
    shutil.rmtree(state["dir"], ignore_errors=True)
    log("down: every process stopped, every file removed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "env", "kill", "restart"])
    parser.add_argument("name", nargs="?", help="kill/restart: the component (e.g. worker-1)")
    parser.add_argument("--dir", default=str(DEFAULT_DIR), help="state directory (.stack)")
    parser.add_argument("--dags", default=str(REPO / "dags_examples"), help="DAGs folder")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (2)")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="slots per worker")
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="extra environment (AIRFLOW__...)"
    )
    args = parser.parse_args(argv)
    directory = Path(args.dir).resolve()
    if args.command == "up":
        state = up(args)
        print(json.dumps({"dir": state["dir"], "ports": state["ports"], "pids": state["pids"]}))
        return 0
    state = load(directory)
    if args.command == "down":
        down_state(state)
    elif args.command == "status":
        status = {name: alive(pid) for name, pid in state["pids"].items()}
        print(json.dumps({"ports": state["ports"], "running": status}, indent=1))
    elif args.command == "env":
        for key, value in state["env"].items():
            print(f"export {key}={json.dumps(value)}")
    elif args.command in ("kill", "restart"):
        if args.name not in state["pids"]:
            sys.exit(f"stack: no component {args.name!r}; have {sorted(state['pids'])}")
        if args.command == "kill":
            signal_group(state["pids"][args.name], signal.SIGKILL)
            log(f"{args.name} killed (SIGKILL to its process group)")
        else:
            stop_groups([state["pids"][args.name]])
            start_component(state, args.name)
            log(f"{args.name} restarted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
