"""Chapter 13's checks draw random workloads; each draw must still hold the
case that exposes every wrong solution in tests/mutants/ch13.py."""
import random

from ebpf_tutor.labs.checks import ch13


def draws(n=300):
    return [random.Random(seed) for seed in range(n)]


def test_13_1_plan_has_batches_failures_and_successes():
    for rng in draws():
        names = ["a", "b", "c"]
        first, second, expected = ch13._plan_13_1(rng, names)
        per_name = {n: sum(1 for m, _ in first if m == n) for n in names}
        assert min(per_name.values()) >= 3                 # several per batch: the batch mutant
        assert expected["a"]["failures"] == 0
        assert expected["b"]["failures"] == expected["b"]["exits"]
        assert {c for m, c in first + second if m == "b"} - {0, 1}   # never status 1 only
        assert 0 < expected["c"]["failures"] < expected["c"]["exits"]
        assert second                                      # a live round after the start


def test_13_2_sizes_expose_max_and_slots():
    for rng in draws():
        sizes = ch13.random_sizes(rng, rng.randint(4, 12))
        assert sizes[-1] < max(sizes)                      # "max = last write" fails
        assert any(s & (s - 1) == 0 and s > 1 for s in sizes)
        assert min(sizes) >= 1


def test_13_3_sizes_hold_an_exact_power_of_two():
    for rng in draws():
        sizes = ch13.edge_sizes(rng, rng.randint(6, 12))
        assert any(s & (s - 1) == 0 for s in sizes)        # BCC's log2 bucket is off there
        assert min(sizes) >= 1


def test_expected_row_uses_bcc_slots():
    assert ch13.expected_row([1, 2, 3, 4, 1024]) == {
        "calls": 5, "bytes": 1034, "max": 1024, "hist": {1: 1, 2: 2, 3: 1, 11: 1}}


def test_13_3_reads_one_commands_series_from_the_text_format():
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    class Two:
        def collect(self):
            calls = CounterMetricFamily("ebpf_write_calls", "c", labels=["comm"])
            nbytes = CounterMetricFamily("ebpf_write_bytes", "b", labels=["comm"])
            sizes = HistogramMetricFamily("ebpf_write_size_bytes", "s", labels=["comm"])
            for comm, n in [("a", 3), ("b", 9)]:
                calls.add_metric([comm], n)
                nbytes.add_metric([comm], 10 * n)
                sizes.add_metric([comm], [("1", 1), ("2", n), ("+Inf", n)], sum_value=10 * n)
            yield from (calls, nbytes, sizes)

    reg = CollectorRegistry()
    reg.register(Two())
    series = ch13._from_text(generate_latest(reg).decode(), "a", "13.3")
    assert series == {"calls": 3, "bytes": 30, "buckets": {1.0: 1, 2.0: 3, float("inf"): 3},
                      "count": 3, "sum": 30}
    assert ch13._from_text("", "a", "13.3")["calls"] is None
