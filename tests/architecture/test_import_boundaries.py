"""The import boundaries the design depends on, checked on the source (AST), not by hope.

- ``core`` is framework-free: it imports no Airflow and none of the adapters.
- The sandbox shares no code with the client (it must not agree with it by accident): it
  imports nothing of ``airflow_provider_backendauth`` and no Airflow.
- Adapters (hooks, operators, triggers, cli) use core's public names only (no ``_private``
  names reached across the boundary).
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "airflow_provider_backendauth"
SANDBOX = ROOT / "backendauth_sandbox"
ADAPTERS = ("hooks", "operators", "triggers", "cli", "_compat")


def imports(path: pathlib.Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, imported names) for every import in ``path``, nested ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, [a.name for a in node.names]


def sources(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(folder.rglob("*.py"))


def is_airflow(module: str) -> bool:
    return module == "airflow" or module.startswith("airflow.")


def test_the_trees_exist() -> None:
    assert len(sources(PACKAGE / "core")) > 10 and len(sources(SANDBOX)) > 10


@pytest.mark.parametrize("path", sources(PACKAGE / "core"), ids=lambda p: p.name)
def test_core_imports_no_airflow_and_no_adapter(path: pathlib.Path) -> None:
    adapters = tuple(f"airflow_provider_backendauth.{name}" for name in ADAPTERS)
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for line, module, _ in imports(path)
        if is_airflow(module) or module.startswith(adapters) or module == "backendauth_sandbox"
    ]
    assert not bad, bad


@pytest.mark.parametrize("path", sources(SANDBOX), ids=lambda p: p.name)
def test_sandbox_shares_no_code_with_the_client(path: pathlib.Path) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for line, module, _ in imports(path)
        if module.startswith("airflow_provider_backendauth") or is_airflow(module)
    ]
    assert not bad, bad


def adapter_sources() -> list[pathlib.Path]:
    found = []
    for name in ADAPTERS:
        target = PACKAGE / name
        found += sources(target) if target.is_dir() else [target.with_suffix(".py")]
    return [p for p in found if p.exists()]


@pytest.mark.parametrize("path", adapter_sources(), ids=lambda p: p.stem)
def test_adapters_use_core_public_names_only(path: pathlib.Path) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line} takes {name} from {module}"
        for line, module, names in imports(path)
        if module.startswith("airflow_provider_backendauth.core")
        for name in names
        if name.startswith("_")
    ]
    assert not bad, bad


def test_the_checks_see_a_violation(tmp_path: pathlib.Path) -> None:
    """The AST walk finds imports nested in functions, where this project puts them."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from airflow.sdk import BaseHook\n    import airflow\n")
    assert [m for _, m, _ in imports(probe)] == ["airflow.sdk", "airflow"]


def test_the_download_path_imports_no_key_machinery() -> None:
    """A process that only downloads export files (a mapped download task, the benchmark's
    fresh process) pays for every module it imports at start-up: cryptography alone cost
    about 70 ms of a 0.2 s start. Signing lives behind the token client, not the downloader."""
    code = (
        "import sys; "
        "import airflow_provider_backendauth.core.bulk.download, "
        "airflow_provider_backendauth.core.http.authorized, "
        "airflow_provider_backendauth.core.auth.tokens; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cryptography', 'jwt') "
        "or m == 'airflow_provider_backendauth.core.auth.keys'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("path", sources(PACKAGE / "core" / "views"), ids=lambda p: p.name)
def test_view_runner_imports_no_table_library(path: pathlib.Path) -> None:
    """The ViewDefinition runner yields plain dicts; Arrow/Parquet/Delta stay in the layer above."""
    heavy = ("pyarrow", "deltalake", "duckdb", "pandas", "polars")
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for line, module, _ in imports(path)
        if module.split(".")[0] in heavy
    ]
    assert not bad, bad
