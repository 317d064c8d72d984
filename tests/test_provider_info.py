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
PACKAGE = "airflow-provider-backendauth"


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


def test_profiles_have_readable_names_with_their_effective_values():
    (conn,) = get_provider_info()["connection-types"]
    display = conn["conn-fields"]["profile"]["schema"]["values_display"]
    assert set(display) == set(PROFILES)
    assert display["nhs_england"].startswith("NHS England")
    assert "https://api.service.nhs.uk/oauth2/token" in display["nhs_england"]
    assert "RS512" in display["nhs_england"]
    assert display["oracle_health"].startswith("Oracle Health - token URL discovered")
    assert "scope system/*.rs" in display["smart"]
    assert not any("_" in label.split(" - ")[0] for label in display.values())


def test_field_help_names_each_profiles_default():
    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    token_help = fields["auth_url"]["description"]
    for profile in PROFILES.values():
        assert (profile.token_url or "discovered") in token_help
    assert "Epic, Oracle Health: system/*.read" in fields["scope"]["description"]
    assert "NHS England APIs: RS512" in fields["algorithm"]["description"]


def test_text_fields_show_an_example():
    """Placeholders reach only the standard fields; extras get examples (a suggestion list)
    or an "e.g." in their help."""
    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    for name, field in fields.items():
        schema = field["schema"]
        if (
            schema["type"] != ["string", "null"]
            or "enum" in schema
            or schema.get("format") == "password"
        ):
            continue
        assert "examples" in schema or "e.g." in field["description"], name


def test_description_survives_airflows_cleanup():
    """The Providers page and `airflow providers get` show the description through Airflow's
    _remove_rst_syntax, which deletes every ` _ < >: "RFC 7523 private_key_jwt" came out as
    "privatekeyjwt". The description must come through that unchanged."""
    try:
        from airflow.api_fastapi.core_api.services.public.providers import _remove_rst_syntax
    except ImportError:
        from airflow.cli.commands.provider_command import _remove_rst_syntax

    description = get_provider_info()["description"]
    assert "RFC 7523 private-key JWT" in description
    assert _remove_rst_syntax(description) == description.rstrip(".")


def test_the_plugin_is_registered_as_an_entry_point():
    """Airflow loads entry-point plugins always, provider-info plugins only when providers are
    discovered eagerly (lazy_discover_providers = False, not the default)."""
    from airflow.plugins_manager import AirflowPlugin

    (ep,) = [ep for ep in entry_points(group="airflow.plugins") if ep.name == "backendauth"]
    cls = ep.load()
    assert issubclass(cls, AirflowPlugin) and cls.name == "backendauth"
    assert cls.fastapi_root_middlewares[0]["middleware"].__name__ == "ConnectionTestPortMiddleware"
    assert "plugins" not in get_provider_info()  # it would be registered twice


def test_secret_extras_are_masked_by_name():
    """And only they (tests/core/auth/test_settings_extra_names.py checks every extra)."""
    try:
        from airflow.sdk._shared.secrets_masker import should_hide_value_for_key
    except ImportError:
        from airflow.sdk.execution_time.secrets_masker import should_hide_value_for_key

    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    masked = {name for name in fields if should_hide_value_for_key(name)}
    assert masked == {"private_key_passphrase"}


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
        "('jwt', 'cryptography', 'tenacity', 'jwcrypto', 'httpx', 'aiohttp', 'fsspec')); "
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
    provider = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "get", "--full", "-o", "json", PACKAGE],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "RFC 7523 private-key JWT client authentication" in provider.stdout
