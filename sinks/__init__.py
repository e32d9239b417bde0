"""Processes that keep other systems in step with segstream: SQL tables for BI (docs/bi.md)."""
