"""The SQL sink's versioned DDL, migration plan, statements and profile rows (no database)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from segstream.errors import ConfigError
from sinks.sql import mysql, postgres
from sinks.sql.changes import ROW_COLUMNS
from sinks.sql.profiles import model_profile_rows, rules_profile_rows
from sinks.sql.schema import (
    SchemaTooNew,
    dialect_of,
    latest,
    migrations,
    pending,
    split_statements,
)
from worker.segmentation.features import Scaler
from worker.segmentation.model import SegmentModel
from worker.segmentation.rules import RULE_NAMES


def test_a_url_scheme_selects_the_dialect_and_a_wrong_one_is_a_config_error() -> None:
    assert dialect_of("postgresql://u:p@h/db") == "postgresql"
    assert dialect_of("postgres://h/db") == "postgresql"
    assert dialect_of("mysql://h/db") == dialect_of("mariadb://h/db") == "mysql"
    with pytest.raises(ConfigError) as err:
        dialect_of("sqlite:///x.db")
    assert "sqlite://" in str(err.value)


def test_both_dialects_have_the_same_versions_each_with_a_description() -> None:
    pg, my = migrations("postgresql"), migrations("mysql")
    assert [m.version for m in pg] == [m.version for m in my] == list(range(1, latest("mysql") + 1))
    assert latest("postgresql") >= 2
    for m in (*pg, *my):
        assert m.description.startswith(f"v{m.version}:") and m.statements
        assert not any(s.rstrip().endswith(";") for s in m.statements)


def test_v1_creates_every_table_and_the_view_and_v2_adds_the_event_date() -> None:
    for dialect in ("postgresql", "mysql"):
        v1, v2 = migrations(dialect)[:2]
        text = " ".join(v1.statements)
        for table in ("customer_segment", "segment_history", "segment_profile", "sink_offsets"):
            assert f"CREATE TABLE {table}" in text, (dialect, table)
        assert "VIEW daily_segment_size" in text
        assert any("ADD COLUMN event_date" in s for s in v2.statements)
        assert any("VIEW daily_segment_size" in s and "event_date" in s for s in v2.statements)


def test_the_plan_runs_the_versions_after_the_current_one_and_refuses_a_newer_database() -> None:
    top = latest("postgresql")
    assert [m.version for m in pending("postgresql", 0)] == list(range(1, top + 1))
    assert [m.version for m in pending("postgresql", 1)] == list(range(2, top + 1))
    assert pending("postgresql", top) == ()
    assert [m.version for m in pending("postgresql", 0, target=1)] == [1]
    with pytest.raises(SchemaTooNew):
        pending("postgresql", top + 1)


def test_statements_split_at_line_ending_semicolons_and_comments_go() -> None:
    text = "-- v9: x\nCREATE TABLE a (x int);\n-- note\nCREATE VIEW v AS\nSELECT 1;\n"
    assert split_statements(text) == ("CREATE TABLE a (x int)", "CREATE VIEW v AS\nSELECT 1")


def test_postgres_copies_every_row_column_and_upserts_only_over_a_lower_seq() -> None:
    for column in ROW_COLUMNS:
        assert column in postgres.COPY_STAGING and column in postgres.CREATE_STAGING
    assert postgres.UPSERT_CURRENT.count("INSERT") == 1
    assert "DISTINCT ON (customer_id)" in postgres.UPSERT_CURRENT
    assert postgres.UPSERT_CURRENT.endswith(
        "WHERE customer_segment.segment_seq < EXCLUDED.segment_seq"
    )
    assert postgres.INSERT_HISTORY.endswith("ON CONFLICT (customer_id, segment_seq) DO NOTHING")


def test_mysql_guards_every_column_by_seq_and_assigns_the_seq_last() -> None:
    update = mysql.UPSERT_CURRENT.split("ON DUPLICATE KEY UPDATE")[1]
    assignments = [a.strip() for a in update.split(", ") if " = " in a]
    assert assignments[-1].startswith("segment_seq = GREATEST(")
    guarded = [a for a in assignments[:-1]]
    assert len(guarded) == len(mysql.CURRENT_COLUMNS) - 2
    assert all("IF(VALUES(segment_seq) > segment_seq" in a for a in guarded)
    assert "INSERT IGNORE" not in mysql.INSERT_HISTORY


def test_mysql_url_arguments_unquote_the_password_and_read_the_socket() -> None:
    args = mysql.connect_args("mysql://bi:p%40ss@db.example:3307/seg?unix_socket=/run/m.sock")
    assert (args["host"], args["port"], args["user"], args["password"]) == (
        "db.example", 3307, "bi", "p@ss",
    )  # fmt: skip
    assert args["database"] == "seg" and args["unix_socket"] == "/run/m.sock"
    with pytest.raises(ConfigError) as err:
        mysql.connect_args("mysql://bi:secret@db/")
    assert "secret" not in str(err.value)


def test_profile_rows_carry_centroids_in_real_units_and_training_sizes() -> None:
    scaler = Scaler(mean=np.zeros(2), std=np.ones(2))
    model = SegmentModel(
        version="km-1", created_at="2026-11-27T01:02:00+00:00", feature_names=("frequency", "aov"),
        scaler=scaler, centroids=np.log1p(np.array([[1.0, 10.0], [4.0, 50.0]])),
        names=("new", "loyal"), seed=1, training_size=30, as_of="2026-11-27T00:00:00+00:00",
        profiles=({"size": 20, "share": 2 / 3}, {"size": 10, "share": 1 / 3}),
    )  # fmt: skip
    now = datetime(2026, 12, 1, tzinfo=UTC)
    rows = model_profile_rows(model, now)
    assert [(r.segment, r.segment_index, r.size) for r in rows] == [
        ("new", 0, 20),
        ("loyal", 1, 10),
    ]
    assert json.loads(rows[1].centroid or "") == pytest.approx({"frequency": 4.0, "aov": 50.0})
    assert rows[1].monetary == pytest.approx(200.0) and rows[1].recency_days is None
    assert rows[0].trained_at == datetime(2026, 11, 27, 1, 2, tzinfo=UTC)
    rules = rules_profile_rows(now)
    assert [r.segment for r in rules] == list(RULE_NAMES) and rules[0].centroid is None
