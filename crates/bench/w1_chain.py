"""Splits W1's path on two nodes into its steps, from the scheduler's wakeups.

While `roomstate-bench run --workloads w1 --systems rs-2nodes` is in its N=1 step (the
first ten seconds after the servers start), record every CPU's wakeups, then read them:

    perf sched record -a -o sched.data -- sleep 4
    perf sched timehist -i sched.data -w > timehist.txt
    python3 crates/bench/w1_chain.py timehist.txt BENCH_PID NODE1_PID NODE2_PID REDIS_PID

NODE1 is the node the writer is on (the first `roomstate serve` the bench starts). For
each write it follows: the bench wakes node 1, node 1 wakes Redis, Redis wakes node 1
(its reply, or its own published entry), Redis wakes node 2 (the published entry), node 2 wakes the bench (the
observer's frame), and prints the median and spread of each step.
"""
import re
import statistics
import sys

WAKEUP = re.compile(r"\s*(\d+\.\d+)\s+\[\d+\]\s+(\S+)\s+awakened: (\S+)")


def main(path, bench, node1, node2, redis):
    pids = {"bench": bench, "node1": node1, "node2": node2, "redis": redis}

    def who(task):
        # perf names a task `comm[tid/pid]`, or `comm[pid]` for a process' main thread.
        ids = task[task.rfind("[") + 1 : -1].split("/")
        return next((name for name, pid in pids.items() if pid == ids[-1]), None)

    wakeups = []
    for line in open(path):
        match = WAKEUP.match(line)
        if match:
            wakeups.append((float(match.group(1)), who(match.group(2)), who(match.group(3))))

    def first(steps, waker, woken, after):
        return next(t for t, a, b in steps if a == waker and b == woken and t > after)

    writes = []
    starts = [i for i, (_, a, b) in enumerate(wakeups) if (a, b) == ("bench", "node1")]
    for start, end in zip(starts, starts[1:] + [len(wakeups)]):
        sent = wakeups[start][0]
        steps = wakeups[start + 1 : end]
        try:
            to_redis = first(steps, "node1", "redis", sent)
            reply = first(steps, "redis", "node1", to_redis)
            published = first(steps, "redis", "node2", to_redis)
            delivered = first(steps, "node2", "bench", published)
        except StopIteration:
            continue
        writes.append(
            (to_redis - sent, reply - to_redis, published - reply, delivered - published, delivered - sent)
        )
    names = [
        "node 1: from the write to its call to Redis",
        "Redis: until it first wakes node 1",
        "node 1 first: until Redis writes to node 2",
        "node 2: until it writes to the observer",
        "in all",
    ]
    print(f"{len(writes)} writes")
    if not writes:
        sys.exit("no write's wakeups found: were the pids right, and was W1 at N=1?")
    for k, name in enumerate(names):
        values = sorted(w[k] * 1e6 for w in writes)
        p10, p90 = values[len(values) // 10], values[9 * len(values) // 10]
        print(f"{name:46s} p50 {statistics.median(values):5.0f} µs  (p10 {p10:5.0f}, p90 {p90:5.0f})")


if __name__ == "__main__":
    main(*sys.argv[1:6])
