"""core.lineage: the names of FHIR datasets and storage locations (Assets, OpenLineage, logs)."""

from __future__ import annotations

import pytest

from airflow_provider_backendauth.core.lineage import (
    export_asset_extras,
    fhir_asset_uri,
    fhir_dataset_name,
    fhir_namespace,
    public_url,
    storage_dataset,
)


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("https://fhir.example.org/api/FHIR/R4/", "https://fhir.example.org/api/FHIR/R4"),
        ("HTTPS://user:secret@fhir.example.org/r4?_format=json#x", "https://fhir.example.org/r4"),
        ("s3://aws_default@bucket/out/2024-06-01", "s3://bucket/out/2024-06-01"),
        ("abfs://conn@container/out?sv=2024&sig=SECRET", "abfs://container/out"),
        ("/data/out/", "/data/out"),
        ("/data/out?x=1", "/data/out"),
        ("https://h/a\nb", "https://h/a%0Ab"),
    ],
)
def test_public_url_drops_user_info_query_and_fragment(given: str, shown: str) -> None:
    assert public_url(given) == shown


def test_dataset_names() -> None:
    assert fhir_namespace("https://u:p@fhir.example.org/r4/?a=b") == "https://fhir.example.org/r4"
    assert fhir_dataset_name("Observation") == "Observation"
    assert (
        fhir_dataset_name("Observation", group_id="cohort 1/x")
        == "Group/cohort%201%2Fx/Observation"
    )
    # Server-given types follow the file-name rule: no path can be smuggled into an Asset.
    assert fhir_dataset_name("../../etc/passwd") == "etc_passwd"
    assert (
        fhir_asset_uri("https://fhir.example.org/r4/", "Patient", group_id="g1")
        == "https://fhir.example.org/r4/Group/g1/Patient"
    )


@pytest.mark.parametrize(
    "base", ["https://fhir.example.org/r4", "http://127.0.0.1:8080/fhir/", "https://H.example/R4"]
)
def test_asset_uris_are_what_airflow_keeps(base: str) -> None:
    """A DAG author's ``Asset(fhir_asset_uri(...))`` and the operator's are the same Asset:
    Airflow's URI normalisation leaves ours unchanged."""
    from airflow.sdk import Asset

    uri = fhir_asset_uri(base, "Observation", group_id="g-1.2")
    asset = Asset(uri)
    assert asset.uri == uri and asset.name == uri


def test_export_extras_per_type() -> None:
    summary = {
        "transactionTime": "2024-06-01T00:00:00Z",
        "destination": "s3://aws_default@bucket/out/2024-06-01",
        "output": {
            "Patient": {
                "files": ["Patient.000.ndjson", "Patient.001.ndjson"],
                "count": 7,
                "bytes": 70,
            },
            "../Observation": {"files": ["Observation.000.ndjson"], "count": 2, "bytes": 20},
        },
    }
    extras = export_asset_extras(
        summary,
        since="2024-05-31T00:00:00Z",
        level="group",
        group_id="g1",
        types=["Patient", "Condition"],
    )
    assert set(extras) == {"Patient", "Observation", "Condition"}
    assert extras["Patient"] == {
        "source": "bulk-export",
        "resourceType": "Patient",
        "resources": 7,
        "files": 2,
        "bytes": 70,
        "transactionTime": "2024-06-01T00:00:00Z",
        "since": "2024-05-31T00:00:00Z",
        "level": "group",
        "group": "g1",
        "path": "s3://bucket/out/2024-06-01",
    }
    assert extras["Condition"]["resources"] == extras["Condition"]["files"] == 0


@pytest.mark.parametrize(
    ("location", "dataset"),
    [
        (
            "s3://aws_default@bucket/out/Patient.000.ndjson",
            ("s3://bucket", "out/Patient.000.ndjson"),
        ),
        ("gs://bucket/a/b.ndjson?x=1", ("gs://bucket", "a/b.ndjson")),
        ("abfs://wasb@container/out/x.ndjson", ("abfs://container", "out/x.ndjson")),
        ("/data/out/x.ndjson", ("file", "/data/out/x.ndjson")),
        ("file:///data/out/x.ndjson", ("file", "/data/out/x.ndjson")),
    ],
)
def test_storage_datasets_follow_the_openlineage_naming(
    location: str, dataset: tuple[str, str]
) -> None:
    assert storage_dataset(location) == dataset
