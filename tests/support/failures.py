"""Assertions about how a task ends."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from airflow_provider_backendauth._compat import AirflowFailException


@contextmanager
def fails_for_good(cause: type[BaseException], match: str) -> Iterator[None]:
    """The block ends the task without a retry (``AirflowFailException``), caused by a
    ``cause`` whose message matches ``match``."""
    with pytest.raises(AirflowFailException) as info:
        yield
    assert isinstance(info.value.__cause__, cause), repr(info.value.__cause__)
    assert re.search(match, str(info.value.__cause__)), str(info.value.__cause__)
    assert re.search(match, str(info.value))
