"""docs/key-rotation.md runs as written: its ``# rotation:`` blocks, in order, against the
sandbox (the vendor) and a local web server (the JWKS URL), with one rewrite: the bucket and
URL of the guide become a served directory and its URL. Between the steps the test plays the
vendor: after "make" it knows both keys (as if it had fetched the published set), and it
checks what each step promises (both kids published; no warning once published; the old kid
gone after "retire")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import served_directory

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "key-rotation.md"
BIN = Path(sys.executable).parent
BUCKET = "s3://aws_default@my-keys/jwks.json"
URL = "https://keys.example.org/jwks.json"
_BLOCK = re.compile(r"^```bash\n# rotation: (\w[\w-]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks() -> dict[str, str]:
    found = dict(_BLOCK.findall(GUIDE.read_text(encoding="utf-8")))
    assert list(found) == ["make", "publish", "check-new", "retire"], list(found)
    return found


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    with served_directory(root) as url:
        yield root, f"{url}/jwks.json"


def test_the_guide_names_its_steps_in_order():
    blocks()


@pytest.mark.e2e
def test_the_rotation_guide_runs_and_each_check_holds(sandbox, tmp_path, served):
    root, jwks_url = served
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN")}
    env["PATH"] = f"{BIN}:{env['PATH']}"

    def sh(code: str) -> str:
        code = code.replace(BUCKET, str(root / "jwks.json")).replace(URL, jwks_url)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    # Before the guide: the old key, published, registered, used by the connection.
    sh("backendauth keygen --profile smart --out keys-2026 --json > /dev/null")
    sh(f"backendauth jwks publish keys-2026/private_key.pem --to {root / 'jwks.json'}")
    old = json.loads((tmp_path / "keys-2026" / "jwks.json").read_text())["keys"][0]
    env["AIRFLOW_CONN_BACKENDAUTH_FHIR"] = json.dumps(
        {
            "conn_type": "backendauth",
            "host": sandbox.fhir_base,
            "login": "rotating-client",
            "extra": {
                "profile": "smart",
                "key_file": str(tmp_path / "keys-2026" / "private_key.pem"),
                "jku": jwks_url,
            },
        }
    )
    steps = blocks()

    sh(steps["make"])
    new = json.loads((tmp_path / "keys-2027" / "jwks.json").read_text())["keys"][0]
    # The vendor, having fetched the published set, knows both keys.
    sandbox.register_client("rotating-client", {"keys": [old, new]}, jku=jwks_url)
    early = sh(steps["check-new"])  # out of order: the kid is not published yet
    assert "OK: " in early and f"WARNING: kid '{new['kid']}'" in early

    published = sh(steps["publish"])
    assert old["kid"] in published and new["kid"] in published  # the curl of the JWKS URL

    checked = sh(steps["check-new"])
    assert checked.startswith("OK: ") and "WARNING" not in checked

    retired = sh(steps["retire"])
    assert "WARNING" not in retired
    assert [k["kid"] for k in json.loads((root / "jwks.json").read_text())["keys"]] == [new["kid"]]
