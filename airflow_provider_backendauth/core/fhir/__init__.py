"""FHIR over HTTP: the REST client with retries, search paging, and OperationOutcome reading."""
