"""The five transitions as one DuckDB SQL batch over the same landing files (the peer the
benchmark compares with): the batch-truth SQL of DESIGN.md, outputs written as zstd Parquet.
Prints one JSON line: seconds and the row count of every table."""
import json
import os
import sys
import tempfile
import time

import duckdb

data, threads = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2
out = tempfile.mkdtemp(prefix="stedi-duckdb-")
start = time.perf_counter()
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
src = lambda zone: f"read_json_auto('{data}/{zone}/landing/*.json', format='newline_delimited')"
statements = [
    f"""CREATE TABLE customer_trusted AS SELECT * EXCLUDE (rn) FROM (
          SELECT *, row_number() OVER (PARTITION BY email ORDER BY lastupdatedate DESC) AS rn
          FROM {src('customer')}) WHERE rn = 1 AND sharewithresearchasofdate > 0""",
    f"""CREATE TABLE accelerometer_trusted AS SELECT a.* FROM {src('accelerometer')} a
          JOIN customer_trusted c ON a.user = c.email""",
    """CREATE TABLE customer_curated AS SELECT c.* FROM customer_trusted c
          WHERE c.email IN (SELECT user FROM accelerometer_trusted)""",
    f"""CREATE TABLE step_trainer_trusted AS SELECT s.* FROM {src('step_trainer')} s
          WHERE s.serialnumber IN (SELECT serialnumber FROM customer_curated)""",
    """CREATE TABLE machine_learning_curated AS
          SELECT s.sensorreadingtime, s.serialnumber, s.distancefromobject, a.x, a.y, a.z
          FROM step_trainer_trusted s
          JOIN customer_curated c ON c.serialnumber = s.serialnumber
          JOIN accelerometer_trusted a ON a.user = c.email AND a.timestamp = s.sensorreadingtime""",
]
tables = ["customer_trusted", "accelerometer_trusted", "customer_curated",
          "step_trainer_trusted", "machine_learning_curated"]
for s in statements:
    con.execute(s)
for t in tables:
    con.execute(f"COPY {t} TO '{os.path.join(out, t)}.parquet' (FORMAT parquet, COMPRESSION zstd)")
secs = time.perf_counter() - start
counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
print(json.dumps({"secs": secs, "counts": counts, "version": duckdb.__version__}))
