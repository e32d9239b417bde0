-- v2: segment_history.event_date (the date dimension's key) and its index for BI queries
ALTER TABLE segment_history
    ADD COLUMN event_date date GENERATED ALWAYS AS ((event_time AT TIME ZONE 'UTC')::date) STORED;

CREATE INDEX segment_history_date_segment ON segment_history (event_date, new_segment);

CREATE OR REPLACE VIEW daily_segment_size AS
WITH moves AS (
    SELECT event_date AS day, new_segment AS segment, 1 AS delta FROM segment_history
    UNION ALL
    SELECT event_date, old_segment, -1 FROM segment_history WHERE old_segment IS NOT NULL
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
