#!/usr/bin/env bash
# The path the README gives users: a function under `cargo lambda watch`, pointed at the
# local stack with AWS_ENDPOINT_URL, invoked with `cargo lambda invoke --data-file events/…`.
# Checks that the invocation succeeds and that its output object and Glue partition exist.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
PY=$VENV/bin/python
export PATH="$PWD/$VENV/bin:$PATH"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export SAM_CLI_TELEMETRY=0

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOTO_PORT=$(free_port); INVOKE_PORT=$(free_port)
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
LOG=$(mktemp -d)
cleanup() { kill "${WATCH_PID:-}" "${MOTO_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

$PY infra/moto_server.py -H 127.0.0.1 -p "$MOTO_PORT" >"$LOG/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 100); do $PY -c "import socket; socket.create_connection(('127.0.0.1',$MOTO_PORT))" 2>/dev/null && break; sleep 0.1; done

cargo build --quiet -p stedi-cli
STEDI="${CARGO_TARGET_DIR:-target}/debug/stedi"
"$STEDI" --endpoint "$AWS_ENDPOINT_URL" bootstrap
# Customers first (through the local runner), then the file the smoke invocation reads.
"$STEDI" --endpoint "$AWS_ENDPOINT_URL" drop ../shared/data/stedi/customer/landing --zone customer
$PY - "$AWS_ENDPOINT_URL" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
# The sample's phone file of 50 users under the key the sample event names: few enough
# people for one posting each in the index table (INDEX_TABLE, default stedi-index).
s3.upload_file("../shared/data/stedi/accelerometer/landing/accelerometer-1691348232031.json",
               "stedi-lake", "accelerometer/landing/accelerometer-1691348231445.json")
PY

cargo lambda watch --invoke-port "$INVOKE_PORT" --ignore-changes \
  --env-var "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL,AWS_ACCESS_KEY_ID=testing,AWS_SECRET_ACCESS_KEY=testing,AWS_REGION=us-east-1,RUST_LOG=info" \
  >"$LOG/watch.log" 2>&1 &
WATCH_PID=$!
for _ in $(seq 600); do $PY -c "import socket; socket.create_connection(('127.0.0.1',$INVOKE_PORT))" 2>/dev/null && break; sleep 0.5; done

fn=accelerometer_landing_to_trusted
out=$(cargo lambda invoke "$fn" --invoke-port "$INVOKE_PORT" \
      --data-file "events/$fn.sqs.json" --output-format json)
echo "cargo lambda invoke $fn: $out"
echo "$out" | $PY -c 'import sys, json; assert json.load(sys.stdin) == {"batchItemFailures": []}' \
  || { echo "FAIL: unexpected response"; tail -20 "$LOG/watch.log"; exit 1; }

$PY - "$AWS_ENDPOINT_URL" <<'PY'
import json, sys, boto3
ep = sys.argv[1]
s3 = boto3.client("s3", endpoint_url=ep)
glue = boto3.client("glue", endpoint_url=ep)
key = "accelerometer/trusted/dt=2022-06-18/accelerometer-1691348231445.parquet"
head = s3.head_object(Bucket="stedi-lake", Key=key)
part = glue.get_partition(DatabaseName="stedi", TableName="accelerometer_trusted",
                          PartitionValues=["2022-06-18"])["Partition"]
loc = part["StorageDescriptor"]["Location"]
assert loc == "s3://stedi-lake/accelerometer/trusted/dt=2022-06-18/", loc
ddb = boto3.client("dynamodb", endpoint_url=ep)
items = ddb.scan(TableName="stedi-index")["Items"]
postings = [i for i in items if i["pk"]["S"].startswith("stedi-lake/persons/")]
landing = {i["sk"]["S"] for i in postings}
people = {i["pk"]["S"] for i in postings}
assert len(postings) == 50 and len(people) == 50, postings[:3]
assert landing == {"accelerometer/landing/accelerometer-1691348231445.json"}, landing
# The file's lineage manifest: an entry of the same table, no S3 object.
manifests = [i for i in items if i["pk"]["S"] == "stedi-lake/lineage/accelerometer_trusted"]
assert [m["sk"]["S"] for m in manifests] == ["accelerometer-1691348231445"], manifests
assert json.loads(manifests[0]["m"]["S"])["dts"] == ["2022-06-18"], manifests
# The customer file dropped first holds 956 people: one wide index entry, not postings.
wide = [i["sk"]["S"] for i in items if i["pk"]["S"] == "stedi-lake/persons-wide/customer_landing"]
assert wide == ["customer/landing/customer-1691348231425.json"], wide
assert len(items) == 50 + 1 + 1, len(items)
listed = s3.list_objects_v2(Bucket="stedi-lake", Prefix="_stedi/lineage/").get("Contents", [])
assert listed == [], listed
print(f"lambda-smoke: {key} ({head['ContentLength']} bytes), partition dt=2022-06-18 at {loc}, "
      f"{len(postings)} postings and its manifest in stedi-index")
print("lambda-smoke: 1 passed, 0 failed")
PY
