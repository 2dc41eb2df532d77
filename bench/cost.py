"""`make bench-cost`: requests per landing object on a launch-shaped arrival, and what they
cost at list prices.

Starts its own moto_server and runs `stedi-scale cost` through the event path: 2,000
customers (every other one consenting), a `dt` that already holds 20 sessions, then 50
sessions uploaded together, each session one phone file (one user, 300 readings) and one
Step Trainer file (their device, 300 readings): 100 landing objects. Requests are counted
in the store layer of every function the objects fire. Prints a table and RESULT lines:
requests per landing object by kind, dollars per million landing objects and per day at
SCALE.md's 4M landing objects a day, beside the seeds' five Glue jobs run once a day; then
what a scheduled reconcile pass reads per object the lake holds, and its cost a day as the
lake fills.
Debug build (handler times are an upper bound for Lambda GB-s)."""

from scale import local_stack, run

# us-east-1 list prices (2026): S3 Standard, Glue Data Catalog, SQS standard, Lambda arm64.
S3_PUT_LIST = 0.005 / 1000
S3_GET = 0.0004 / 1000
GLUE_REQUEST = 1.0 / 1_000_000
SQS_REQUEST = 0.40 / 1_000_000
LAMBDA_REQUEST = 0.20 / 1_000_000
LAMBDA_GB_S = 0.0000133334
# DynamoDB on demand (the erasure index's postings): per write and per read request unit.
DYNAMODB_WRU = 0.625 / 1_000_000
DYNAMODB_RRU = 0.125 / 1_000_000
MEMORY_GB = 0.25
PER_DAY = 4_000_000  # SCALE.md: 2M sessions, a phone and a Step Trainer file each
# The seeds' five Glue (Spark) jobs, once a day over a day of small files: assumed 10 G.1X
# workers (10 DPU) for one hour each at $0.44 per DPU-hour.
GLUE_JOBS, GLUE_DPU, GLUE_HOURS, GLUE_DPU_HOUR = 5, 10, 1.0, 0.44


def main():
    with local_stack() as env:
        # The recheck a consent change sends runs in the same drop (not 15 minutes later),
        # so its requests are counted with the change's.
        lines, _, _ = run(["cost"], dict(env, RECHECK_DELAY_SECONDS="0"))
    out = lines[-1]
    n = out["landing_objects"]
    fs = out["functions"]
    total = {k: sum(f[k] for f in fs) for k in
             ["s3_put", "s3_get", "s3_head", "s3_list", "s3_delete", "glue_calls", "invocations",
              "messages", "handler_ms", "dynamodb_wru", "dynamodb_rru"]}
    # SQS: EventBridge sends each message; the event source mapping receives and deletes
    # up to 10 messages a request, at least one of each per invocation; SQS calls the
    # functions make themselves are counted.
    polls = sum(max(f["invocations"], -(-f["messages"] // 10)) for f in fs)
    sqs = total["messages"] + 2 * polls + sum(f["sqs_calls"] for f in fs)
    per = {
        "S3 PUT": total["s3_put"] / n,
        "S3 GET": total["s3_get"] / n,
        "S3 HEAD": total["s3_head"] / n,
        "S3 LIST": total["s3_list"] / n,
        "S3 DELETE": total["s3_delete"] / n,
        "Glue calls": total["glue_calls"] / n,
        "DynamoDB write units": total["dynamodb_wru"] / n,
        "DynamoDB read units": total["dynamodb_rru"] / n,
        "SQS requests": sqs / n,
        "Lambda invocations": total["invocations"] / n,
        "Lambda GB-s": total["handler_ms"] / 1000 * MEMORY_GB / n,
    }
    dollars = {
        "S3 PUT": per["S3 PUT"] * S3_PUT_LIST,
        "S3 GET": per["S3 GET"] * S3_GET,
        "S3 HEAD": per["S3 HEAD"] * S3_GET,
        "S3 LIST": per["S3 LIST"] * S3_PUT_LIST,
        "S3 DELETE": 0.0,
        "Glue calls": per["Glue calls"] * GLUE_REQUEST,
        "DynamoDB write units": per["DynamoDB write units"] * DYNAMODB_WRU,
        "DynamoDB read units": per["DynamoDB read units"] * DYNAMODB_RRU,
        "SQS requests": per["SQS requests"] * SQS_REQUEST,
        "Lambda invocations": per["Lambda invocations"] * LAMBDA_REQUEST,
        "Lambda GB-s": per["Lambda GB-s"] * LAMBDA_GB_S,
    }
    print(f"{n} landing objects (50 sessions together into a dt holding 20), "
          f"{total['invocations']} invocations")
    print("| function | invocations | PUT | GET | HEAD | LIST | DELETE | Glue | "
          "DynamoDB WRU | RRU | handler ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for f in fs:
        print(f"| {f['function']} | {f['invocations']} | {f['s3_put']} | {f['s3_get']} | "
              f"{f['s3_head']} | {f['s3_list']} | {f['s3_delete']} | {f['glue_calls']} | "
              f"{f['dynamodb_wru']} | {f['dynamodb_rru']} | {f['handler_ms']:.0f} |")
    print()
    print("| per landing object | count | $ per million objects | $ per day at 4M |")
    print("|---|---|---|---|")
    for k, v in per.items():
        print(f"| {k} | {v:.2f} | {dollars[k] * 1e6:.2f} | {dollars[k] * PER_DAY:.2f} |")
    per_million = sum(dollars.values()) * 1e6
    per_day = sum(dollars.values()) * PER_DAY
    glue_jobs = GLUE_JOBS * GLUE_DPU * GLUE_HOURS * GLUE_DPU_HOUR
    print(f"| total | | {per_million:.2f} | {per_day:.2f} |")
    print(f"\nthe seeds' five Glue jobs once a day ({GLUE_JOBS} x {GLUE_DPU} DPU x "
          f"{GLUE_HOURS:g} h x ${GLUE_DPU_HOUR}): ${glue_jobs:.2f} a day")
    for k, v in per.items():
        key = k.lower().replace(" ", "_").replace("-", "_")
        print(f"RESULT cost per_object_{key}={v:.3f}")
    print(f"RESULT cost dollars_per_million_objects={per_million:.2f} "
          f"dollars_per_day={per_day:.2f} glue_jobs_dollars_per_day={glue_jobs:.2f}")
    reads = total["s3_get"] + total["s3_head"] + total["s3_list"]
    print(f"RESULT cost s3_get_list_per_object={reads / n:.2f} "
          f"s3_put_per_object={total['s3_put'] / n:.2f}")
    reconcile(out["reconcile_passes"])
    consents(out["consents"])


def consents(phases):
    """What a one-record consent-change file costs with its own event, every function it
    fires included: a sign-up before any session (the LISTs find nothing), a consent from a
    customer whose session landed before it (their phone and Step Trainer files computed
    again, their curated record and ML pair written), and a withdrawal of a customer with
    a session (the same files computed again, their rows deleted). The recheck each change
    sends to the reconcile queue runs in the same drop here and is counted with it. Each
    function's own requests are printed too (JSON), to see where the requests go."""
    print("\n| consent file | files | PUT | GET | LIST | DELETE | Glue | SQS sent | "
          "DynamoDB WRU / RRU | customer function PUT/GET/LIST | "
          "recheck (reconcile) PUT/GET/LIST |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for p in phases:
        fs, n = p["functions"], p["files"]
        tot = {k: sum(f[k] for f in fs) / n for k in
               ["s3_put", "s3_get", "s3_list", "s3_delete", "glue_calls", "sqs_calls",
                "dynamodb_wru", "dynamodb_rru"]}
        c = next(f for f in fs if f["function"] == "customer_landing_to_trusted")
        none = {"s3_put": 0, "s3_get": 0, "s3_list": 0}
        r = next((f for f in fs if f["function"] == "reconcile"), none)
        print(f"| {p['kind']} (per file) | {n} | {tot['s3_put']:.1f} | {tot['s3_get']:.1f} | "
              f"{tot['s3_list']:.1f} | {tot['s3_delete']:.1f} | {tot['glue_calls']:.1f} | "
              f"{tot['sqs_calls']:.1f} | "
              f"{tot['dynamodb_wru']:.1f} / {tot['dynamodb_rru']:.1f} | "
              f"{c['s3_put'] / n:.1f}/{c['s3_get'] / n:.1f}/{c['s3_list'] / n:.1f} | "
              f"{r['s3_put'] / n:.1f}/{r['s3_get'] / n:.1f}/{r['s3_list'] / n:.1f} |")
        for f in fs:
            print(f"  {p['kind']}: {f}")
        print(f"RESULT consent kind={p['kind']} put_per_file={tot['s3_put']:.2f} "
              f"get_per_file={tot['s3_get']:.2f} list_per_file={tot['s3_list']:.2f} "
              f"customer_list_per_file={c['s3_list'] / n:.2f}")


# SCALE.md's launch: 10M registrations (mostly one-record files), 4M reading objects a day.
CUSTOMER_OBJECTS = 10_000_000
# Customer files written a day at launch (sign-ups and profile changes), an assumption:
# 1% of the registrations. The changed pass reads each once (1 GET), not the ones held.
CUSTOMER_PER_DAY = 100_000
# The schedules' defaults: ReconcileSchedule rate(1 day) runs the changed pass,
# ReconcileFullSchedule rate(7 days) the full one.
CHANGED_PER_DAY, FULL_PER_DAY = 1.0, 1 / 7
HOURLY = 24  # what rate(1 hour) of full passes, the default before the recheck, made of it
# Keys a pass lists per object the lake holds, a LIST request per 1,000 (too few keys here
# to show in the counts): each customer landing object; each reading landing object (its
# manifest is an entry of the index table, read by the pass's query: counted in read units).
LISTED_KEYS = {"customer": 1, "reading": 1}


def reconcile(passes):
    """The scheduled reconcile's planning passes over a lake in step, both scopes: their
    requests at three lake sizes, what one more customer or reading object in the lake adds
    to every pass, and what that costs a day at SCALE.md's launch as the lake fills."""
    print("\n| reconcile pass over | customer objects | reading objects | shards | full: items "
          "| GET | LIST | RRU | changed: items | GET | LIST | RRU | changed, everything new: "
          "items | GET | LIST | RRU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, p in zip(["the warm lake", "+ profile files", "+ the sessions"], passes):
        cells = [p["customer_objects"], p["reading_objects"], p["shards"]]
        for k in ["full", "changed", "changed_recent"]:
            sc = p["scopes"][k]
            cells += [sc["items"], sc["s3_get"], sc["s3_list"], sc["dynamodb_rru"]]
        print(f"| {label} | " + " | ".join(str(x) for x in cells) + " |")
    a, b, c = passes
    per = {}
    for scope in ["full", "changed"]:
        for kind in ["s3_get", "s3_put", "dynamodb_rru"]:
            # Every pass reads each customer and device shard once: the shards the new
            # customers of the sessions bring into being are taken out of what the reading
            # objects add (at launch every shard exists already).
            at = lambda p: p["scopes"][scope][kind] - (p["shards"] if kind == "s3_get" else 0)
            per[(scope, "customer", kind)] = (at(b) - at(a)) / (
                b["customer_objects"] - a["customer_objects"])
            per[(scope, "reading", kind)] = (at(c) - at(b)) / (
                c["reading_objects"] - b["reading_objects"])
        for who in ["customer", "reading"]:
            per[(scope, who, "s3_list")] = LISTED_KEYS[who] / 1000
            print(f"RESULT reconcile {scope} per_{who}_object_get="
                  f"{per[(scope, who, 's3_get')]:.3f} put={per[(scope, who, 's3_put')]:.3f} "
                  f"dynamodb_rru={per[(scope, who, 'dynamodb_rru')]:.3f}")
    # What each manifest written since the last pass adds to a changed pass (it is read):
    # the same lake with every customer file and manifest new, against none (each new
    # customer file is read once: 1 GET, taken out here and counted per day below).
    recent = (c["scopes"]["changed_recent"]["s3_get"] - c["scopes"]["changed"]["s3_get"]
              - c["customer_objects"]) / c["reading_objects"]
    print(f"RESULT reconcile changed per_new_reading_object_get={recent:.3f}")
    price = {"s3_get": S3_GET, "s3_list": S3_PUT_LIST, "s3_put": S3_PUT_LIST,
             "dynamodb_rru": DYNAMODB_RRU}

    def pass_cost(scope, day):
        held = {"customer": CUSTOMER_OBJECTS, "reading": PER_DAY * day}
        return sum(per[(scope, who, k)] * held[who] * price[k] for who in held for k in price)

    def changed_cost(day):
        # A day's new reading objects' manifests and new customer files are read by the
        # next changed pass.
        return pass_cost("changed", day) + (PER_DAY * recent + CUSTOMER_PER_DAY) * S3_GET

    def per_day(day):
        return CHANGED_PER_DAY * changed_cost(day) + FULL_PER_DAY * pass_cost("full", day)

    daily_full = {d: pass_cost("full", d) for d in (1, 30, 365)}
    print(f"each pass lists every landing object again and reads every reading file's "
          f"manifest (a query of the index table): {CUSTOMER_OBJECTS:,} customer objects and "
          f"{PER_DAY:,} reading objects "
          f"more each day; a changed pass (holding the day's new manifests against the objects) "
          f"${changed_cost(1):.2f} on day 1, "
          f"${changed_cost(30):.2f} on day 30, ${changed_cost(365):.2f} on "
          f"day 365; a full pass ${daily_full[1]:.2f}, ${daily_full[30]:.2f}, "
          f"${daily_full[365]:.2f}. At the schedules' defaults (changed daily, full weekly): "
          f"${per_day(1):.2f} a day on day 1, ${per_day(30):.2f} on day 30, "
          f"${per_day(365):.2f} on day 365 (a full pass daily: ${daily_full[30]:.2f} on day 30, "
          f"${daily_full[365]:.2f} on day 365; hourly: ${HOURLY * daily_full[30]:.2f} on day 30)")
    print(f"RESULT reconcile dollars_per_day_day1={per_day(1):.2f} "
          f"dollars_per_day_day30={per_day(30):.2f} dollars_per_day_day365={per_day(365):.2f} "
          f"daily_full_dollars_per_day_day30={daily_full[30]:.2f} "
          f"daily_full_dollars_per_day_day365={daily_full[365]:.2f} "
          f"hourly_full_dollars_per_day_day30={HOURLY * daily_full[30]:.2f}")


def issue_pattern():
    """The arrival the request issue was measured on: the sample's phone lines cut into 91
    files of 900 lines for one `dt`; the customers, 30 phone files and the Step Trainer
    files first; then the other 61 phone files uploaded together. Requests of every
    function the 61 fire, per landing object: at the default `CUSTOMER_SHARDS` (256: a
    shard per two of the sample's 482 consenting customers, so a file of ~100 users reads
    ~100 shards), then at the count a reconcile planning pass of that lake advises."""
    advised = None
    for shards in (None, "advised"):
        env_shards = {"CUSTOMER_SHARDS": "256" if shards is None else str(advised)}
        with local_stack() as env:
            env = dict(env, **env_shards)
            lines, _, _ = run(["fill-dt", "--lines", "900", "--first", "30", "--together"], env)
            if shards is None:
                plan, _, _ = run(["plan"], env)
                advised = plan[-1]["advised_shards"]
        line = lines[-1]
        n, r = line["files"], line["requests"]
        count = env_shards["CUSTOMER_SHARDS"] + (" (default)" if shards is None else "")
        print(f"\nthe issue's arrival at CUSTOMER_SHARDS={count}: {n} phone files of 900 lines "
              f"together into a dt holding 30 (all functions): PUT {r['put']}, GET {r['get']}, "
              f"LIST {r['list']}, DELETE {r['delete']}, Glue {r['glue']}, DynamoDB WRU "
              f"{r['wru']} / RRU {r['rru']}")
        by_function = sorted((k, v) for k, v in line.items()
                             if isinstance(v, dict) and "get" in v and k != "requests")
        print("  by function (GET / LIST / PUT): " + ", ".join(
            f"{k} {v['get']} / {v['list']} / {v['put']}" for k, v in by_function))
        label = "default" if shards is None else "advised"
        print(f"RESULT cost issue_pattern shards={label} customer_shards={count.split()[0]} "
              f"files={n} s3_put_per_object={r['put'] / n:.2f} "
              f"s3_get_list_per_object={(r['get'] + r['list']) / n:.2f} "
              f"glue_per_object={r['glue'] / n:.2f} dynamodb_wru_per_object={r['wru'] / n:.2f} "
              f"dynamodb_rru_per_object={r['rru'] / n:.2f}")
        if advised is None:
            print("(the plan advised no other count)")
            return


if __name__ == "__main__":
    main()
    issue_pattern()
