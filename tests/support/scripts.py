"""Lua scripts the Redis I/O tests run to hold Redis busy for a known time."""

from __future__ import annotations

#: Busy for about ARGV[1] ms of Redis time, then returns ARGV[2] (ARGV[3]: ignored padding).
SLOW = """
local t = redis.call('TIME')
local until_us = t[1] * 1e6 + t[2] + ARGV[1] * 1000
repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] >= until_us
return ARGV[2]
"""
