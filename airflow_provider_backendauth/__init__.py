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
    return copy.deepcopy(PROVIDER_INFO)
