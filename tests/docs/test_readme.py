"""The README runs as written: every shell and Python snippet, top to bottom.

The README becomes one bash script (so exports, files and the background sandbox carry from
one snippet to the next, as in a user's terminal) and runs in an empty directory against the
installed provider and the sandbox. Markers on a block's first line (documented in the
README's "How this README is tested"):

- ``# readme: file PATH``: the block is written to PATH (then used by later snippets);
- ``# readme: offline``: vendor URLs; the block runs (it only sets variables) and every
  ``AIRFLOW_CONN_*`` it defines is validated as a connection, without calling the vendor;
- ``# readme: install``: proved by ``test_wheel_builds_checks_and_installs`` instead;
- ``# readme: dry-run``: run with ``make -n`` in the checkout.

The one rewrite: port 8765 becomes a free port, and the script waits for the background
sandbox to listen where a person would wait for its JSON line (and to have stopped after a
``kill``, where a person would see the shell report it).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BIN = Path(sys.executable).parent
README_PORT = "8765"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)
_MARKER = re.compile(r"^# readme: (file|offline|install|dry-run)\b ?(.*)$")


@dataclass(frozen=True)
class Snippet:
    language: str
    code: str
    marker: str | None
    argument: str
    line: int


def snippets(text: str) -> list[Snippet]:
    found = []
    for match in _FENCE.finditer(text):
        language, code = match.group(1), match.group(2)
        if language not in ("bash", "python"):
            continue  # tables of files, CLI synopses: not code
        first = code.splitlines()[0] if code.strip() else ""
        marker = _MARKER.match(first)
        found.append(
            Snippet(
                language,
                code,
                marker.group(1) if marker else None,
                marker.group(2).split(" ", 1)[0] if marker else "",
                text.count("\n", 0, match.start()) + 1,
            )
        )
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_CHECK_CONNECTIONS = """
import json, os, sys
from airflow_provider_backendauth.core.auth.profiles import get_profile
from airflow_provider_backendauth.core.auth.settings import ClientSettings
for name in sys.argv[1:]:
    conn = json.loads(os.environ[name])
    assert conn["conn_type"] == "backendauth", name
    settings = ClientSettings.from_connection_fields(
        host=conn.get("host"), login=conn.get("login"), password=conn.get("password"),
        extra=conn.get("extra"))
    get_profile(settings.profile)
    print("valid connection:", name, settings.profile)
"""

_WAIT_FOR_PORT = """
python - <<'README_WAIT'
import socket, time
deadline = time.monotonic() + 120
while True:
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise SystemExit("the sandbox did not start")
        time.sleep(0.2)
README_WAIT
"""


def build_script(blocks: list[Snippet], port: int) -> str:
    parts = [
        "set -euo pipefail",
        # Whatever happens, stop background jobs (the sandbox) when the script ends.
        "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT",
        f'export PATH={shlex.quote(str(BIN))}:"$PATH"',
    ]
    for block in blocks:
        code = block.code.replace(README_PORT, str(port))
        parts.append(f"echo '--- README line {block.line}' >&2")
        if block.marker in ("install", "dry-run"):
            continue  # proved by their own tests below
        if block.marker == "file":
            path = block.argument
            parts.append(f'mkdir -p "$(dirname {shlex.quote(path)})"')
            parts.append(f"cat > {shlex.quote(path)} <<'README_FILE'\n{code}README_FILE")
            continue
        if block.language == "python":
            parts.append(f"python - <<'README_PY'\n{code}README_PY")
            continue
        parts.append(code)
        if re.search(r"^python -m backendauth_sandbox .*&\s*$", code, re.MULTILINE):
            parts.append(_WAIT_FOR_PORT.format(port=port))
        if re.search(r"^kill %\d", code, re.MULTILINE):
            parts.append("wait || true")  # the stopped sandbox has let go of its port
        if block.marker == "offline":
            names = re.findall(r"^export (AIRFLOW_CONN_\w+)=", code, re.MULTILINE)
            assert names, f"offline block at line {block.line} defines no connection"
            parts.append(f"python - {' '.join(names)} <<'README_PY'\n{_CHECK_CONNECTIONS}README_PY")
    return "\n".join(parts) + "\n"


def test_readme_markers_are_known_and_every_block_is_covered():
    blocks = snippets(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 12
    kinds = {b.marker for b in blocks}
    assert kinds <= {None, "file", "offline", "install", "dry-run"}
    assert {"file", "offline", "install"} <= kinds
    for block in blocks:
        if block.language == "python":
            compile(block.code, f"README.md:{block.line}", "exec")
        else:
            subprocess.run(["bash", "-n"], input=block.code, text=True, check=True)


def test_every_sandbox_the_readme_starts_is_stopped_and_its_section_says_how():
    """A reader who follows only the section that starts a sandbox (the tutorial, say) is told
    how to stop it; the README as a whole stops every one it starts."""
    text = README.read_text(encoding="utf-8")
    started = stopped = 0
    for section in re.split(r"^## ", text, flags=re.MULTILINE):
        starts = sum(
            len(re.findall(r"^python -m backendauth_sandbox .*&\s*$", b.code, re.MULTILINE))
            for b in snippets(section)
        )
        if starts:
            assert "`kill %1`" in section or "kill %1\n" in section, section[:60]
        started += starts
        stopped += sum(
            len(re.findall(r"^kill %\d", b.code, re.MULTILINE)) for b in snippets(section)
        )
    assert started and started == stopped


def test_readme_connection_ids_are_consistent():
    text = README.read_text(encoding="utf-8")
    defined = {m.lower() for m in re.findall(r"AIRFLOW_CONN_(\w+)=", text)}
    used = set(re.findall(r'(?:backendauth_conn_id=|BackendAuthHook\()"(\w+)"', text))
    used |= set(re.findall(r"backendauth (?:check|inspect) (backendauth_\w+)", text))
    assert used, "no connection ids found"
    assert used <= defined, f"used but never defined: {sorted(used - defined)}"
    assert all(conn_id.startswith("backendauth_") for conn_id in defined)
    assert text.count("BackendAuthHook(") == len(re.findall(r"hook = BackendAuthHook\(", text))


@pytest.mark.e2e
@pytest.mark.timeout(1200)  # airflow db migrate + dags test on a busy CI machine
def test_readme_runs_top_to_bottom(tmp_path):
    blocks = snippets(README.read_text(encoding="utf-8"))
    script = build_script(blocks, _free_port())
    (tmp_path / "readme.sh").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["PYTHONWARNINGS"] = "ignore"
    result = subprocess.run(
        ["bash", str(tmp_path / "readme.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    # What the snippets say should happen, happened.
    assert "OK: Token obtained from" in result.stdout
    assert (tmp_path / "keys" / "private_key.pem").stat().st_mode & 0o777 == 0o600
    observations = (tmp_path / "output" / "2024-05-01" / "Observation.ndjson").read_text()
    lines = observations.splitlines()
    assert lines and all(
        json.loads(line)["meta"]["lastUpdated"].startswith("2024-05") for line in lines
    )
    assert "patients" in result.stdout  # the hook snippet printed its count
    assert result.stdout.count("valid connection:") == 5
    assert '"signature": "<elided' in result.stdout  # backendauth inspect


@pytest.mark.e2e
def test_readme_dry_run_blocks_name_real_make_targets():
    for block in snippets(README.read_text(encoding="utf-8")):
        if block.marker != "dry-run":
            continue
        targets = re.findall(r"^make (\w+)", block.code, re.MULTILINE)
        assert targets
        subprocess.run(["make", "-n", *targets], cwd=REPO, check=True, capture_output=True)


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_wheel_builds_checks_and_installs(tmp_path):
    """The README's install lines: `python -m build` makes a wheel and an sdist that
    `twine check` passes, and the wheel installs (without touching this environment) with
    the console script and both packages."""
    (install,) = [b for b in snippets(README.read_text(encoding="utf-8")) if b.marker == "install"]
    assert 'pip install -e ".[sandbox]"' in install.code
    # `python -m build` needs the `build` package, which nothing else installs.
    assert install.code.index("pip install build\n") < install.code.index("python -m build")
    wheel_line = re.search(r'pip install "dist/([^"\[]+)\[sandbox\]"', install.code)
    assert wheel_line is not None
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    wheel = dist / wheel_line.group(1)
    assert wheel.is_file(), sorted(p.name for p in dist.iterdir())
    (sdist,) = dist.glob("*.tar.gz")
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    names = zipfile.ZipFile(wheel).namelist()
    assert "airflow_provider_backendauth/cli/main.py" in names
    assert "backendauth_sandbox/README.md" in names
    assert not [n for n in names if n.startswith("tests/")]
    # Install the wheel alone into a fresh target (its dependencies are this environment's).
    target = tmp_path / "site"
    subprocess.run(
        [str(BIN / "uv"), "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    entry_points = next(target.glob("*.dist-info")) / "entry_points.txt"
    assert "backendauth = airflow_provider_backendauth.cli.main:main" in entry_points.read_text()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import airflow_provider_backendauth.cli.main as m, backendauth_sandbox;"
            "print(m.__file__); raise SystemExit(m.main(['--help']))",
        ],
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(target))
