"""Airflow names that moved between 3.x releases, imported once from wherever they live.

Supported: Airflow 3.1 and later (tested with 3.1.8 and 3.3.2). Only the adapters (hooks,
operators, triggers) import this; ``core`` never does.
"""

from __future__ import annotations

# ObjectStoragePath: import it from airflow.sdk where needed (every supported version has it;
# importing it here would load fsspec at DAG parse time).
from airflow.sdk import BaseHook, BaseOperator

try:
    from airflow.sdk import conf
except ImportError:  # Airflow < 3.2
    from airflow.configuration import conf  # type: ignore[no-redef,assignment,unused-ignore]

try:
    from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
except ImportError:  # Airflow < 3.2
    from airflow.exceptions import (  # type: ignore[no-redef,attr-defined,unused-ignore]
        AirflowFailException,
        TaskDeferred,
    )

try:
    from airflow.sdk.log import amask_secret, mask_secret
except ImportError:  # Airflow < 3.2: no async variant
    from airflow.sdk.log import mask_secret

    async def amask_secret(secret: str, name: str | None = None) -> None:  # type: ignore[misc]
        mask_secret(secret, name)


__all__ = [
    "AirflowFailException",
    "BaseHook",
    "BaseOperator",
    "TaskDeferred",
    "amask_secret",
    "conf",
    "mask_secret",
]
