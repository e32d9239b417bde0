"""The report end to end: built by ``segstream report`` from real Redis state, a model artifact
and a real segment-changes topic, then rendered in headless Chromium with no broken image.

Chromium comes from the Debian package ``chromium``; the session fixture installs it where it
is missing and we are root (``apt-get install -y chromium``, with ``apt-get update`` first only
if that fails), the same step ``./dev test`` takes.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from analytics.composition import Composition
from analytics.report.builder import REPORT_FILE, SECTIONS, build_report
from analytics.report.sample import sample_inputs
from schemas import SegmentChange, encode
from segstream.cli import main
from segstream.settings import Settings
from tests.support.browser import PLAYWRIGHT_ARGS, chromium_path
from worker.core.attributes import (
    PROFILE_FIELDS,
    PROFILE_TIMES_FIELD,
    SUMMARY_FIELDS,
    encode_times,
)
from worker.core.rfm import HASH_FIELDS
from worker.state import keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Where the composition section's screenshot is copied, to look at after the run.
COMPOSITION_SHOT = Path("/tmp/report_composition.png")

AS_OF = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
    # Lets the page's load handler run before the DOM is dumped or the screenshot taken.
    "--virtual-time-budget=10000",
)  # fmt: skip


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a headless-capable Chromium, installed from Debian packages where missing."""
    try:
        return chromium_path()
    except AssertionError as exc:
        pytest.fail(str(exc))


def _run_chromium(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"chromium-profile-{len(list(tmp.glob('chromium-profile-*')))}"
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-3000:]}"
    return done


def _rendered(chromium: str, html: Path, tmp: Path) -> tuple[str, dict[str, str], list[str]]:
    """(DOM after load, <body> attributes, the <img> tags marked broken by the page script)."""
    dom = _run_chromium(chromium, tmp, "--dump-dom", html.resolve().as_uri()).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    broken = [tag for tag in re.findall(r"<img[^>]*>", dom) if "data-broken" in tag]
    return dom, attrs, broken


def _assert_loads_without_broken_images(chromium: str, html: Path, tmp: Path) -> str:
    dom, body, broken = _rendered(chromium, html, tmp)
    assert body.get("data-loaded") == "1", "the page's load event never fired"
    assert body.get("data-broken-images") == "0", f"{len(broken)} broken images"
    assert broken == []
    return dom


def _screenshot(chromium: str, html: Path, tmp: Path, png: Path) -> np.ndarray:
    _run_chromium(
        chromium, tmp, f"--screenshot={png}", "--window-size=1280,3000", html.resolve().as_uri()
    )
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (3000, 1280)
    assert pixels.var() > 0
    return pixels


def test_report_renders_in_headless_chromium(chromium: str, tmp_path: Path) -> None:
    state, model, changes = sample_inputs(n=400, seed=7, as_of=AS_OF)
    html = build_report(state, model, changes, tmp_path / "report", AS_OF)
    dom = _assert_loads_without_broken_images(chromium, html, tmp_path)
    assert len(re.findall(r"<img ", dom)) == 18
    for section in SECTIONS:
        assert f'id="{section}"' in dom
    shot = _screenshot(chromium, html, tmp_path, tmp_path / "report.png")
    # The header band is the report's dark blue, i.e. the stylesheet applied.
    assert np.allclose(shot[10, 10], [0x1F, 0x3B, 0x5A], atol=3)


def test_broken_image_is_detected(chromium: str, tmp_path: Path) -> None:
    """The check above can fail: a report with one corrupt image is reported as broken."""
    state, model, changes = sample_inputs(n=120, seed=5, as_of=AS_OF)
    html = build_report(state, model, changes, tmp_path / "report", AS_OF)
    page = html.read_text(encoding="utf-8")
    corrupt = base64.b64encode(b"this is not a PNG at all" * 4).decode()
    page = re.sub(
        r"data:image/png;base64,[^\"]+", f"data:image/png;base64,{corrupt}", page, count=1
    )
    html.write_text(page, encoding="utf-8")
    _, body, broken = _rendered(chromium, html, tmp_path)
    assert body.get("data-loaded") == "1"
    assert body.get("data-broken-images") == "1"
    assert len(broken) == 1


def _attribute_fields(row: object) -> dict[str, object]:
    """A row's profile and category/device summaries as hash fields (worker.core.attributes)."""
    profile = {
        "country": row.country, "region": row.region, "birth_year": row.birth_year,  # type: ignore[attr-defined]
        "gender": row.gender, "signup_channel": row.signup_channel,  # type: ignore[attr-defined]
        "loyalty_tier": row.loyalty_tier, "marketing_consent": row.marketing_consent,  # type: ignore[attr-defined]
    }  # fmt: skip
    fields: dict[str, object] = {}
    times: dict[str, int] = {}  # one profile event a day before AS_OF wrote what is known
    for attr, field_name in PROFILE_FIELDS.items():
        value = profile[attr]
        if value is None or pd.isna(value):  # type: ignore[arg-type]
            continue
        if attr == "marketing_consent":
            value = "1" if value else "0"
        elif attr == "birth_year":
            value = int(value)  # type: ignore[call-overload]
        fields[field_name] = value
        times[attr] = int(AS_OF.timestamp() * 1000) - 86_400_000
    if times:
        fields[PROFILE_TIMES_FIELD] = encode_times(times)
    for summary, column in (("spend_by_category", "favourite_category"),
                            ("views_by_category", "top_viewed_category"),
                            ("clicks_by_device", "device")):  # fmt: skip
        top = getattr(row, column)
        if isinstance(top, str):
            fields[SUMMARY_FIELDS[summary]] = f"{top}=900,other_{column}=3"
    return fields


def _write_state(client: object, prefix: str, state: pd.DataFrame) -> None:
    """Customer hashes in the state store's layout (field names from worker.core.rfm and
    worker.core.attributes)."""
    pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]

    def ms(value: object) -> int | None:
        return None if pd.isna(value) else int(pd.Timestamp(value).timestamp() * 1000)  # type: ignore[arg-type]

    for row in state.itertuples(index=False):
        fields: dict[str, object] = {
            HASH_FIELDS["frequency"]: int(row.frequency),
            HASH_FIELDS["monetary_cents"]: round(row.monetary * 100),
            HASH_FIELDS["items"]: int(row.items),
            HASH_FIELDS["sessions"]: int(row.sessions),
            HASH_FIELDS["page_views"]: int(row.page_views),
            HASH_FIELDS["product_views"]: int(row.product_views),
            HASH_FIELDS["add_to_carts"]: int(row.add_to_carts),
            HASH_FIELDS["checkout_starts"]: int(row.checkout_starts),
            HASH_FIELDS["cart_sessions"]: int(row.abandoned_carts) + int(row.frequency),
            HASH_FIELDS["cart_checkout_sessions"]: int(row.frequency),
        }
        for attr, column in (("first_order_ms", "first_order_ts"),
                             ("last_order_ms", "last_order_ts"),
                             ("last_seen_ms", "last_seen_ts")):  # fmt: skip
            stamp = ms(getattr(row, column))
            if stamp is not None:
                fields[HASH_FIELDS[attr]] = stamp
        if isinstance(row.segment, str):
            fields |= {"segment": row.segment, "model_version": "km-20260630T0000-5a5a"}
        fields |= _attribute_fields(row)
        pipe.hset(keys.customer(prefix, row.customer_id), mapping=fields)
    pipe.execute()


def _produce_changes(bootstrap: str, topic: str, changes: pd.DataFrame) -> int:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for row in changes.itertuples(index=False):
        change = SegmentChange(
            customer_id=row.customer_id, old_segment=row.old_segment, new_segment=row.new_segment,
            reason=row.reason, model_version=row.model_version, features={"frequency": 1.0},
            event_time=row.event_time.to_pydatetime(),
            processing_time=row.processing_time.to_pydatetime(),
        )  # fmt: skip
        producer.send(topic, key=row.customer_id.encode(), value=encode(change))
    producer.send(topic, key=b"bad", value=b"{not a segment change")
    producer.flush()
    producer.close()
    return len(changes) + 1


def test_segstream_report_from_redis_model_dir_and_topic(
    chromium: str,
    settings: Settings,
    redis_client: object,
    tmp_path: Path,
    make_topic: Callable[..., str],
) -> None:
    state, model, changes = sample_inputs(n=300, seed=11, as_of=AS_OF)
    _write_state(redis_client, settings.redis.prefix, state)
    sent = _produce_changes(settings.kafka.bootstrap, settings.kafka.segment_changes_topic, changes)
    model_dir = Path(settings.model_dir)
    model_dir.mkdir(parents=True)
    (model_dir / f"{model['version']}.json").write_text(json.dumps(model))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "report", "--out", str(out), "--as-of", "2026-06-30T12:00:00Z",
            "--kafka-bootstrap", settings.kafka.bootstrap, "--redis-url", settings.redis.url,
            "--redis-prefix", settings.redis.prefix, "--model-dir", str(model_dir),
            "--segment-changes-topic", settings.kafka.segment_changes_topic,
        ],
        env={"SEGSTREAM_REPORT_STATE_FILE": "", "SEGSTREAM_REPORT_MODEL": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"{len(state):,} customers from Redis" in result.output
    assert f"{sent:,} records read from {settings.kafka.segment_changes_topic}" in result.output
    assert "1 not valid segment changes (skipped)" in result.output
    assert f"{model['version']}.json" in result.output

    transitions = pd.read_csv(out / "transition_matrix.csv", index_col=0)
    assert int(transitions.to_numpy().sum()) == len(changes)
    business = pd.read_csv(out / "business_view.csv").set_index("segment")
    segmented = state[state["segment"].notna()]
    want = segmented.groupby("segment")["monetary"].sum()
    assert np.allclose(business["revenue"].sort_index(), want.sort_index(), rtol=1e-6)
    profile = pd.read_csv(out / "segment_profile.csv").set_index("segment")
    assert profile["customers"].sum() == len(segmented)
    assert len(pd.read_csv(out / "k_selection.csv")) == 7

    html = out / REPORT_FILE
    dom = _assert_loads_without_broken_images(chromium, html, tmp_path)
    assert "No model trained yet" not in dom and "No segment changes" not in dom
    _screenshot(chromium, html, tmp_path, out / "report.png")


def test_segstream_report_before_any_model_or_change(
    chromium: str, settings: Settings, redis_client: object, tmp_path: Path
) -> None:
    state, _, _ = sample_inputs(n=80, seed=13, as_of=AS_OF)
    _write_state(redis_client, settings.redis.prefix, state.assign(segment=None))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["report", "--out", str(out), "--as-of", "2026-06-30T12:00:00Z"],
        env={
            "SEGSTREAM_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
            "SEGSTREAM_REDIS_URL": settings.redis.url,
            "SEGSTREAM_REDIS_PREFIX": settings.redis.prefix,
            "SEGSTREAM_MODEL_DIR": str(tmp_path / "no-models"),
            "SEGSTREAM_SEGMENT_CHANGES_TOPIC": settings.kafka.segment_changes_topic,
            "SEGSTREAM_REPORT_STATE_FILE": "",
            "SEGSTREAM_REPORT_MODEL": "",
        },
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "no model artifact in" in result.output
    assert f"0 records read from {settings.kafka.segment_changes_topic}" in result.output
    dom = _assert_loads_without_broken_images(chromium, out / REPORT_FILE, tmp_path)
    assert "No model trained yet" in dom
    assert "No segment changes in the period" in dom
    assert len(re.findall(r"<img ", dom)) == 7  # the EDA figures only


def test_report_from_redis_says_who_is_in_each_segment_in_chromium(
    chromium: str, settings: Settings, redis_client: object, tmp_path: Path
) -> None:
    """Profile and category fields in the customer hashes -> the composition section: one
    sentence per segment, stacked bars that load in Chromium, composition.csv beside it."""
    from playwright.sync_api import sync_playwright

    state, _, _ = sample_inputs(n=300, seed=17, as_of=AS_OF)
    _write_state(redis_client, settings.redis.prefix, state)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "report", "--out", str(out), "--as-of", "2026-06-30T12:00:00Z", "--no-changes",
            "--model", "none", "--kafka-bootstrap", settings.kafka.bootstrap,
            "--redis-url", settings.redis.url, "--redis-prefix", settings.redis.prefix,
        ],
        env={"SEGSTREAM_REPORT_STATE_FILE": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)

    # The champions' country, counted here from the rows written to Redis.
    champions = state[state["segment"] == "Champions"]
    share = (champions["country"] == "DE").sum() / champions["country"].notna().sum()
    lift = share / ((state["country"] == "DE").sum() / state["country"].notna().sum())
    expected_start = f"{share * 100:.0f} % DE ({lift:.1f}x the shop), top category electronics"
    expected = Composition.of(state).sentences()

    table = pd.read_csv(out / "composition.csv", keep_default_na=False, na_values=[""])
    de = table[(table["segment"] == "Champions") & (table["attribute"] == "country")
               & (table["level"] == "DE")].iloc[0]  # fmt: skip
    assert de["lift"] == pytest.approx(lift)

    shot = tmp_path / "composition.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=list(PLAYWRIGHT_ARGS))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto((out / REPORT_FILE).resolve().as_uri())
            page.wait_for_selector("body[data-loaded='1']", timeout=60_000)
            section = page.locator("#composition")
            words = {
                li.get_attribute("data-segment"): li.locator(".words").inner_text()
                for li in section.locator("li[data-segment]").all()
            }
            widths = section.locator("img").evaluate_all(
                "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)"
            )
            alts = section.locator("img").evaluate_all("imgs => imgs.map(i => i.alt)")
            section.screenshot(path=str(shot))
        finally:
            browser.close()
    assert not errors, errors
    assert words == expected
    assert words["Champions"].startswith(expected_start), words["Champions"]
    assert len(widths) == 4 and all(w > 0 for w in widths), widths
    assert alts == ["Country by segment", "Age band by segment",
                    "Favourite category (by spend) by segment",
                    "Device (most clicks) by segment"]  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[0] > 600 and pixels.var() > 0
    shutil.copyfile(shot, COMPOSITION_SHOT)


def test_report_shows_a_campaigns_impact_with_its_table_and_plots_in_chromium(
    chromium: str, settings: Settings, redis_client: object, tmp_path: Path
) -> None:
    """A campaign with assignments in Redis and orders on the topic -> the impact section: the
    treatment vs holdout table and two plots that load in Chromium, impact.csv beside it."""
    from kafka import KafkaProducer
    from playwright.sync_api import sync_playwright

    from worker.campaigns.model import Campaign
    from worker.campaigns.registry import CampaignRegistry
    from worker.campaigns.store import AssignmentReader
    from worker.connect import keyspace

    state, _, _ = sample_inputs(n=300, seed=19, as_of=AS_OF)
    _write_state(redis_client, settings.redis.prefix, state)
    start = int(AS_OF.timestamp() * 1000) - 20 * 86_400_000
    campaign = Campaign("spring", "at_risk", 0.3, start, "win-back mail")
    customers = sorted(state["customer_id"].astype(str))
    CampaignRegistry(redis_client, settings.redis.prefix).create(campaign)
    AssignmentReader(redis_client, keyspace(settings.redis, settings.redis.prefix)).record(
        [(campaign, c, start) for c in customers]
    )
    rng = np.random.default_rng(4)
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap)
    for i, cid in enumerate(rng.choice(customers, 150)):
        when = datetime.fromtimestamp((start + int(rng.integers(0, 15 * 86_400_000))) / 1000, UTC)
        order = {
            "event_id": f"E{i}", "schema_version": 1, "customer_id": str(cid),
            "order_id": f"O{i}", "event_time": when.isoformat(), "status": "placed",
            "items": [{"sku": "SKU-1", "quantity": 1, "unit_price": 25.0}], "total": 25.0,
        }  # fmt: skip
        producer.send(settings.kafka.orders_topic, key=str(cid).encode(),
                      value=json.dumps(order).encode())  # fmt: skip
    producer.flush()
    producer.close()
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "report", "--out", str(out), "--as-of", "2026-06-30T12:00:00Z", "--no-changes",
            "--model", "none", "--kafka-bootstrap", settings.kafka.bootstrap,
            "--redis-url", settings.redis.url, "--redis-prefix", settings.redis.prefix,
            "--orders-topic", settings.kafka.orders_topic,
        ],
        env={"SEGSTREAM_REPORT_STATE_FILE": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"{len(customers):,} assignments of 1 campaign(s)" in result.output
    assert f"150 records read from {settings.kafka.orders_topic}" in result.output
    table = pd.read_csv(out / "impact.csv")
    assert set(table["campaign"]) == {"spring"} and len(table) == 6
    assert pd.read_csv(out / "impact_customers.csv")["orders"].sum() == 150

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=list(PLAYWRIGHT_ARGS))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto((out / REPORT_FILE).resolve().as_uri())
            page.wait_for_selector("body[data-loaded='1']", timeout=60_000)
            section = page.locator("#impact")
            cells = section.locator("table td").all_inner_texts()
            widths = section.locator("img").evaluate_all(
                "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)"
            )
            text = section.inner_text()
            section.screenshot(path=str(tmp_path / "impact.png"))
        finally:
            browser.close()
    assert not errors, errors
    assert "Revenue per customer" in cells and "spring" in cells
    assert len(widths) == 2 and all(w > 0 for w in widths), widths
    assert "win-back mail" in text
