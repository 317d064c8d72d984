"""Provider registration: schema-valid metadata, the connection form, cheap imports."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema
import pytest

from airflow_provider_backendauth import get_provider_info
from airflow_provider_backendauth.core.auth.profiles import PROFILES

SCHEMAS = Path(airflow.__file__).parent


def test_entry_point_is_registered():
    eps = [ep for ep in entry_points(group="apache_airflow_provider") if ep.name == "provider_info"]
    assert any(ep.value == "airflow_provider_backendauth:get_provider_info" for ep in eps)


def test_valid_against_runtime_schema():
    schema = json.loads((SCHEMAS / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_valid_against_provider_yaml_schema_including_the_form():
    """The runtime does not validate conn-fields; the provider.yaml schema does."""
    schema = json.loads((SCHEMAS / "provider.yaml.schema.json").read_text())
    info = copy.deepcopy(get_provider_info())
    info.update({"state": "ready", "source-date-epoch": 1})
    jsonschema.validate(info, schema)
    for name, field in info["connection-types"][0]["conn-fields"].items():
        jsonschema.Draft7Validator.check_schema(field["schema"])
        assert field["label"] and field["description"], name


def test_connection_form():
    (conn,) = get_provider_info()["connection-types"]
    assert conn["connection-type"] == "backendauth"
    behaviour = conn["ui-field-behaviour"]
    assert behaviour["relabeling"] == {
        "host": "Base URL",
        "login": "Client ID",
        "password": "Private key (PEM or JWK)",
    }
    fields = conn["conn-fields"]
    assert fields["profile"]["schema"]["enum"] == list(PROFILES)
    assert fields["private_key_passphrase"]["schema"]["format"] == "password"


def test_secret_extras_are_masked_by_name():
    try:
        from airflow.sdk._shared.secrets_masker import should_hide_value_for_key
    except ImportError:
        from airflow.sdk.execution_time.secrets_masker import should_hide_value_for_key

    assert should_hide_value_for_key("private_key_passphrase")


def test_modules_named_in_provider_info_exist():
    import importlib

    info = get_provider_info()
    for section in ("hooks", "operators", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                if importlib.util.find_spec(module) is None:
                    pytest.fail(f"{section}: {module} does not exist")
    hook_path = info["connection-types"][0]["hook-class-name"]
    module, _, cls = hook_path.rpartition(".")
    assert getattr(importlib.import_module(module), cls).conn_type == "backendauth"


def test_importing_the_package_is_cheap():
    """DAG parsing imports the provider: it must add no heavy module beyond Airflow's own."""
    code = (
        "import sys; from airflow.sdk import BaseHook, BaseOperator; before = set(sys.modules); "
        "import airflow_provider_backendauth as p; p.get_provider_info(); "
        "import airflow_provider_backendauth.hooks.backendauth; "
        "import airflow_provider_backendauth.operators.http, airflow_provider_backendauth.operators.fhir; "
        "import airflow_provider_backendauth.operators.bulk; "
        "new = set(sys.modules) - before; "
        "heavy = sorted(m for m in new if m.split('.')[0] in "
        "('jwt', 'cryptography', 'tenacity', 'jwcrypto', 'httpx', 'fsspec')); "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.e2e
def test_airflow_cli_lists_the_provider_and_hook():
    env = os.environ.copy()
    providers = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "-o", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    names = [p["package_name"] for p in json.loads(providers.stdout)]
    assert "airflow-provider-backendauth" in names
    hooks = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "hooks", "-o", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "backendauth" in hooks.stdout
    assert "BackendAuthHook" in hooks.stdout
