"""Profiles from producers: the customers-csv reader, Online Retail's countries, the personas'
demographics and the file sink's profiles file."""

from __future__ import annotations

import os
import statistics
from datetime import UTC, datetime
from pathlib import Path

import pytest
from msgspec import UNSET

from producers.countries import UnknownCountry, country_code
from producers.demographics import merged, profiles
from producers.errors import SourceError
from producers.file_source import FileSource
from producers.readers import Reject
from producers.sinks import FileSink
from producers.synthetic import SyntheticConfig, generate
from schemas import CustomerProfile, encode

HEADER = (
    "customer_id,event_time,country,region,birth_year,gender,signup_channel,loyalty_tier,"
    "marketing_consent\n"
)


def read(path: Path, fmt: str, **kwargs: object) -> tuple[list[CustomerProfile], list[Reject]]:
    source = FileSource(path, fmt, **kwargs)  # type: ignore[arg-type]
    items = list(source)
    got = [i for i in items if isinstance(i, CustomerProfile)]
    return got, [i for i in items if isinstance(i, Reject)]


def test_customers_csv_rows_become_profile_updates(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(
        HEADER
        + "C1,2025-03-01T10:00:00Z,GB,Scotland,1980,female,web,gold,yes\n"
        + "C2,2025-03-02,Ireland,,,,,,\n"
        + "C3,1740823200,null,null,,,,null,0\n"
    )
    got, rejects = read(path, "customers-csv")
    assert rejects == []
    c1, c2, c3 = got
    assert (c1.country, c1.region, c1.birth_year, c1.gender) == ("GB", "Scotland", 1980, "female")
    assert (c1.signup_channel, c1.loyalty_tier, c1.marketing_consent) == ("web", "gold", True)
    assert c1.event_time == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert c2.changes() == {"country": "IE"}  # an English name; empty cells change nothing
    assert c2.region is UNSET and c2.event_time == datetime(2025, 3, 2, tzinfo=UTC)
    assert c3.changes() == {"country": None, "region": None, "loyalty_tier": None,
                            "marketing_consent": False}  # fmt: skip
    assert len({p.event_id for p in got}) == 3


def test_a_row_without_event_time_is_stamped_with_the_files_modification_time(
    tmp_path: Path,
) -> None:
    path = tmp_path / "customers.csv"
    path.write_text("customer_id,loyalty_tier\nC1,silver\n")
    stamp = datetime(2024, 6, 1, 8, 30, tzinfo=UTC).timestamp()
    os.utime(path, (stamp, stamp))
    first, _ = read(path, "customers-csv")
    again, _ = read(path, "customers-csv")
    assert first[0].event_time == datetime(2024, 6, 1, 8, 30, tzinfo=UTC)
    assert first == again  # same ids, same times: a second replay changes nothing


def test_bad_customer_rows_are_rejected_with_their_line_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(
        HEADER
        + "C1,2025-03-01T10:00:00Z,XX,,,,,,\n"
        + "C2,2025-03-01T10:00:00Z,,,1850,,,,\n"
        + "C3,2025-03-01T10:00:00Z,,,,,,,maybe\n"
        + ",2025-03-01T10:00:00Z,GB,,,,,,\n"
        + "C5,2025-03-01T10:00:00Z,,a=b,,,,,\n"
        + "C6,yesterday,,,,,,,\n"
        + "C7,2025-03-01T10:00:00Z,Unspecified,,,,,,\n"
        + "C8,2025-03-01T10:00:00Z,DE,,,,,,\n"
    )
    got, rejects = read(path, "customers-csv")
    assert [p.customer_id for p in got] == ["C8"]
    reasons = {r.line: r.reason for r in rejects}
    assert reasons[2] == "unknown Country 'XX' (not a country name or ISO code)"
    assert reasons[3].startswith("birth_year: must be between 1900 and")
    assert reasons[4] == "marketing_consent 'maybe' is not true/false, yes/no or 1/0"
    assert reasons[5] == "missing customer_id"
    assert reasons[6] == "region: must not contain '=' or ','"
    assert "unparsable timestamp 'yesterday'" in reasons[7]
    assert reasons[8] == "Country 'Unspecified' names no single country; use null"


def test_customers_csv_columns_can_be_mapped_and_unknown_ones_are_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crm.csv"
    path.write_text("CustID,Land,Tier\nC1,FR,gold\n")
    mapping = {"customer_id": "CustID", "country": "Land", "loyalty_tier": "Tier"}
    got, _ = read(path, "customers-csv", column_map=mapping)
    assert got[0].changes() == {"country": "FR", "loyalty_tier": "gold"}
    with pytest.raises(SourceError, match="missing column"):
        read(path, "customers-csv")
    with pytest.raises(SourceError, match="unknown column"):
        read(path, "customers-csv", column_map={"shoe_size": "Tier"})


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("United Kingdom", "GB"),
        ("EIRE", "IE"),
        ("USA", "US"),
        ("RSA", "ZA"),
        ("Czech Republic", "CZ"),
        ("United Arab Emirates", "AE"),
        ("Hong Kong", "HK"),
        ("  germany ", "DE"),
        ("Channel Islands", None),
        ("European Community", None),
        ("Unspecified", None),
        ("nl", "NL"),
    ],
)
def test_online_retail_country_names_map_to_iso_codes(name: str, code: str | None) -> None:
    assert country_code(name) == code


def test_every_country_of_the_uci_file_is_known() -> None:
    uci = ("United Kingdom, France, Australia, Netherlands, Germany, Norway, EIRE, Switzerland, "
           "Spain, Poland, Portugal, Italy, Belgium, Lithuania, Japan, Iceland, Channel Islands, "
           "Denmark, Cyprus, Sweden, Austria, Israel, Finland, Bahrain, Greece, Hong Kong, "
           "Singapore, Lebanon, United Arab Emirates, Saudi Arabia, Czech Republic, Canada, "
           "Unspecified, Brazil, USA, European Community, Malta, RSA")  # fmt: skip
    for name in uci.split(", "):
        country_code(name)  # raises for an unknown name
    with pytest.raises(UnknownCountry, match="unknown Country 'Atlantis'"):
        country_code("Atlantis")


def test_online_retail_sends_one_profile_per_customer_with_their_country(tmp_path: Path) -> None:
    path = tmp_path / "retail.csv"
    path.write_text(
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "536366,A,x,1,12/2/2010 9:00,2.0,17850,United Kingdom\n"
        "536365,A,x,1,12/1/2010 8:26,2.0,17850,United Kingdom\n"
        "536367,B,y,2,12/1/2010 9:00,1.5,12583.0,EIRE\n"
        "536368,B,y,2,12/1/2010 10:00,1.5,14000,Channel Islands\n"
        "536369,B,y,2,12/1/2010 11:00,1.5,15000,Atlantis\n"
        "536370,B,y,2,12/1/2010 12:00,1.5,,France\n"
    )
    source = FileSource(path, "online-retail")
    items = list(source)
    people = [i for i in items if isinstance(i, CustomerProfile)]
    assert [(p.customer_id, p.country) for p in people] == [
        ("17850", "GB"), ("12583", "IE"), ("14000", UNSET),
    ]  # fmt: skip
    assert people[0].event_time == datetime(2010, 12, 1, 8, 26, tzinfo=UTC)  # first invoice
    bad = [i for i in items if isinstance(i, Reject) and i.bad]
    assert [(r.line, r.reason) for r in bad] == [
        (6, "unknown Country 'Atlantis' (not a country name or ISO code): the profile of "
            "customer 15000 is not sent"),
    ]  # fmt: skip
    orders = [i for i in items if not isinstance(i, CustomerProfile | Reject)]
    assert len(orders) == 5  # the orders are sent whatever the country


def _data() -> object:
    return generate(SyntheticConfig(800, 60, 3, datetime(2025, 1, 1, tzinfo=UTC)))


def test_personas_get_correlated_demographics_deterministically() -> None:
    data = _data()
    people = profiles(data)  # type: ignore[arg-type]
    assert [encode(p) for p in people] == [encode(p) for p in profiles(_data())]  # type: ignore[arg-type]
    firsts: dict[str, CustomerProfile] = {}
    for p in people:
        firsts.setdefault(p.customer_id, p)
    labels = data.labels  # type: ignore[attr-defined]
    assert set(firsts) <= set(labels) and len(firsts) >= 0.95 * len(labels)

    def ages(persona: str) -> list[int]:
        return [2025 - p.birth_year for c, p in firsts.items()  # type: ignore[operator]
                if labels[c] == persona]  # fmt: skip

    assert statistics.median(ages("champions")) > statistics.median(ages("window_shoppers")) + 10
    gold = [p.loyalty_tier == "gold" for c, p in firsts.items() if labels[c] == "champions"]
    assert sum(gold) / len(gold) > 0.4
    window_tiers = [p.loyalty_tier for c, p in firsts.items() if labels[c] == "window_shoppers"]
    assert sum(t is UNSET for t in window_tiers) / len(window_tiers) > 0.6
    assert len(people) > len(firsts)  # some customers update their profile later


def test_profiles_are_merged_into_the_stream_at_first_appearance() -> None:
    data = _data()
    people = profiles(data)  # type: ignore[arg-type]
    stream = list(merged(data, people))  # type: ignore[arg-type]
    times = [e.event_time_ms for e in stream]
    assert times == sorted(times)
    seen: set[str] = set()
    for event in stream:
        cid = event.customer_id
        if isinstance(event, CustomerProfile):
            seen.add(cid or "")
        elif cid:
            assert cid in seen, "a customer's profile precedes their first event"


def test_the_file_sink_writes_profiles_that_replay_as_customers_csv(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, "csv")
    sent = [
        CustomerProfile(event_id="e1", schema_version=1, customer_id="C1",
                        event_time=datetime(2025, 1, 1, tzinfo=UTC), country="GB",
                        marketing_consent=False, region=None),
        CustomerProfile(event_id="e2", schema_version=1, customer_id="C2",
                        event_time=datetime(2025, 1, 2, tzinfo=UTC), birth_year=1977),
    ]  # fmt: skip
    for p in sent:
        sink.send(p, p.customer_id.encode(), encode(p))
    sink.close()
    back, rejects = read(tmp_path / "profiles.csv", "customers-csv")
    assert rejects == [] and back == sent
