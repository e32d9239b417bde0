-- v2: segment_history.event_date (the date dimension's key) and its index for BI queries
ALTER TABLE segment_history ADD COLUMN event_date DATE AS (DATE(event_time)) STORED;

CREATE INDEX segment_history_date_segment ON segment_history (event_date, new_segment);

CREATE OR REPLACE VIEW daily_segment_size AS
WITH RECURSIVE moves AS (
    SELECT event_date AS day, new_segment AS segment, 1 AS delta FROM segment_history
    UNION ALL
    SELECT event_date, old_segment, -1 FROM segment_history WHERE old_segment IS NOT NULL
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
