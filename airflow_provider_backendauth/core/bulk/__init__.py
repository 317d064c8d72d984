r"""FHIR Bulk Data \$export: the request and its sans-IO interpretation (``request``,
``protocol``, ``poller``), the synchronous client (``client``), streaming downloads
(``download``), durable state (``state``) and the lifecycle that ties them together
(``job``). Every request goes through the transport (``core/http/``)."""
