"""A local, strict SMART Backend Services auth server + FHIR R4 + Bulk Data server.

For tests, the demo and users' DAG tests. Needs only the ``sandbox`` extra (jwcrypto); it
never imports Airflow or the provider's client code. See README.md in this folder.
"""

from __future__ import annotations

from . import _extra  # noqa: F401 - first: says how to install jwcrypto when missing
from .faults import FaultRule, Faults
from .server import Sandbox
from .settings import SandboxSettings
from .vendor_rules import VENDORS, VendorRules

__all__ = ["VENDORS", "FaultRule", "Faults", "Sandbox", "SandboxSettings", "VendorRules"]
