"""Triggers on one event loop share one ``httpx.AsyncClient`` per TLS settings: built once
even when many start together, closed with its last lease, never shared across loops."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from airflow_provider_backendauth.core.http import async_clients
from airflow_provider_backendauth.core.http.async_clients import open_clients, shared_async_client


def test_many_leases_share_one_client_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[httpx.AsyncClient] = []
    real = async_clients.async_client

    def counting(**settings: object) -> httpx.AsyncClient:
        client = real(**settings)  # type: ignore[arg-type]
        built.append(client)
        return client

    monkeypatch.setattr(async_clients, "async_client", counting)

    async def scenario() -> None:
        release = asyncio.Event()
        seen: list[httpx.AsyncClient] = []

        async def trigger(verify: bool) -> None:
            async with shared_async_client(verify=verify, timeout=30) as client:
                seen.append(client)
                await release.wait()

        tasks = [asyncio.create_task(trigger(True)) for _ in range(200)]
        tasks.append(asyncio.create_task(trigger(False)))  # other TLS settings: its own
        while len(seen) < len(tasks):
            await asyncio.sleep(0)
        assert len(built) == 2 and {id(c) for c in seen} == {id(c) for c in built}
        assert open_clients() == 2
        release.set()
        await asyncio.gather(*tasks)
        assert open_clients() == 0 and all(c.is_closed for c in built)  # closed with the last

    asyncio.run(scenario())


def test_a_cancelled_builder_leaves_the_client_to_a_waiter() -> None:
    async def scenario() -> None:
        first = asyncio.create_task(_lease_once())
        await asyncio.sleep(0)  # the first lease is building the client (in a thread)
        second = asyncio.create_task(_lease_once())
        await asyncio.sleep(0)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        assert await second is False  # it built a client of its own and got it open
        assert open_clients() == 0

    asyncio.run(scenario())


async def _lease_once() -> bool:
    async with shared_async_client(verify=True, timeout=5) as client:
        return client.is_closed
