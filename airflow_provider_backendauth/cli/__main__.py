"""``python -m airflow_provider_backendauth.cli`` (same as the ``backendauth`` script)."""

from __future__ import annotations

import sys

from airflow_provider_backendauth.cli.main import main

sys.exit(main())
