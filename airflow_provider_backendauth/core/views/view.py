"""A SQL-on-FHIR v2 ViewDefinition checked and compiled once, then run over resources.

``compile_view(view)`` validates the whole view before any row: its structure, column names
(unique, ``^[A-Za-z][A-Za-z0-9_]*$``), ``unionAll`` branches with the same columns in the
same order, constants (exactly one ``value[x]``), and every FHIRPath expression (syntax,
functions, arity, ``%constants``). Every problem is a ``ViewDefinitionError`` naming where
it is (``select[1].column[0] 'family'``) and what is wrong.

Running follows the spec's algorithm: a select's rows are the cross product of its own
columns, each nested ``select`` and the concatenated ``unionAll`` branches, once per item of
its ``forEach``/``forEachOrNull``/``repeat`` (``forEachOrNull`` on nothing gives one row of
nulls). Rows come out per resource in document order. Values are the resource's own JSON
values: decimals stay ``Decimal`` when the NDJSON was parsed with
``json.loads(line, parse_float=decimal.Decimal)`` (what the provider's readers do, so no
float loss), and computed decimals (``/``, boundaries) are always ``Decimal``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from airflow_provider_backendauth.core.errors import MalformedResourceError, ViewDefinitionError
from airflow_provider_backendauth.core.views.columns import Getter, column_getter
from airflow_provider_backendauth.core.views.constants import NAME, view_constants
from airflow_provider_backendauth.core.views.fhirpath.compile import compile_path
from airflow_provider_backendauth.core.views.fhirpath.lexer import FhirPathError
from airflow_provider_backendauth.core.views.fhirpath.runtime import (
    Compiled,
    Env,
    FhirPathEvalError,
    Fn,
)

_SELECT_KEYS = frozenset({"column", "select", "forEach", "forEachOrNull", "repeat", "unionAll"})
_COLUMN_KEYS = frozenset({"name", "path", "type", "collection", "description", "tag"})
_FHIR_TYPE_URI = "http://hl7.org/fhir/StructureDefinition/"


@dataclass(frozen=True)
class Column:
    """One output column: its name, FHIR type (declared, else inferred, else None), whether
    it is a list, its description, and its tags (``(("ansi/type", "DATE"),)``) in order."""

    name: str
    type: str | None
    collection: bool
    description: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


class _Select:
    """One compiled ``select`` element (the view itself is the outermost one)."""

    def __init__(
        self,
        getters: list[Getter],
        selects: list[_Select],
        union: list[_Select],
        iterate: list[Fn] | None,
        mode: str | None,
        width: int,
    ) -> None:
        self.getters = getters
        self.selects = selects
        self.union = union
        self.iterate = iterate
        self.mode = mode  # None, forEach, forEachOrNull, repeat
        self.padding: tuple[Any, ...] = (None,) * (width - len(getters))
        self.leaf = not selects and not union

    def rows(self, item: Any, env: Env) -> list[tuple[Any, ...]]:
        if self.iterate is None:
            return self._rows_for(item, env)
        items = self._repeat(item, env) if self.mode == "repeat" else self.iterate[0]([item], env)
        if not items:
            return [self._null_row(env)] if self.mode == "forEachOrNull" else []
        out: list[tuple[Any, ...]] = []
        saved = env.row_index
        for index, each in enumerate(items):
            env.row_index = index
            out.extend(self._rows_for(each, env))
        env.row_index = saved
        return out

    def _repeat(self, item: Any, env: Env) -> list[Any]:
        # Depth first, pre-order: each node reached, then what the repeat paths reach from it.
        assert self.iterate is not None
        paths, out = self.iterate, []

        def visit(node: Any) -> None:
            for path in paths:
                for child in path([node], env):
                    out.append(child)
                    visit(child)

        visit(item)
        return out

    def _null_row(self, env: Env) -> tuple[Any, ...]:
        # forEachOrNull over nothing: one row; its own columns see an empty focus (so
        # %rowIndex is still 0 and literals still show), nested columns are null.
        saved, env.row_index = env.row_index, 0
        row = self._values([], env) + self.padding
        env.row_index = saved
        return row

    def _rows_for(self, item: Any, env: Env) -> list[tuple[Any, ...]]:
        if self.leaf:
            return [self._values([item], env)]
        selects = self.selects
        if self.getters:
            rows = [self._values([item], env)]
        elif selects:  # the view itself, or a select only grouping others: no product with ()
            rows, selects = selects[0].rows(item, env), selects[1:]
        else:
            rows = [()]
        for select in selects:
            if not rows:
                return rows
            rows = _product(rows, select.rows(item, env))
        if self.union:
            branches: list[tuple[Any, ...]] = []
            for select in self.union:
                branches.extend(select.rows(item, env))
            rows = _product(rows, branches)
        return rows

    def _values(self, focus: list[Any], env: Env) -> tuple[Any, ...]:
        return tuple([get(focus, env) for get in self.getters])


def _product(left: list[tuple[Any, ...]], right: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [a + b for a in left for b in right]


def _located(where: str, path: str, exc: Exception) -> ViewDefinitionError:
    return ViewDefinitionError(f"{where}: path {path!r}: {exc}")


class _Builder:
    """Validates the view's JSON and builds the compiled select tree."""

    def __init__(self, constant_types: dict[str, str | None]) -> None:
        self.constant_types = constant_types
        self.names: set[str] = set()

    def path(self, where: str, text: Any) -> Fn:
        """A forEach / repeat / where path whose evaluation errors say where they are."""
        fn = self.compiled(where, text).fn

        def located(focus: list[Any], env: Env) -> list[Any]:
            try:
                return fn(focus, env)
            except FhirPathEvalError as exc:
                raise _located(where, text, exc) from exc

        return located

    def compiled(self, where: str, text: Any) -> Compiled:
        if not isinstance(text, str) or not text.strip():
            raise ViewDefinitionError(f"{where}: a path must be a non-empty FHIRPath string")
        try:
            result = compile_path(text, self.constant_types)
        except FhirPathError as exc:
            raise _located(where, text, exc) from exc
        return result

    def select(self, where: str, spec: Any) -> tuple[_Select, list[Column]]:
        if not isinstance(spec, dict):
            raise ViewDefinitionError(f"{where}: must be an object")
        unknown = set(spec) - _SELECT_KEYS
        if unknown:
            raise ViewDefinitionError(f"{where}: unknown key(s) {sorted(unknown)}")
        modes = [m for m in ("forEach", "forEachOrNull", "repeat") if m in spec]
        if len(modes) > 1:
            raise ViewDefinitionError(f"{where}: {' and '.join(modes)} cannot be combined")
        mode = modes[0] if modes else None
        iterate: list[Fn] | None = None
        if mode == "repeat":
            paths = spec["repeat"]
            if not isinstance(paths, list) or not paths:
                raise ViewDefinitionError(f"{where}.repeat: must be a non-empty list of paths")
            iterate = [self.path(f"{where}.repeat[{i}]", p) for i, p in enumerate(paths)]
        elif mode is not None:
            iterate = [self.path(f"{where}.{mode}", spec[mode])]

        columns: list[Column] = []
        getters: list[Getter] = []
        for i, col in enumerate(self._list(spec, "column", where)):
            getter, column = self.column(f"{where}.column[{i}]", col)
            getters.append(getter)
            columns.append(column)
        selects = []
        for i, sub in enumerate(self._list(spec, "select", where)):
            compiled, sub_columns = self.select(f"{where}.select[{i}]", sub)
            selects.append(compiled)
            columns.extend(sub_columns)
        union = []
        union_columns: list[Column] | None = None
        for i, branch in enumerate(self._list(spec, "unionAll", where)):
            branch_where = f"{where}.unionAll[{i}]"
            outer = self.names
            self.names = set()  # each branch repeats the same names
            compiled, branch_columns = self.select(branch_where, branch)
            self.names = outer
            names = [c.name for c in branch_columns]
            if union_columns is None:
                union_columns = branch_columns
            elif names != [c.name for c in union_columns]:
                raise ViewDefinitionError(
                    f"{branch_where}: unionAll branches must have the same columns in the same "
                    f"order; got {names}, the first branch has {[c.name for c in union_columns]}"
                )
            else:
                for first, other in zip(union_columns, branch_columns, strict=True):
                    if first.type and other.type and first.type != other.type:
                        raise ViewDefinitionError(
                            f"{branch_where}: column {other.name!r} is {other.type}, but "
                            f"{first.type} in the first branch (unionAll branches share types)"
                        )
            union.append(compiled)
        if union_columns:
            for column in union_columns:
                self.claim(f"{where}.unionAll", column.name)
            columns.extend(union_columns)
        return _Select(getters, selects, union, iterate, mode, len(columns)), columns

    def column(self, where: str, col: Any) -> tuple[Getter, Column]:
        if not isinstance(col, dict):
            raise ViewDefinitionError(f"{where}: must be an object")
        unknown = set(col) - _COLUMN_KEYS
        if unknown:
            raise ViewDefinitionError(f"{where}: unknown key(s) {sorted(unknown)}")
        name = col.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise ViewDefinitionError(
                f"{where}: 'name' must match ^[A-Za-z][A-Za-z0-9_]*$ (got {name!r})"
            )
        where = f"{where} {name!r}"
        self.claim(where, name)
        collection = col.get("collection", False)
        declared = col.get("type")
        if isinstance(declared, str) and declared.startswith(_FHIR_TYPE_URI):
            declared = declared[len(_FHIR_TYPE_URI) :]  # the spec's canonical form of a type
        if not isinstance(collection, bool):
            raise ViewDefinitionError(f"{where}: 'collection' must be true or false")
        if declared is not None and (not isinstance(declared, str) or not declared):
            raise ViewDefinitionError(f"{where}: 'type' must be a FHIR type name")
        description = col.get("description")
        tags = col.get("tag", [])
        if not isinstance(tags, list) or not all(
            isinstance(t, dict)
            and isinstance(t.get("name"), str)
            and isinstance(t.get("value"), str)
            for t in tags
        ):
            raise ViewDefinitionError(f"{where}: 'tag' must be a list of {{name, value}} strings")
        compiled = self.compiled(where, col.get("path"))
        pairs = tuple((t["name"], t["value"]) for t in tags)
        column = Column(name, declared or compiled.type, collection, description, pairs)
        return column_getter(where, col["path"], compiled, collection), column

    def claim(self, where: str, name: str) -> None:
        if name in self.names:
            raise ViewDefinitionError(f"{where}: column name {name!r} is used twice")
        self.names.add(name)

    @staticmethod
    def _list(spec: dict[str, Any], key: str, where: str) -> list[Any]:
        value = spec.get(key, [])
        if not isinstance(value, list):
            raise ViewDefinitionError(f"{where}.{key}: must be a list")
        return value


class CompiledView:
    """A validated view: its resource type, output columns, and ``run(resources)``."""

    def __init__(self, view: Any) -> None:
        if not isinstance(view, dict):
            raise ViewDefinitionError("a ViewDefinition must be a JSON object")
        resource = view.get("resource")
        if not isinstance(resource, str) or not NAME.match(resource):
            raise ViewDefinitionError("'resource' must name a FHIR resource type, e.g. Patient")
        self.resource: str = resource
        name = view.get("name")
        if name is not None and (not isinstance(name, str) or not NAME.match(name)):
            raise ViewDefinitionError(
                f"'name' must match ^[A-Za-z][A-Za-z0-9_]*$ (it names tables), got {name!r}"
            )
        if "select" not in view:
            raise ViewDefinitionError("'select' is missing: a view needs at least one select")
        self.constants, constant_types = view_constants(view)
        builder = _Builder(constant_types)
        top = {"select": view["select"]}
        self._root, columns = builder.select("view", top)
        if not columns:
            raise ViewDefinitionError("the view defines no columns")
        self.columns: list[Column] = columns
        wheres = view.get("where", [])
        if not isinstance(wheres, list):
            raise ViewDefinitionError("where: must be a list")
        self._where: list[tuple[str, Fn]] = []
        for i, clause in enumerate(wheres):
            if not isinstance(clause, dict):
                raise ViewDefinitionError(f"where[{i}]: must be an object with a 'path'")
            path = clause.get("path")
            self._where.append((str(path), builder.path(f"where[{i}]", path)))

    def _kept(self, resource: dict[str, Any], env: Env) -> bool:
        for path, fn in self._where:
            result = fn([resource], env)
            if not result:
                return False
            if len(result) > 1 or result[0].__class__ is not bool:
                raise ViewDefinitionError(
                    f"where: path {path!r} must give a boolean, got "
                    + (f"{len(result)} values" if len(result) > 1 else type(result[0]).__name__)
                )
            if not result[0]:
                return False
        return True

    def run(self, resources: Iterable[Any]) -> Iterator[dict[str, Any]]:
        """One dict per row (keys in column order); resources of other types are skipped."""
        names = [c.name for c in self.columns]
        for _, rows in self.run_by_resource(resources):
            for row in rows:
                yield dict(zip(names, row, strict=False))

    def run_tuples(self, resources: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
        """The same rows as ``run``, each a tuple in column order (no dict per row)."""
        for _, rows in self.run_by_resource(resources):
            yield from rows

    def run_by_resource(
        self, resources: Iterable[Any]
    ) -> Iterator[tuple[dict[str, Any], list[tuple[Any, ...]]]]:
        """Each resource of the view's type, with its rows as tuples in column order.

        A resource the view's ``where`` drops, or that yields no row, comes with an empty
        list: a writer replacing a resource's old rows by its new ones (incremental tables)
        learns about every resource in one pass. Resources of other types are skipped.
        """
        resource_type, root, constants = self.resource, self._root, self.constants
        for position, resource in enumerate(resources):
            if resource.__class__ is not dict:
                raise MalformedResourceError(
                    f"input #{position} is not a FHIR resource (a JSON object); "
                    f"got {type(resource).__name__}"
                )
            kind = resource.get("resourceType")
            if kind != resource_type:
                if not isinstance(kind, str):
                    raise MalformedResourceError(
                        f"input #{position} has no resourceType (or it is not a string)"
                    )
                continue
            env = Env(resource, constants)
            try:
                if self._where and not self._kept(resource, env):
                    yield resource, []
                    continue
                rows = root.rows(resource, env)
            except ViewDefinitionError as exc:
                raise ViewDefinitionError(f"{resource_type} input #{position}: {exc}") from exc
            except (TypeError, ValueError, ArithmeticError, RecursionError, LookupError) as exc:
                # A resource shaped against FHIR (or nested beyond reason) the evaluator did
                # not foresee: say which input, never its content (the exception's text may
                # quote values, so it is not chained either).
                raise MalformedResourceError(
                    f"{resource_type} input #{position}: the view cannot be evaluated on this "
                    f"resource ({type(exc).__name__}); check that it is valid FHIR JSON"
                ) from None
            yield resource, rows


def compile_view(view: Any) -> CompiledView:
    """Validate ``view`` and compile its paths once; raises ``ViewDefinitionError``."""
    try:
        return CompiledView(view)
    except RecursionError:  # the parser and the select tree recurse: refuse, don't crash
        raise ViewDefinitionError(
            "the view is nested too deeply (its selects or a path's parentheses)"
        ) from None


def run_view(view: Any, resources: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """``compile_view(view).run(resources)``; the view is checked before any row."""
    return compile_view(view).run(resources)
