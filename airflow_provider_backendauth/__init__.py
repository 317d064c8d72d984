"""Apache Airflow provider for APIs secured by signed-JWT client assertions.

Importing this package must stay cheap: Airflow imports it while parsing DAGs and listing
providers. Heavy modules (pyjwt, cryptography, requests) load only where they are used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata for Airflow (entry point ``apache_airflow_provider``)."""
    import copy

    from airflow_provider_backendauth.provider_info import PROVIDER_INFO

    # A copy: Airflow's ProvidersManager adds keys to the dict it receives.
    info = copy.deepcopy(PROVIDER_INFO)
    if not _reads_provider_cli():
        # Airflow 3.1 has no provider CLI commands and its provider.yaml schema refuses the
        # key: leave it out there (`backendauth ...` works on every version).
        info.pop("cli", None)
    return info


def _reads_provider_cli() -> bool:
    """Whether the installed Airflow registers provider CLI commands (3.2+)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(part) for part in version("apache-airflow-core").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return True
    return (major, minor) >= (3, 2)
