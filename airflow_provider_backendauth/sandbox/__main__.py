"""Entry point for ``python -m airflow_provider_backendauth.sandbox``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
