"""Lake settings: every Spark job gets the object-store settings from one place (shopstream.lake)."""

from __future__ import annotations

from shopstream.lake import LakeSettings


def test_s3_settings_cover_iceberg_and_s3a_alike():
    settings = LakeSettings(
        catalog_uri="jdbc:postgresql://pg:5432/iceberg",
        warehouse="s3://shop/warehouse",
        catalog_user="catalog",
        catalog_password="pw",
        s3_endpoint="http://minio:9000",
        s3_region="eu-west-1",
    )
    conf = settings.spark_conf()
    assert conf["spark.sql.catalog.lake.io-impl"] == "org.apache.iceberg.aws.s3.S3FileIO"
    assert conf["spark.sql.catalog.lake.s3.endpoint"] == conf["spark.hadoop.fs.s3a.endpoint"] == "http://minio:9000"
    assert (
        conf["spark.sql.catalog.lake.s3.path-style-access"] == conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    )
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-1"
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith("EnvironmentVariableCredentialsProvider")
    assert settings.pyiceberg_properties()["s3.endpoint"] == "http://minio:9000"


def test_a_local_lake_has_no_object_store_settings(tmp_path):
    conf = LakeSettings.local(tmp_path).spark_conf()
    assert not any("s3" in key for key in conf)
