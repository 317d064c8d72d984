"""Entry point for ``python -m backendauth_sandbox``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
