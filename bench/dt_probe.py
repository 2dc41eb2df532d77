"""`make bench-dt`: SCALE.md's one-`dt` probe (issue: ML per arrival).

Starts its own moto_server, bootstraps a stack, and runs `stedi-scale fill-dt` through the
event path: the sample's customers, its phone lines cut into 91 files of 900 lines (the
first 30 dropped together), its three Step Trainer files, then the other 61 phone files one
at a time. Prints, per measured arrival, the rows the ML function wrote and the handler
time, and RESULT lines comparing the first and the last ten arrivals (medians).

Then the same `dt` filling up with SQS batch objects (`stedi-scale fill-batches`): rounds
of 50 sessions of consenting customers (a phone and a Step Trainer file each, one device)
uploaded together, so each side of a round is one batch object of 50 devices. Prints the
ML function's requests and bytes read per round, and RESULT lines comparing the first and
the last three rounds (medians). Debug builds by default (CARGO_PROFILE=release for
release numbers); ML_WIDE_SERIALS in the environment reaches the functions."""
import statistics

from scale import local_stack, run

ML = "machine_learning_trusted_to_curated"


def main():
    with local_stack() as env:
        lines, _, secs = run(["fill-dt", "--lines", "900", "--first", "30"], env)
    print(f"{len(lines)} arrivals measured in {secs:.0f} s")
    print("arrival  ML rows written  ML handler ms  all handlers ms  GET  LIST  PUT  Glue")
    for l in lines:
        ml = l.get(ML, {"rows_out": 0, "handler_ms": 0.0})
        total_ms = sum(v["handler_ms"] for k, v in l.items() if isinstance(v, dict) and "handler_ms" in v)
        r = l["requests"]
        print(f"{l['arrival']:>7} {ml['rows_out']:>16} {ml['handler_ms']:>14.0f} {total_ms:>16.0f} "
              f"{r['get']:>4} {r['list']:>5} {r['put']:>4} {r['glue']:>5}")

    def med(part, f):
        return statistics.median(f(l) for l in part)

    first, last = lines[:10], lines[-10:]
    for name, f in [
        ("ml_rows", lambda l: l.get(ML, {}).get("rows_out", 0)),
        ("ml_ms", lambda l: l.get(ML, {}).get("handler_ms", 0.0)),
        ("all_ms", lambda l: sum(v["handler_ms"] for v in l.values()
                                 if isinstance(v, dict) and "handler_ms" in v)),
        ("get", lambda l: l["requests"]["get"]),
        ("list", lambda l: l["requests"]["list"]),
    ]:
        a, b = med(first, f), med(last, f)
        print(f"RESULT dt_probe {name}_first10={a:.0f} {name}_last10={b:.0f} "
              f"ratio={(b / a if a else float('nan')):.2f}")
    batches()


def batches():
    with local_stack() as env:
        rounds, _, secs = run(["fill-batches", "--rounds", "12", "--sessions", "50"], env)
    print(f"\n{len(rounds)} rounds of 50 sessions measured in {secs:.0f} s")
    print("round  ML GET  ML LIST  ML PUT  ML KiB read  ML handler ms  all GET  all LIST  all PUT")
    for l in rounds:
        ml, r = l.get(ML, {}), l["requests"]
        print(f"{l['arrival']:>5} {ml.get('get', 0):>7} {ml.get('list', 0):>8} "
              f"{ml.get('put', 0):>7} {ml.get('bytes_read', 0) / 1024:>12.0f} "
              f"{ml.get('handler_ms', 0.0):>14.0f} {r['get']:>8} {r['list']:>9} {r['put']:>8}")
    # Round 1 registers the dt's partitions; compare rounds 2-4 with the last three.
    first, last = rounds[1:4], rounds[-3:]
    for name, f in [
        ("ml_get", lambda l: l.get(ML, {}).get("get", 0)),
        ("ml_list", lambda l: l.get(ML, {}).get("list", 0)),
        ("ml_kib_read", lambda l: l.get(ML, {}).get("bytes_read", 0) / 1024),
        ("ml_ms", lambda l: l.get(ML, {}).get("handler_ms", 0.0)),
        ("all_get", lambda l: l["requests"]["get"]),
    ]:
        a = statistics.median(f(l) for l in first)
        b = statistics.median(f(l) for l in last)
        print(f"RESULT dt_batches {name}_rounds2to4={a:.0f} {name}_last3={b:.0f} "
              f"ratio={(b / a if a else float('nan')):.2f}")


if __name__ == "__main__":
    main()
