"""``BulkExportTrigger``: waits for a FHIR Bulk Data export in the triggerer, not a worker.

A multi-day export costs no worker slot: the trigger polls the status URL through the event
loop's shared ``aiohttp`` session (``core/http/aiohttp_driver.py``: connections reused across
the loop's deferred exports), sleeps with ``asyncio.sleep`` (honouring ``Retry-After`` within
the poller's rules, jittered; the first poll spread over the shortest wait, so hundreds of
exports deferred at once do not poll in one burst), reads the connection with the async API,
and runs the (synchronous) token exchange on the connection's own renewal thread
(``core/http/renewal.py``: never the loop's default executor, which every deferred task
shares), so the triggerer's event loop is never blocked and one connection's slow token
endpoint never delays another's polls. A 401 renews the token and retries. The meaning of
each status answer comes from the same sans-IO ``interpret_status`` the non-deferrable path
uses.

Event payloads (the operator's ``execute_complete`` receives them)::

    {"status": "complete", "status_url": ..., "manifest": {...} or None, "expires": ...,
     "progress": ...}
    {"status": "error" or "timeout", "status_url": ..., "error_type": ..., "message": ...,
     "status_code": ..., "diagnostics": ..., "retryable": ..., "progress": ...}

The manifest is included only when small (``inline_manifest_bytes``); otherwise the worker
fetches it again from the status URL. A failure carries what the worker path's exception
carries, so ``execute_complete`` raises the same one (``core/bulk/events.py``); ``progress``
is the server's last ``X-Progress``. Every event also has ``"progress_trail": {"count": n,
"items": [{"at", "x_progress", "retry_after"}, ...]}``, the last 50 of the wait's 202 answers
(``events.ProgressTrail``), which the worker writes to the export log as ``status_progress``
events: the triggerer writes no log. Server text in an event is redacted.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    import aiohttp

    from airflow_provider_backendauth.core.auth.client import BackendAuthClient
    from airflow_provider_backendauth.core.bulk.events import ProgressTrail
    from airflow_provider_backendauth.core.bulk.poll_settings import PollSettings
    from airflow_provider_backendauth.core.bulk.poller import StatusPoller
    from airflow_provider_backendauth.core.bulk.protocol import StatusResult
    from airflow_provider_backendauth.core.http.aiohttp_driver import Reply
    from airflow_provider_backendauth.core.http.policy import BearerPolicy

# Airflow 3.3 added BaseTrigger.on_kill and calls it when a user acts on the deferred task;
# 3.1 and 3.2 only cancel the trigger's coroutine (see ``_on_cancelled``).
TRIGGERER_CALLS_ON_KILL = "on_kill" in vars(BaseTrigger)
STATE_LOOKUP_TIMEOUT = 10.0
ON_KILL_TIMEOUT = 30.0
LARGE_BODY = 256 * 1024  # parse bigger status answers (manifests) off the event loop


def _load_modules() -> None:
    """Import what the wait needs; run in a thread so first-time imports (cryptography,
    pyjwt, aiohttp) never stall the triggerer's event loop."""
    import airflow_provider_backendauth.core.http.aiohttp_driver  # noqa: F401


def _make_client(conn: Any, extra: dict[str, Any]) -> BackendAuthClient:
    """The connection's client (validates settings, loads the key: may read a file)."""
    from airflow_provider_backendauth.core.auth.client import BackendAuthClient
    from airflow_provider_backendauth.core.auth.settings import ClientSettings

    return BackendAuthClient(ClientSettings.from_connection(conn, extra))


class BulkExportTrigger(BaseTrigger):
    """Polls a Bulk Data status URL until the export completes, fails or times out.

    Args:
        backendauth_conn_id: the ``backendauth`` connection (tokens, TLS settings, origins).
        status_url: from the kick-off's ``Content-Location``.
        poll_settings: the operator's ``PollSettings`` (or their ``as_dict()``, as
            serialised); their defaults when None.
        deadline: a ``time.time()`` after which to stop waiting (event ``timeout``).
        cancel_on_kill: ``DELETE`` the status URL when a user kills the deferred task.
        inline_manifest_bytes: largest manifest (JSON bytes) sent in the event.
    """

    def __init__(
        self,
        backendauth_conn_id: str,
        status_url: str,
        *,
        poll_settings: PollSettings | Mapping[str, Any] | None = None,
        deadline: float | None = None,
        cancel_on_kill: bool = True,
        inline_manifest_bytes: int = 64 * 1024,
        **older: Any,
    ) -> None:
        from airflow_provider_backendauth.core.bulk.poll_settings import PollSettings

        super().__init__()
        self.backendauth_conn_id = backendauth_conn_id
        self.status_url = status_url
        poll = poll_settings
        if poll is None or isinstance(poll, Mapping):
            # ``older``: the separate poll_interval_min/max and max_transient_errors a
            # trigger serialised by an earlier version of this provider still carries.
            poll = PollSettings.from_dict({**(poll or {}), **older})
        elif older:
            raise TypeError(f"unexpected arguments: {', '.join(sorted(older))}")
        self.poll_settings = poll
        self.deadline = deadline
        self.cancel_on_kill = cancel_on_kill
        self.inline_manifest_bytes = int(inline_manifest_bytes)
        self._client: BackendAuthClient | None = None
        self._poller: StatusPoller | None = None
        self._trail: ProgressTrail | None = None
        self._masked: set[str] = set()
        self._policy: BearerPolicy | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "backendauth_conn_id": self.backendauth_conn_id,
                "status_url": self.status_url,
                "poll_settings": self.poll_settings.as_dict(),
                "deadline": self.deadline,
                "cancel_on_kill": self.cancel_on_kill,
                "inline_manifest_bytes": self.inline_manifest_bytes,
            },
        )

    # -- the wait --------------------------------------------------------------------

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            await asyncio.to_thread(_load_modules)
            payload = await self._wait()
        except asyncio.CancelledError:
            await self._on_cancelled()
            raise
        except Exception as exc:  # report, don't crash the triggerer's loop
            from airflow_provider_backendauth.core.bulk.events import exception_event
            from airflow_provider_backendauth.core.urls import display_url

            shown = display_url(self.status_url)
            payload = exception_event(exc, self.status_url, shown, self._last_progress())
        from airflow_provider_backendauth.core.redact import redact

        for name in ("message", "diagnostics", "progress"):
            # Server text (OperationOutcome diagnostics, progress) may quote the token.
            if isinstance(payload.get(name), str):
                payload[name] = redact(payload[name])
        if self._trail is not None:  # the 202s, for the export log the worker writes
            from airflow_provider_backendauth.core.bulk.events import TRAIL_KEY

            payload[TRAIL_KEY] = self._trail.as_event()
        yield TriggerEvent(payload)

    def _last_progress(self) -> str | None:
        return None if self._poller is None else self._poller.last_progress

    async def _wait(self) -> dict[str, Any]:
        """The asyncio driver of the shared ``StatusPoller``: it only performs the requests
        and sleeps the poller asks for."""
        from airflow_provider_backendauth.core.bulk.events import ProgressTrail, failure_event
        from airflow_provider_backendauth.core.bulk.poller import (
            Action,
            Done,
            Poll,
            Sleep,
            StatusPoller,
        )
        from airflow_provider_backendauth.core.redact import redact
        from airflow_provider_backendauth.core.urls import display_url

        trail = self._trail = ProgressTrail()
        client = await self._auth_client()
        poller = self._poller = StatusPoller(
            self.status_url,
            self.poll_settings,
            deadline=self.deadline,
            shown_url=display_url(self.status_url),
        )
        await asyncio.sleep(poller.first_spread())
        async with client.async_session() as http:
            action: Action = poller.start(time.time())
            while True:
                if isinstance(action, Poll):
                    action = poller.feed(await self._poll(http, client), time.time())
                elif isinstance(action, Sleep):
                    for note in action.notes:  # may quote server text (X-Progress)
                        self.log.log(note.level, "%s", redact(note.message))
                    if action.observed is not None:
                        trail.add(action.observed, time.time())
                    await asyncio.sleep(action.seconds)
                    action = poller.start(time.time())
                elif isinstance(action, Done):
                    return self._complete_payload(action.manifest, action.expires)
                else:
                    return failure_event(action, self.status_url, poller.last_progress)

    def _complete_payload(
        self, manifest: dict[str, Any], expires: str | None = None
    ) -> dict[str, Any]:
        size = len(json.dumps(manifest, separators=(",", ":")))
        return {
            "status": "complete",
            "status_url": self.status_url,
            "manifest": manifest if size <= self.inline_manifest_bytes else None,
            "expires": expires,
            "progress": self._last_progress(),
        }

    # -- HTTP ------------------------------------------------------------------------

    async def _auth_client(self) -> BackendAuthClient:
        """The connection's client, read with the async connection API; the key is loaded in
        a thread (it may read a file)."""
        if self._client is not None:
            return self._client
        from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

        conn = await BackendAuthHook.aget_connection(self.backendauth_conn_id)
        aextra = getattr(conn, "aextra_dejson", None)
        extra = await aextra() if aextra is not None else conn.extra_dejson
        self._client = await asyncio.to_thread(_make_client, conn, extra)
        return self._client

    async def _mask(self, token: str) -> None:
        if token not in self._masked:
            from airflow_provider_backendauth._compat import amask_secret

            await amask_secret(token)
            self._masked.add(token)

    async def _send(
        self,
        http: aiohttp.ClientSession,
        client: BackendAuthClient,
        method: str,
        url: str,
        *,
        max_bytes: int,
    ) -> Reply:
        """One request through the connection's decision per hop (the same ``BearerPolicy``
        the workers use, driven by ``send_async``): token for allowed origins only, renewed
        once on 401, redirects by the one redirect rule, the body read within its cap."""
        from airflow_provider_backendauth.core.http.aiohttp_driver import send_async

        if self._policy is None:
            from airflow_provider_backendauth.core.errors import BulkExportError

            self._policy = client.bearer_policy(error=BulkExportError)
        return await send_async(
            http,
            self._policy,
            method,
            url,
            timeout=client.settings.timeout,
            headers={"Accept": "application/json"},
            max_bytes=max_bytes,
            on_token=self._mask,
        )

    async def _poll(self, http: aiohttp.ClientSession, client: BackendAuthClient) -> StatusResult:
        from airflow_provider_backendauth.core.bulk.protocol import RetryLater, interpret_status
        from airflow_provider_backendauth.core.http.aiohttp_driver import TRANSPORT_ERRORS
        from airflow_provider_backendauth.core.http.bodies import MAX_STATUS_BYTES
        from airflow_provider_backendauth.core.http.deadline import (
            Deadline,
            DeadlineExceededError,
            within,
        )
        from airflow_provider_backendauth.core.urls import display_url

        # The socket timeout bounds each read; the connection's 'timeout' bounds the whole
        # request (status line, headers, body), as on the workers.
        deadline = Deadline(client.settings.timeout)
        try:
            reply = await within(
                deadline,
                self._send(http, client, "GET", self.status_url, max_bytes=MAX_STATUS_BYTES),
                f"GET {display_url(self.status_url)}",
            )
        except DeadlineExceededError as exc:
            return RetryLater(None, exc.reason)
        except TRANSPORT_ERRORS as exc:
            return RetryLater(None, f"no answer ({type(exc).__name__})")
        if len(reply.body) > LARGE_BODY:  # a big manifest: parse it off the loop
            return await asyncio.to_thread(
                interpret_status, reply.status, reply.headers, reply.body
            )
        return interpret_status(reply.status, reply.headers, reply.body)

    # -- user kills the deferred task ------------------------------------------------

    async def _on_cancelled(self) -> None:
        """Airflow 3.1/3.2: cancel the export when the deferred task was failed, cleared or
        killed, which those versions signal only by cancelling this coroutine.

        They cancel it the same way when the triggerer stops or hands the trigger to another
        triggerer, where the export must go on; the task instance's state tells the cases
        apart (still ``deferred``: the wait continues elsewhere). Airflow 3.3+ calls
        ``on_kill`` for user actions only, so there this does nothing.
        """
        if not self.cancel_on_kill or TRIGGERER_CALLS_ON_KILL:
            return
        try:
            state = await asyncio.wait_for(self._task_state(), STATE_LOOKUP_TIMEOUT)
        except Exception as exc:  # no API, no answer: never cancel on a guess
            self.log.warning(
                "Trigger cancelled, but the task's state is unknown (%s: %s); the export keeps "
                "running on the server",
                type(exc).__name__,
                exc,
            )
            return
        if state == "deferred":
            self.log.info(
                "Trigger stopped while the task is still deferred (triggerer restart or "
                "handover): the export keeps running"
            )
            return
        self.log.warning("The deferred task is now %r: cancelling the export", state)
        try:
            await asyncio.wait_for(self.on_kill(), ON_KILL_TIMEOUT)
        except Exception as exc:
            self.log.warning("Cancelling the export failed: %s: %s", type(exc).__name__, exc)

    async def _task_state(self) -> str | None:
        """The state of the task instance this trigger serves, from the Task SDK (the
        triggerer's supervisor answers it over its comms channel)."""
        ti = getattr(self, "task_instance", None)
        if ti is None:
            raise RuntimeError("no task instance is attached to the trigger")
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
        from asgiref.sync import sync_to_async

        map_index = getattr(ti, "map_index", -1)
        map_index = map_index if isinstance(map_index, int) else -1
        states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
            dag_id=ti.dag_id,
            task_ids=[ti.task_id],
            run_ids=[ti.run_id],
            map_index=map_index,
        )
        key = ti.task_id if map_index < 0 else f"{ti.task_id}_{map_index}"
        state = (states.get(ti.run_id) or {}).get(key)
        return None if state is None else str(getattr(state, "value", state))

    async def on_kill(self) -> None:
        """``DELETE`` the export when a user kills the deferred task (``cancel_on_kill``)."""
        if not self.cancel_on_kill:
            return
        from airflow_provider_backendauth.core.urls import display_url

        await asyncio.to_thread(_load_modules)
        client = await self._auth_client()
        from airflow_provider_backendauth.core.http.bodies import MAX_ERROR_BODY_BYTES

        async with client.async_session() as http:
            reply = await self._send(
                http, client, "DELETE", self.status_url, max_bytes=MAX_ERROR_BODY_BYTES
            )
        self.log.info(
            "Task killed: DELETE %s answered HTTP %d",
            display_url(self.status_url),
            reply.status,
        )
