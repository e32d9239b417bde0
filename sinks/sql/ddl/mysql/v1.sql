-- v1: customer_segment, segment_history, segment_profile, sink_offsets, daily_segment_size
CREATE TABLE customer_segment (
    customer_id VARCHAR(128) NOT NULL PRIMARY KEY,
    segment VARCHAR(128) NOT NULL,
    model_version VARCHAR(128) NOT NULL,
    segment_seq BIGINT NOT NULL,
    updated_at DATETIME(6) NOT NULL,
    event_time DATETIME(6) NOT NULL,
    recency_days DOUBLE,
    frequency DOUBLE,
    monetary DOUBLE,
    aov DOUBLE,
    sessions DOUBLE,
    features JSON NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE segment_history (
    customer_id VARCHAR(128) NOT NULL,
    segment_seq BIGINT NOT NULL,
    old_segment VARCHAR(128),
    new_segment VARCHAR(128) NOT NULL,
    reason VARCHAR(32) NOT NULL,
    model_version VARCHAR(128) NOT NULL,
    event_time DATETIME(6) NOT NULL,
    processing_time DATETIME(6) NOT NULL,
    recency_days DOUBLE,
    frequency DOUBLE,
    monetary DOUBLE,
    aov DOUBLE,
    sessions DOUBLE,
    features JSON NOT NULL,
    old_distance DOUBLE,
    new_distance DOUBLE,
    PRIMARY KEY (customer_id, segment_seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE segment_profile (
    model_version VARCHAR(128) NOT NULL,
    segment VARCHAR(128) NOT NULL,
    segment_index INT NOT NULL,
    size BIGINT,
    share DOUBLE,
    centroid JSON,
    recency_days DOUBLE,
    frequency DOUBLE,
    monetary DOUBLE,
    aov DOUBLE,
    sessions DOUBLE,
    trained_at DATETIME(6),
    first_seen_at DATETIME(6) NOT NULL,
    PRIMARY KEY (model_version, segment)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE sink_offsets (
    topic VARCHAR(255) NOT NULL,
    kafka_partition INT NOT NULL,
    next_offset BIGINT NOT NULL,
    updated_at DATETIME(6) NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE OR REPLACE VIEW daily_segment_size AS
WITH RECURSIVE moves AS (
    SELECT DATE(event_time) AS day, new_segment AS segment, 1 AS delta FROM segment_history
    UNION ALL
    SELECT DATE(event_time), old_segment, -1 FROM segment_history WHERE old_segment IS NOT NULL
), per_day AS (
    SELECT day, segment, SUM(delta) AS net_change FROM moves GROUP BY day, segment
), days AS (
    SELECT MIN(day) AS day, MAX(day) AS last_day FROM per_day
    UNION ALL
    SELECT day + INTERVAL 1 DAY, last_day FROM days WHERE day < last_day
), segments AS (
    SELECT DISTINCT segment FROM per_day
)
SELECT d.day, s.segment,
       CAST(SUM(COALESCE(p.net_change, 0)) OVER (PARTITION BY s.segment ORDER BY d.day)
            AS SIGNED) AS customers,
       CAST(COALESCE(p.net_change, 0) AS SIGNED) AS net_change
FROM days d CROSS JOIN segments s
LEFT JOIN per_day p ON p.day = d.day AND p.segment = s.segment
WHERE d.day IS NOT NULL;
