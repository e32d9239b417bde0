-- v1: customer_segment, segment_history, segment_profile, sink_offsets, daily_segment_size
CREATE TABLE customer_segment (
    customer_id text PRIMARY KEY,
    segment text NOT NULL,
    model_version text NOT NULL,
    segment_seq bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    event_time timestamptz NOT NULL,
    recency_days double precision,
    frequency double precision,
    monetary double precision,
    aov double precision,
    sessions double precision,
    features jsonb NOT NULL
) WITH (fillfactor = 80);

CREATE TABLE segment_history (
    customer_id text NOT NULL,
    segment_seq bigint NOT NULL,
    old_segment text,
    new_segment text NOT NULL,
    reason text NOT NULL,
    model_version text NOT NULL,
    event_time timestamptz NOT NULL,
    processing_time timestamptz NOT NULL,
    recency_days double precision,
    frequency double precision,
    monetary double precision,
    aov double precision,
    sessions double precision,
    features jsonb NOT NULL,
    old_distance double precision,
    new_distance double precision,
    PRIMARY KEY (customer_id, segment_seq)
);

CREATE TABLE segment_profile (
    model_version text NOT NULL,
    segment text NOT NULL,
    segment_index integer NOT NULL,
    size bigint,
    share double precision,
    centroid jsonb,
    recency_days double precision,
    frequency double precision,
    monetary double precision,
    aov double precision,
    sessions double precision,
    trained_at timestamptz,
    first_seen_at timestamptz NOT NULL,
    PRIMARY KEY (model_version, segment)
);

CREATE TABLE sink_offsets (
    topic text NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);

CREATE VIEW daily_segment_size AS
WITH moves AS (
    SELECT (event_time AT TIME ZONE 'UTC')::date AS day, new_segment AS segment, 1 AS delta
    FROM segment_history
    UNION ALL
    SELECT (event_time AT TIME ZONE 'UTC')::date, old_segment, -1
    FROM segment_history WHERE old_segment IS NOT NULL
), per_day AS (
    SELECT day, segment, sum(delta) AS net_change FROM moves GROUP BY day, segment
), days AS (
    SELECT generate_series(min(day), max(day), interval '1 day')::date AS day FROM per_day
), segments AS (
    SELECT DISTINCT segment FROM per_day
)
SELECT d.day, s.segment,
       sum(coalesce(p.net_change, 0)) OVER (PARTITION BY s.segment ORDER BY d.day)::bigint
           AS customers,
       coalesce(p.net_change, 0)::bigint AS net_change
FROM days d CROSS JOIN segments s
LEFT JOIN per_day p ON p.day = d.day AND p.segment = s.segment;
