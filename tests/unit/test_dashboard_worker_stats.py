"""The worker's figures as the dashboard reads them from /metrics and /scoring."""

from __future__ import annotations

from dashboard import prometheus
from dashboard.cli import worker_url_of
from dashboard.worker_stats import WorkerStats
from segstream.settings import Settings

METRICS = """\
# HELP segstream_ingest_state What ingestion is doing now.
# TYPE segstream_ingest_state gauge
segstream_ingest_state{state="running"} 1
# TYPE segstream_ingest_records_total counter
segstream_ingest_records_total{outcome="valid"} 90
segstream_ingest_records_total{outcome="dead_lettered"} 10
segstream_ingest_dead_letters_total{reason="malformed"} 7
segstream_ingest_dead_letters_total{reason="invalid"} 3
segstream_ingest_dead_letters_total{reason="oversize"} 0
segstream_ingest_lag_records{topic="orders",partition="0"} 5
segstream_ingest_lag_records{topic="clicks",partition="1"} 7
segstream_state_counter_total{name="received"} RECEIVED
segstream_state_counter_total{name="dead_lettered"} 12
segstream_scoring_model_info{version="km-abc"} 1
segstream_scoring_drift_max 0.25
segstream_scoring_drift_mean 0.125
segstream_scoring_drift_bound 0.5
segstream_scoring_drift_exceeded 0
segstream_scoring_segment_drift{segment="loyal"} 0.25
segstream_scoring_segment_drift{segment="a \\"quoted\\" name"} 0.0
"""


def metrics(received: int) -> prometheus.Samples:
    return prometheus.parse(METRICS.replace("RECEIVED", str(received)))


def test_the_parser_reads_labels_escapes_and_skips_comments_and_junk() -> None:
    samples = prometheus.parse(METRICS.replace("RECEIVED", "1e3") + 'garbage line\nx{a="1"} ?\n')
    assert prometheus.value(samples, "segstream_state_counter_total", name="received") == 1000
    assert prometheus.total(samples, "segstream_ingest_lag_records") == 12
    assert prometheus.total(samples, "segstream_ingest_lag_records", topic="orders") == 5
    drift = samples["segstream_scoring_segment_drift"]
    assert drift[1][0] == {"segment": 'a "quoted" name'}
    assert "garbage" not in samples and "x" not in samples
    assert prometheus.value(samples, "missing") is None
    assert prometheus.total(samples, "missing") is None


def test_events_per_second_is_the_group_counter_rate_over_the_window() -> None:
    stats = WorkerStats("http://127.0.0.1:6066")
    stats.observe(100.0, metrics(1000), None)
    assert stats.events_per_s is None  # one sample: no rate yet
    for k in range(1, 11):
        stats.observe(100.0 + k, metrics(1000 + 200 * k), None)
    assert stats.events_per_s == 200.0
    view = stats.view()
    assert view["received"] == 3000 and view["lag"] == 12 and view["dead_letters"] == 12
    assert view["dead_letters_by_reason"] == {"malformed": 7, "invalid": 3}
    assert view["state"] == "running" and view["model_version"] == "km-abc"
    assert view["drift"] == {
        "segments": {"loyal": 0.25, 'a "quoted" name': 0.0},
        "bound": 0.5, "max": 0.25, "mean": 0.125, "exceeded": False,
    }  # fmt: skip
    assert len(view["history"]["t"]) == 11 and view["history"]["events_per_s"][-1] == 200.0


def test_a_restarted_worker_restarts_the_rate_instead_of_going_negative() -> None:
    stats = WorkerStats("http://w")
    stats.observe(0.0, metrics(5000), None)
    stats.observe(1.0, metrics(5100), None)
    stats.observe(2.0, metrics(40), None)
    assert stats.events_per_s is None
    stats.observe(3.0, metrics(140), None)
    assert stats.events_per_s == 100.0


def test_an_unreachable_worker_leaves_a_gap_and_a_redacted_reason() -> None:
    stats = WorkerStats("http://user:secret@worker:6066")
    stats.observe(0.0, metrics(10), {"model_version": "km-x", "drift_exceeded": True})
    stats.unreachable(1.0, "ClientConnectorError: http://user:secret@worker:6066 refused")
    view = stats.view()
    assert view["url"] == "http://user:***@worker:6066"
    assert not view["reachable"] and "secret" not in (view["error"] or "")
    assert view["history"]["lag"] == [12, None]
    assert view["model_version"] == "km-x" and view["drift"]["exceeded"] is True


def test_without_the_group_counters_the_process_counters_are_used() -> None:
    text = "\n".join(
        line for line in METRICS.splitlines() if "segstream_state_counter_total" not in line
    )
    stats = WorkerStats("http://w")
    stats.observe(0.0, prometheus.parse(text), None)
    assert stats.received == 100 and stats.dead_letters == 10


def test_the_worker_url_defaults_to_its_web_pages_on_a_dialable_address() -> None:
    assert worker_url_of(Settings.of(web_port=7001)) == "http://127.0.0.1:7001"
    assert worker_url_of(Settings.of(web_host="0.0.0.0", web_port=7)) == "http://127.0.0.1:7"
    assert worker_url_of(Settings.of(web_host="::1", web_port=7)) == "http://[::1]:7"
    given = Settings.of(dashboard_worker_url="http://w:1")
    assert worker_url_of(given) == "http://w:1"
