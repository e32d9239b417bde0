"""segstream end to end over SASL_SSL (SCRAM-SHA-512) and rediss with an ACL user, with
secrets in its settings: the state is exact, and no secret appears in anything it shows or writes.

The services are ``segstream services up --secure`` (devstack): tansu behind the TLS + SCRAM
gateway, redis-server with ``--tls-port`` and the least-privilege ACL users, a throwaway CA.
The settings carry the passwords themselves (``SEGSTREAM_KAFKA_SASL_PASSWORD`` and the password
inside ``SEGSTREAM_REDIS_URL``), the riskiest way to give them, so that any path that prints a
setting or a URL would leak them into the outputs the test collects.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from devstack.certs import issue_local_certs
from devstack.services import LocalServices, local_services
from schemas import encode
from segstream.security import kafka_options, read_secret
from segstream.settings import Settings
from tests.support.state_checks import (
    AS_OF,
    assert_same_state,
    oracle_rows,
    redis_rows,
    wait_drained,
)
from tests.support.synthetic import dataset
from tests.support.waiting import wait_for
from tests.support.worker_process import REPO, WorkerProcess
from worker.connect import sync_redis
from worker.state import keys

pytestmark = pytest.mark.integration

PREFIX = "sec"


@pytest.fixture(scope="module")
def secure_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``services up --secure``; yields the client settings ``services env`` would print."""
    run = tmp_path_factory.mktemp("secure-run")
    with local_services(run, secure=True, prefix=PREFIX):
        yield LocalServices(run).client_settings()


def with_inline_secrets(client: dict[str, str], tmp_path: Path) -> tuple[Settings, list[str]]:
    """Settings with the passwords in the settings themselves; (settings, the secrets)."""
    kafka_pw = read_secret(client["kafka_sasl_password_file"], "kafka")
    redis_pw = read_secret(client["redis_password_file"], "redis")
    url = client["redis_url"].replace("rediss://segstream@", f"rediss://segstream:{redis_pw}@")
    flat = {k: v for k, v in client.items() if not k.endswith("password_file")}
    settings = Settings.of(**flat).with_(
        kafka_sasl_password=kafka_pw,
        redis_url=url,
        redis_prefix=PREFIX,
        run_dir=str(tmp_path / "run"),
        model_dir=str(tmp_path / "models"),
        report_dir=str(tmp_path / "report"),
        report_as_of=AS_OF.isoformat(),
        scoring_as_of=AS_OF.isoformat(),
        session_timeout_s=6.0,
        model_poll_s=0.5,
        dirty_repair_s=2.0,
    )
    return settings, [kafka_pw, redis_pw]


def with_topics(settings: Settings, tag: str) -> Settings:
    """Topics of this test's own, created over SASL_SSL."""
    names = {
        "orders_topic": (f"orders-{tag}", 4),
        "clicks_topic": (f"clicks-{tag}", 4),
        "dead_letter_topic": (f"dead-letter-{tag}", 1),
        "segment_changes_topic": (f"segment-changes-{tag}", 4),
        "control_topic": (f"control-{tag}", 1),
        "erase_requests_topic": (f"erase-requests-{tag}", 1),
    }
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap, **kafka_options(settings.kafka)
    )
    try:
        admin.create_topics([NewTopic(n, p, 1) for n, p in names.values()])
    finally:
        admin.close()
    return settings.with_(group_id=f"g-{tag}", **{k: n for k, (n, _) in names.items()})


class Outputs:
    """Everything the commands printed, kept to be searched for secrets."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def run(
        self, settings: Settings, *args: str, ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "segstream", *args],
            env=settings.to_env(), cwd=REPO, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        self.texts.append((" ".join(args), done.stdout + done.stderr))
        if ok:
            assert done.returncode == 0, f"segstream {' '.join(args)}:\n{done.stderr[-3000:]}"
        return done

    def get(self, url: str) -> str:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                text: str = resp.read().decode()
        except urllib.error.HTTPError as exc:  # /health/ready may say 503: its body counts too
            text = str(exc.read().decode())
        self.texts.append((url, text))
        return text


def segments(settings: Settings) -> dict[str, dict[str, str]]:
    with sync_redis(settings.redis, decode_responses=True) as client:
        out = {}
        for key in client.scan_iter(match=keys.customer_pattern(PREFIX), count=1000):
            seg, version = client.hmget(key, ["segment", "model_version"])
            out[keys.customer_id_of(PREFIX, key)] = {"segment": seg, "model_version": version}
        return out


def test_every_command_over_sasl_ssl_and_rediss_is_exact_and_leaks_no_secret(
    secure_services: dict[str, str], tmp_path: Path
) -> None:
    settings, secrets = with_inline_secrets(secure_services, tmp_path)
    s = with_topics(settings, "e2e")
    out = Outputs()

    events = dataset(80, 400, 150, seed=5)
    feed = tmp_path / "events.jsonl"
    feed.write_bytes(b"".join(encode(ev) + b"\n" for ev in events))
    worker = WorkerProcess(s, tmp_path / "logs", "secure-worker")
    try:
        out.run(s, "replay", "--file", str(feed), "--format", "jsonl")
        wait_drained(s, len(events), worker)
        assert_same_state(redis_rows(s), oracle_rows(events))

        wait_for(
            lambda: (segs := segments(s)) and all(v["segment"] for v in segs.values()),
            90,
            "every customer scored over rediss",
        )
        out.run(
            s, "train", "--from", "redis", "--k", "3", "--seed", "1", "--as-of", AS_OF.isoformat()
        )
        out.run(s, "rescore")
        wait_for(
            lambda: (
                {v["model_version"] for v in segments(s).values()} - {"rules-v1"}
                and all(v["model_version"].startswith("km-") for v in segments(s).values())
            ),
            120,
            "every customer rescored onto the trained model",
        )
        export = tmp_path / "export.jsonl"
        out.run(
            s, "export", "--format", "jsonl", "--out", str(export), "--as-of", AS_OF.isoformat()
        )
        rows = [json.loads(line) for line in export.read_text().splitlines()]
        assert {r["customer_id"] for r in rows} == set(oracle_rows(events))
        assert all(r["segment"] and r["model_version"].startswith("km-") for r in rows)
        out.run(s, "report")
        assert (tmp_path / "report" / "index.html").exists() or any(
            (tmp_path / "report").glob("*.html")
        )
        out.run(s, "customer", rows[0]["customer_id"], "--json")
        base = f"http://127.0.0.1:{worker.settings.web_port}"
        for page in ("/health", "/health/live", "/health/ready", "/metrics", "/scoring"):
            out.get(base + page)
        assert worker.alive, worker.tail()
    finally:
        worker.stop()
    out.texts.append(("worker log", worker.log_path.read_text(errors="replace")))

    # a wrong password and an untrusted CA: one line, exit 1, within seconds, no secret
    wrong = s.with_(kafka_sasl_password="wrong-password-0f3b")
    started = time.monotonic()
    failed = out.run(wrong, "replay", "--file", str(feed), "--format", "jsonl", ok=False)
    assert failed.returncode == 1 and time.monotonic() - started < 30
    assert_one_error_line(failed.stderr, "refused the SCRAM-SHA-512 login")
    assert "wrong-password-0f3b" not in failed.stderr
    other_ca = issue_local_certs(tmp_path / "other-ca").ca
    started = time.monotonic()
    untrusted = out.run(s.with_(kafka_ssl_cafile=str(other_ca)), "rescore", ok=False)
    assert untrusted.returncode == 1 and time.monotonic() - started < 30
    assert_one_error_line(untrusted.stderr, "TLS to Kafka")

    leaks = [
        (where, secret)
        for where, text in [*out.texts, *files_written(tmp_path)]
        for secret in secrets
        if secret in text
    ]
    assert not leaks, f"secrets found in: {sorted({w for w, _ in leaks})}"


def assert_one_error_line(stderr: str, needle: str) -> None:
    assert "Traceback" not in stderr, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("segstream: error:")]
    assert len(errors) == 1 and needle in errors[0], stderr[-2000:]


def files_written(root: Path) -> Iterator[tuple[str, str]]:
    """Every file segstream wrote under ``root`` (report, export, models, run dir, logs)."""
    for path in root.rglob("*"):
        if path.is_file() and path.name != "events.jsonl":
            yield str(path.relative_to(root)), path.read_bytes().decode("utf-8", errors="replace")
