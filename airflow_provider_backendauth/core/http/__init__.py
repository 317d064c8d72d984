"""The transport: every request the provider makes goes through here, for ``requests``
(workers) and ``aiohttp`` (the triggerer) alike.

- ``sessions``: the ``requests`` sessions (TLS, User-Agent, proxy environment once per origin);
- ``deadline``: the connection's ``timeout`` as a total deadline per request;
- ``bodies``: bounded, streamed reads of answers, a cap per purpose (decoded size included);
- ``redirects``: the one redirect rule (sans-IO);
- ``policy``: the sans-IO decision per hop (which origin gets the token, redirects, 401 ->
  renew once, the headers of each hop), and its two drivers ``requests_auth``
  (``BackendAuth``) and ``aiohttp_driver`` (``send_async``, and the event loop's shared
  session, ``shared_session``);
- ``authorized``: per-thread authorized sessions (``AuthorizedSessions``), for parallel work.

This package imports no Airflow.
"""
