r"""FHIR Bulk Data \$export: the request and its sans-IO interpretation (``export``), per-hop
HTTP rules (``http``), streaming downloads (``download``), durable state (``state``) and the
lifecycle that ties them together (``job``)."""
