"""Reads the lake's Parquet tables through the Glue catalog with independent readers.

Usage: read_tables.py ENDPOINT BUCKET DATABASE [--dt DT ...]

Prints one JSON object:

    {"glue": {table: {"location", "columns": [[name, type]], "partition_keys": [[name, type]],
                      "partitions": {dt: location}}},
     "awswrangler": {table: {"rows", "dtypes": [[name, dtype]]}},
     "awswrangler_partition_filter": {table: {"rows", "dtypes"}},   # partitioned tables
     "duckdb": {table: {"rows", "types": [[name, type]], "files"}}}

A reader that fails on a table gives `{"error": "<exception>: <message>"}` there instead.

- `awswrangler`: `wr.s3.read_parquet_table(table, database)` with no partition filter, which
  lists everything under the table's location recursively and reads it as Parquet.
- `awswrangler_partition_filter`: the same with a `partition_filter` keeping the `dt`s given
  with `--dt` (all registered partitions when none is given), which takes the partition
  locations from Glue's GetPartitions.
- `duckdb`: the objects at the table's location (unpartitioned tables) or at each partition
  location Glue lists, as Hive and Athena read them (the files directly in the folder, not
  hidden `_`/`.` ones), downloaded with boto3 and read with DuckDB's Parquet reader (the
  partition column from the `dt=` folder, typed from the Glue partition keys).

Clients go to ENDPOINT (moto) with the test credentials; nothing reaches real AWS.
"""

import argparse
import json
import os
import sys
import tempfile

TABLES = [
    "customer_trusted",
    "accelerometer_trusted",
    "customer_curated",
    "step_trainer_trusted",
    "machine_learning_curated",
]

# Glue / Hive type -> DuckDB type, for the partition columns.
DUCKDB_TYPES = {"string": "VARCHAR", "bigint": "BIGINT", "int": "INTEGER", "double": "DOUBLE"}


def local_aws(endpoint):
    """Points boto3 (and so awswrangler) at `endpoint` with moto's test credentials."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(var, None)
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )


def split_s3(url):
    assert url.startswith("s3://"), url
    bucket, _, key = url[len("s3://") :].partition("/")
    return bucket, key


def glue_table(glue, database, table):
    t = glue.get_table(DatabaseName=database, Name=table)["Table"]
    sd = t["StorageDescriptor"]
    partitions = {}
    for page in glue.get_paginator("get_partitions").paginate(
        DatabaseName=database, TableName=table
    ):
        for p in page["Partitions"]:
            partitions["/".join(p["Values"])] = p["StorageDescriptor"]["Location"]
    return {
        "location": sd["Location"],
        "columns": [[c["Name"], c["Type"]] for c in sd["Columns"]],
        "partition_keys": [[c["Name"], c["Type"]] for c in t.get("PartitionKeys", [])],
        "partitions": dict(sorted(partitions.items())),
    }


def frame_summary(df):
    return {
        "rows": int(len(df)),
        "dtypes": [[str(c), str(t)] for c, t in df.dtypes.items()],
    }


def with_awswrangler(database, table, partition_filter=None):
    import awswrangler as wr

    df = wr.s3.read_parquet_table(
        table=table, database=database, partition_filter=partition_filter
    )
    return frame_summary(df)


def folder_files(s3, location):
    """The data files directly in the folder `location`, as Hive lists them."""
    bucket, prefix = split_s3(location if location.endswith("/") else location + "/")
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, Delimiter="/"
    ):
        for obj in page.get("Contents", []):
            name = obj["Key"][len(prefix) :]
            if name and not name.startswith(("_", ".")):
                keys.append(obj["Key"])
    return bucket, sorted(keys)


def with_duckdb(s3, info, workdir):
    import duckdb

    if info["partition_keys"]:
        locations = list(info["partitions"].values())
    else:
        locations = [info["location"]]
    _, root = split_s3(info["location"])
    paths, keys = [], []
    for location in locations:
        bucket, found = folder_files(s3, location)
        for key in found:
            # Keep the path below the table location, so `dt=` folders stay folders.
            rel = key[len(root) :] if key.startswith(root) else key
            path = os.path.join(workdir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            s3.download_file(bucket, key, path)
            paths.append(path)
            keys.append(key)
    if not paths:
        return {"rows": 0, "types": [], "files": []}
    con = duckdb.connect()
    if info["partition_keys"]:
        hive_types = ", ".join(
            f"'{name}': '{DUCKDB_TYPES[ty]}'" for name, ty in info["partition_keys"]
        )
        source = (
            f"read_parquet($files, hive_partitioning = true, hive_types = {{{hive_types}}})"
        )
    else:
        source = "read_parquet($files, hive_partitioning = false)"
    rows = con.execute(f"SELECT count(*) FROM {source}", {"files": paths}).fetchone()[0]
    types = con.execute(f"DESCRIBE SELECT * FROM {source}", {"files": paths}).fetchall()
    con.close()
    return {
        "rows": int(rows),
        "types": [[name, ty] for name, ty, *_ in types],
        "files": keys,
    }


def attempt(read, *args, **kwargs):
    """`read`'s summary, or `{"error": ...}` so one failing reader does not hide the others."""
    try:
        return read(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
        return {"error": f"{type(e).__name__}: {e}"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("endpoint")
    ap.add_argument("bucket")
    ap.add_argument("database")
    ap.add_argument("--dt", action="append", default=[], help="partitions to filter on")
    args = ap.parse_args()
    local_aws(args.endpoint)

    import boto3

    glue = boto3.client("glue")
    s3 = boto3.client("s3")
    out = {"glue": {}, "awswrangler": {}, "awswrangler_partition_filter": {}, "duckdb": {}}
    for table in TABLES:
        info = glue_table(glue, args.database, table)
        out["glue"][table] = info
        for loc in [info["location"], *info["partitions"].values()]:
            if split_s3(loc)[0] != args.bucket:
                sys.exit(f"{table}: location {loc} is outside bucket {args.bucket}")

        out["awswrangler"][table] = attempt(with_awswrangler, args.database, table)
        if info["partition_keys"]:
            wanted = set(args.dt) or set(info["partitions"])
            out["awswrangler_partition_filter"][table] = attempt(
                with_awswrangler,
                args.database,
                table,
                partition_filter=lambda p: p["dt"] in wanted,
            )
        with tempfile.TemporaryDirectory(prefix="stedi-interop-") as workdir:
            out["duckdb"][table] = attempt(with_duckdb, s3, info, workdir)
    json.dump(out, sys.stdout, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
