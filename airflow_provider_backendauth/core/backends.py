"""Choosing among interchangeable implementations: the fastest one installed, or the one an
environment variable names (to rule a binding out, or to compare them). Used for the gzip
inflaters (``core/bulk/inflaters.py``) and the byte counters (``core/counting.py``).

This module imports no Airflow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class FastestInstalled(Generic[T]):
    """Implementations of one thing, fastest first. A factory raises ImportError when its
    implementation is not installed (or too old)."""

    def __init__(self, kind: str, env: str, factories: Mapping[str, Callable[[], T]]) -> None:
        self.kind = kind
        self.env = env
        self.factories = dict(factories)
        self._auto: str | None = None  # chosen once per process
        # Names whose factory already worked here: asked for again (a search page, a file's
        # line tally), they are not built a second time just to check they import.
        self._usable: set[str] = set()

    def names(self) -> list[str]:
        """The implementations that can be used here, fastest first."""
        names = []
        for name, factory in self.factories.items():
            if name not in self._usable:
                try:
                    factory()
                except ImportError:
                    continue
                self._usable.add(name)
            names.append(name)
        return names

    def choose(self, name: str = "auto") -> tuple[str, Callable[[], T]]:
        """The named implementation's factory and its actual name; ``auto`` is the one the
        environment variable names, else the fastest installed."""
        if name == "auto":
            if self._auto is None:
                self._auto = os.environ.get(self.env) or self.names()[0]
            name = self._auto
        try:
            factory = self.factories[name]
            if name not in self._usable:
                factory()
                self._usable.add(name)
        except KeyError:
            choices = ["auto", *self.factories]
            raise ValueError(f"{self.kind} must be one of {choices}, not {name!r}") from None
        except ImportError as exc:
            raise ValueError(f"the {name!r} {self.kind} is not installed ({exc})") from None
        return name, factory
