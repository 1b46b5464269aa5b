"""`make bench` / `python -m bench`: failover, switchover, health-check and footprint benchmarks of haven (and,
with BENCH_PATRONI=/path/to/patroni, of Patroni configured the same way) on 3-node clusters with a real etcd.

These are benchmarks, not tests: they print min/median/max next to the project's targets and write JSON; they
fail (exit 1) only when a scenario could not run to the end. Everything is started on free loopback ports and
stopped by pid; temporary directories are removed unless HAVEN_KEEP_TEST_DIRS=1.
"""
