"""`make bench-scale`: the customer-scale probe (issue: millions of customers in 256 MB).

Starts its own moto_server, bootstraps a stack, registers customers through the
functions' own code path (`stedi-scale grow`: customer_landing_to_trusted on 50k-record
files) up to 100k and 1M registrations (and 5M with BENCH_SCALE_5M=1), and at each size
runs every function as a fresh process (`stedi-scale probe`: first invocation cold, second
warm) on small files, measuring peak resident memory (wait4) and the requests and bytes
each invocation made, and one reconcile planning pass (`stedi-scale plan`) over the lake.
Then migrates the largest size from CUSTOMER_SHARDS (default 256) to BENCH_SCALE_RESHARD
shards (default: what its reconcile plan advises, 2048 at 1M; 0 skips it) by a whole reconcile
(`stedi-scale reconcile`) and probes every function again: the one-record customer file's
bytes follow the customers per shard.
Ends with RESULT lines. Debug builds of the probe by default
(CARGO_PROFILE=release for release numbers)."""
import contextlib
import collections
import json
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
PROFILE = os.environ.get("CARGO_PROFILE", "debug")
SIZES = [100_000, 1_000_000] + ([5_000_000] if os.environ.get("BENCH_SCALE_5M") else [])
# The shard count the lake is grown with, and the one the largest size is then migrated
# to by a reconcile (0: no migration leg)
SHARDS = int(os.environ.get("CUSTOMER_SHARDS", "256"))
# (default: what the reconcile plan of the largest size advises, if anything).
RESHARD = os.environ.get("BENCH_SCALE_RESHARD")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_stack():
    """Builds `stedi-scale`, starts a moto_server on a free port and sets the stack up
    (`stedi-scale setup`); yields the environment the probe's commands run with."""
    flag = [] if PROFILE == "debug" else ["--release"]
    subprocess.run(["cargo", "build", "-p", "stedi-cli", "--bin", "stedi-scale"] + flag,
                   cwd=ROOT, check=True)
    port = free_port()
    moto = subprocess.Popen([os.path.join(ROOT, ".venv", "bin", "python"), os.path.join(ROOT, "infra", "moto_server.py"), "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION="us-east-1", RUST_LOG="warn",
               # The template and sample are found from here, not from where the binary
               # was built (a shared target dir may hold a build of another checkout).
               STEDI_HOME=ROOT)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        run(["setup"], env)
        yield env
    finally:
        moto.terminate()


def run(args, env):
    """Runs stedi-scale; returns (JSON lines, peak RSS MiB of the process, seconds). Each
    JSON line is echoed to stderr as it comes, so a long probe shows its phases."""
    exe = os.path.join(TARGET, PROFILE, "stedi-scale")
    start = time.perf_counter()
    # stderr into the same pipe: one reader, no pipe left to fill up.
    p = subprocess.Popen([exe] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env=env, cwd=ROOT, text=True)
    lines, other = [], collections.deque(maxlen=60)
    for l in p.stdout:
        if l.startswith("{"):
            lines.append(json.loads(l))
            sys.stderr.write(f"[{time.perf_counter() - start:7.1f} s] {l[:300].rstrip()}\n")
        else:
            other.append(l)
    err = "".join(other)
    p.wait()
    secs = time.perf_counter() - start
    if p.returncode != 0:
        sys.stderr.write(err[-3000:])
        raise SystemExit(f"stedi-scale {' '.join(args)} failed")
    rss = lines[-1].get("peak_rss_mb") if lines and "peak_rss_mb" in lines[-1] else None
    return lines, rss, secs


def probe(s3, env, size, shards, rows, offset=0):
    """Runs every function as a fresh process on probe files of their own: a one-record
    customer file (a new customer), phone and Step Trainer files of a consenting customer;
    appends (size, shards, function, cold, warm, peak RSS) to `rows`."""
    tag = f"{size}-{shards}"
    # Probe files: one new consenting customer, and readings of consenting customers.
    user = 2 * (size // 4)  # an even index: consenting
    email, serial = f"c{user:08}@scale.test", f"S{user:08}"
    keys = {}
    for n in (1, 2):
        new = 10_000_000 + 2 * size + 2 * n + offset
        line = json.dumps({"email": f"c{new:08}@scale.test", "serialNumber": f"S{new:08}",
                           "lastUpdateDate": 1, "shareWithResearchAsOfDate": 1})
        k = f"customer/landing/probe-{tag}-{n}.json"
        s3.put_object(Bucket="stedi-scale", Key=k, Body=line + "\n")
        keys.setdefault("customer_landing_to_trusted", []).append(k)
        ts = 1_655_564_000_000 + n * 10_000_000
        body = "".join(json.dumps({"user": email, "timestamp": ts + i, "x": 1, "y": 2, "z": 3})
                       + "\n" for i in range(900))
        k = f"accelerometer/landing/probe-{tag}-{n}.json"
        s3.put_object(Bucket="stedi-scale", Key=k, Body=body)
        keys.setdefault("accelerometer_landing_to_trusted", []).append(k)
        keys.setdefault("customer_trusted_to_curated", []).append(
            f"accelerometer/trusted/dt=2022-06-18/probe-{tag}-{n}.parquet")
        body = "".join(json.dumps({"sensorReadingTime": ts + i, "serialNumber": serial,
                                   "distanceFromObject": 200}) + "\n" for i in range(900))
        k = f"step_trainer/landing/probe-{tag}-{n}.json"
        s3.put_object(Bucket="stedi-scale", Key=k, Body=body)
        keys.setdefault("step_trainer_landing_to_trusted", []).append(k)
        keys.setdefault("machine_learning_trusted_to_curated", []).append(
            f"step_trainer/trusted/dt=2022-06-18/probe-{tag}-{n}.parquet")
    for function, ks in keys.items():
        args = ["probe", "--function", function]
        for k in ks:
            args += ["--key", k]
        lines, _, _ = run(args, env)
        rss = lines[-1]["peak_rss_mb"]
        cold, warm = lines[0], lines[1]
        rows.append((size, shards, function, cold, warm, rss))
        print(f"{size:>9} {shards:>5} {function:<38} cold {cold['ms']:7.1f} ms {cold['bytes_read']:>9} B read "
              f"{cold['bytes_written']:>8} B written | warm {warm['ms']:7.1f} ms "
              f"{warm['bytes_read']:>9} B read {warm['bytes_written']:>8} B written | "
              f"rows out {cold['rows_out']}/{warm['rows_out']} | peak RSS {rss:.1f} MiB",
              flush=True)


def main():
    with local_stack() as env:
        import boto3  # moto's dependency, in the project venv
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        have, rows, results, plans = 0, [], [], []
        for size in SIZES:
            grown, grow_rss, grow_s = run(["grow", "--from", str(have), "--to", str(size)], env)
            have = size
            first, last = grown[0], grown[-2]
            print(f"{size:>9} customers: {len(grown) - 1} files of 50k folded in {grow_s:.1f} s; "
                  f"first file {first['ms']:.0f} ms, last {last['ms']:.0f} ms", flush=True)
            probe(s3, env, size, SHARDS, rows)
            # One reconcile planning pass over the whole lake, a fresh process (its memory
            # is what the reconcile function needs at this size).
            planned, plan_rss, _ = run(["plan"], env)
            p = planned[-1]
            plans.append((size, p, plan_rss))
            print(f"{size:>9} reconcile plan: {p['ms']:.0f} ms, peak RSS {plan_rss:.1f} MiB, "
                  f"items {p['items']}, GET {p['requests']['s3_get']}, "
                  f"{p['requests']['bytes_read']} B read, advised shards "
                  f"{p.get('advised_shards')}", flush=True)
            results.append((size, first["ms"], last["ms"], grow_rss))
        advised = plans[-1][1].get("advised_shards") or 0
        reshard = int(RESHARD) if RESHARD is not None else advised
        if reshard:
            # The largest size migrated to more shards (a reconcile with CUSTOMER_SHARDS
            # changed), then probed again: customers per shard back to the small size's.
            moved = dict(env, CUSTOMER_SHARDS=str(reshard))
            done, reshard_rss, _ = run(["reconcile"], moved)
            migration = done[-1]
            print(f"{have:>9} reconcile to {reshard} shards: {migration['ms']:.0f} ms, peak RSS "
                  f"{reshard_rss:.1f} MiB, passes {migration['passes']}, groups {migration['groups']}, "
                  f"GET {migration['requests']['s3_get']}, PUT {migration['requests']['s3_put']}, "
                  f"DELETE {migration['requests']['s3_delete']}", flush=True)
            probe(s3, moved, have, reshard, rows, offset=1000)
        print()
        for size, first_ms, last_ms, _ in results:
            print(f"RESULT customers={size} fold_first_ms={first_ms:.0f} fold_last_ms={last_ms:.0f} "
                  f"fold_ratio={last_ms / first_ms:.2f}")
        for size, shards, function, cold, warm, rss in rows:
            print(f"RESULT customers={size} shards={shards} function={function} peak_rss_mb={rss:.1f} "
                  f"cold_ms={cold['ms']:.1f} warm_ms={warm['ms']:.1f} "
                  f"cold_bytes_read={cold['bytes_read']} warm_bytes_read={warm['bytes_read']} "
                  f"cold_bytes_written={cold['bytes_written']} warm_bytes_written={warm['bytes_written']} "
                  f"rows_out={warm['rows_out']} "
                  f"warm_requests=get:{warm['s3_get']},put:{warm['s3_put']},list:{warm['s3_list']},"
                  f"delete:{warm['s3_delete']},glue:{warm['glue_calls']}")
        for size, _, _, grow_rss in results:
            print(f"RESULT customers={size} function=customer_landing_to_trusted_50k_files "
                  f"peak_rss_mb={grow_rss:.1f}")
        for size, p, rss in plans:
            print(f"RESULT customers={size} function=reconcile_plan peak_rss_mb={rss:.1f} "
                  f"ms={p['ms']:.0f} items={p['items']} s3_get={p['requests']['s3_get']} "
                  f"bytes_read={p['requests']['bytes_read']}")
        if reshard:
            print(f"RESULT customers={have} function=reconcile_reshard shards={reshard} "
                  f"peak_rss_mb={reshard_rss:.1f} ms={migration['ms']:.0f} "
                  f"s3_get={migration['requests']['s3_get']} s3_put={migration['requests']['s3_put']} "
                  f"s3_delete={migration['requests']['s3_delete']}")
        peaks = [r[5] for r in rows] + [r[3] for r in results] + [p[2] for p in plans]
        if reshard:
            peaks.append(reshard_rss)
        print(f"RESULT max_peak_rss_mb={max(peaks):.1f}")


if __name__ == "__main__":
    main()
