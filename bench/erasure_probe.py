"""`make bench-erasure`: what one erasure reads and writes on N-fold data.

Generates the sample N-fold (default N=10, `BENCH_ERASURE_N`; `stedi-bench gen`, release),
starts its own moto_server and stack, and runs `stedi-scale erase`: customers, the phone
lines ordered by person and the Step Trainer lines by serial, each cut into files of 900
lines (per-session shaped: few people or devices a file), all through the event path, a
compaction, then the erasure of the first consenting customer with phone readings, counted
request by request. Prints the requests, the objects rewritten and deleted, the rows
removed per table, and RESULT lines."""
import os

import run
from scale import local_stack, run as scale_run

N = int(os.environ.get("BENCH_ERASURE_N", "10"))


def main():
    data = run.generated(N)
    with local_stack() as env:
        lines, _, _ = scale_run(["erase", "--data", data, "--lines", "900"], env)
    drop = next(l for l in lines if l["phase"] == "drop")
    erase = next(l for l in lines if l["phase"] == "erase")
    r, audit = erase["requests"], erase["audit"]
    print(f"N={N}: {drop['landing_objects']} landing objects, {drop['objects']} objects in "
          f"the bucket; drop {drop['wall_ms'] / 1000:.0f} s")
    print(f"one erasure: {erase['wall_ms'] / 1000:.1f} s; S3 GET {r['s3_get']}, "
          f"PUT {r['s3_put']}, LIST {r['s3_list']}, DELETE {r['s3_delete']}; Glue "
          f"{r['glue_calls']}; {r['bytes_read']} bytes read, {r['bytes_written']} written")
    print(f"objects rewritten {len(audit['objects_rewritten'])}, deleted "
          f"{len(audit['objects_deleted'])}, versions deleted {audit['versions_deleted']}")
    for table, n in sorted(audit["rows_removed"].items()):
        print(f"  {table:<26} {n:>6} rows removed")
    print(f"RESULT erasure n={N} objects={drop['objects']} s3_get={r['s3_get']} "
          f"s3_put={r['s3_put']} s3_list={r['s3_list']} s3_delete={r['s3_delete']} "
          f"rewritten={len(audit['objects_rewritten'])} deleted={len(audit['objects_deleted'])} "
          f"ms={erase['wall_ms']:.0f}")


if __name__ == "__main__":
    main()
