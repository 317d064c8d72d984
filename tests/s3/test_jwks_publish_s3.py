"""``backendauth jwks publish`` to S3 (moto on loopback): one object, a JSON content type,
public members only."""

from __future__ import annotations

import json

from tests.support.cli import keygen, run


def test_publish_to_s3_with_a_json_content_type(tmp_path, capsys, bucket):
    made = keygen(capsys, tmp_path / "k")
    status, _, err = run(
        capsys,
        "jwks",
        "publish",
        str(tmp_path / "k" / "private_key.pem"),
        "--to",
        bucket.url("keys/jwks.json"),
    )
    assert status == 0, err
    head = bucket.server.client().head_object(Bucket=bucket.name, Key="keys/jwks.json")
    assert head["ContentType"] == "application/json"
    stored = json.loads(bucket.server.objects(bucket.name)["keys/jwks.json"])
    assert stored["keys"][0]["kid"] == made["kid"] and "d" not in stored["keys"][0]
