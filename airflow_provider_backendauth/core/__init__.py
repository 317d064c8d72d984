"""Framework-free core: keys, assertions, profiles, token client, requests auth, FHIR clients.

Nothing under ``core`` imports Airflow, so it can be used and tested on its own.
"""
