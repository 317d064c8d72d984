"""Fail with an install hint, not a raw ModuleNotFoundError, without the [sandbox] extra."""

from __future__ import annotations

import sys

MISSING_EXTRA_HINT = (
    "The sandbox needs jwcrypto, which comes with the provider's [sandbox] extra: "
    "pip install 'airflow-provider-backendauth[sandbox]' (from a checkout: "
    "pip install -e '.[sandbox]')."
)

try:
    import jwcrypto  # noqa: F401  (every verifying module needs it; check once, here)
except ModuleNotFoundError as exc:
    if exc.name != "jwcrypto":
        raise
    if sys.argv[:1] == ["-m"]:
        # `python -m backendauth_sandbox`: runpy sets argv[0] to "-m" while it imports the
        # package, so this is the command line: one line and exit 2, no traceback.
        print(f"backendauth_sandbox: error: {MISSING_EXTRA_HINT}", file=sys.stderr)
        raise SystemExit(2) from None
    raise ModuleNotFoundError(MISSING_EXTRA_HINT, name="jwcrypto") from None
