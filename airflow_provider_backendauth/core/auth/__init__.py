"""Who the client is and how it gets a token: keys, the signed assertion, vendor profiles,
connection settings, SMART discovery, the token exchange and cache, and the adapters that
attach the bearer token to requests."""
