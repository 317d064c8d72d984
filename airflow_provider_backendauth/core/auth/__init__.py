"""Who the client is and how it gets a token: keys, the signed assertion, vendor profiles,
connection settings, SMART discovery, the token exchange and cache. Attaching the token to
requests is the transport's (``core/http/``)."""
