"""`make bench-compact`: object count and query time before and after compaction.

Generates the sample N-fold (default N=10, `BENCH_COMPACT_N`; `stedi-bench gen`, release),
starts its own moto_server and stack, and runs `stedi-scale compact`: customers, the phone
lines cut into files of 900 lines, the Step Trainer files, all through the event path; then
per partitioned table the objects at its partition locations and a full-table `count(*)`
through `stedi query` (median of 3), before and after `stedi compact --force`. Prints a
table and RESULT lines. Debug build of the probe by default (CARGO_PROFILE=release)."""
import os

import run
from scale import local_stack, run as scale_run

N = int(os.environ.get("BENCH_COMPACT_N", "10"))


def main():
    data = run.generated(N)
    with local_stack() as env:
        lines, _, secs = scale_run(["compact", "--data", data, "--lines", "900"], env)
    phases = {l["phase"]: l for l in lines if l["phase"] in ("drop", "compact")}
    rows = [l for l in lines if l["phase"] in ("before", "after")]
    print(f"N={N}: drop {phases['drop']['wall_ms'] / 1000:.0f} s, "
          f"compaction {phases['compact']['wall_ms'] / 1000:.1f} s")
    for line in phases["compact"]["report"]:
        print("  " + line)
    print(f"{'table':<26} {'objects before':>14} {'after':>6} {'rows':>9} "
          f"{'count(*) ms before':>19} {'after':>7}")
    by = {(l["phase"], l["table"]): l for l in rows}
    for table in dict.fromkeys(l["table"] for l in rows):
        b, a = by[("before", table)], by[("after", table)]
        assert a["rows"] == b["rows"], f"{table}: {b['rows']} rows before, {a['rows']} after"
        print(f"{table:<26} {b['objects']:>14} {a['objects']:>6} {a['rows']:>9} "
              f"{b['query_ms']:>19.0f} {a['query_ms']:>7.0f}")
        print(f"RESULT compact n={N} table={table} objects_before={b['objects']} "
              f"objects_after={a['objects']} rows={a['rows']} query_ms_before={b['query_ms']:.0f} "
              f"query_ms_after={a['query_ms']:.0f} speedup={b['query_ms'] / a['query_ms']:.2f}")


if __name__ == "__main__":
    main()
