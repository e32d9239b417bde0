"""``segstream sink sql``: the segment-changes topic kept in PostgreSQL or MySQL/MariaDB tables.

``changes`` decodes records into rows (pure), ``plan`` reduces a batch to what the database must
do (pure), ``schema`` holds the versioned DDL and its migrations, ``postgres`` and ``mysql`` write
one batch in one transaction with the consumed offsets, ``profiles`` turns a model artifact into
``segment_profile`` rows, ``service`` is the consume-write loop and ``cli`` the command.
The design and the BI side: docs/bi.md.
"""
