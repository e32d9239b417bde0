"""``redis_io``: script calls sent in two steps (in the kernel, then the reply), on a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.exceptions as rex

from devstack.ports import free_port
from devstack.processes import redis_server_binary
from tests.support.scripts import SLOW
from tests.support.waiting import wait_for
from worker.redis_io import SEND_BUFFER_BYTES, Endpoint, ReplicasBehind, Script, ScriptClient

pytestmark = pytest.mark.integration

SLOW_SCRIPT = Script.of(SLOW)
#: INCR of the key ARGV[1]; returns the new value.
INCR = Script.of("return redis.call('INCR', ARGV[1])")


def call(url: str, script: Script, args: list[Any]) -> Any:
    async def run() -> Any:
        scripts = ScriptClient(url)
        try:
            return await scripts.call(script, args)
        finally:
            await scripts.close()

    return asyncio.run(run())


def test_a_sent_request_runs_in_redis_while_the_caller_does_cpu_work(redis_url: str) -> None:
    """Sent means in the kernel: ``send`` returns while Redis still runs the 500 ms script, and
    Redis runs it while the loop is blocked, so its reply is there when the loop comes back (a
    request still partly in asyncio's buffer would only start then, 500 ms later). The padding
    makes the request larger than the socket's send buffer: it is whole in the kernel only if
    ``send`` waited for its last byte."""
    padding = b"x" * (2 * SEND_BUFFER_BYTES)

    async def run() -> tuple[float, float, object]:
        scripts = ScriptClient(redis_url)
        try:
            await scripts.call(SLOW_SCRIPT, [0, "loaded"])  # no NOSCRIPT round trip below
            started = time.perf_counter()
            pending = await scripts.send(SLOW_SCRIPT, [500, "done", padding])
            sent_s = time.perf_counter() - started
            time.sleep(0.7)  # the worker's CPU work: the loop runs nothing meanwhile
            back = time.perf_counter()
            reply = await pending.result()
            return sent_s, time.perf_counter() - back, reply
        finally:
            await scripts.close()

    sent_s, waited_s, reply = asyncio.run(run())
    assert reply == b"done"
    assert sent_s < 0.4  # the reply is still ~500 ms away
    assert waited_s < 0.25


def test_a_first_call_loads_its_script_in_the_same_write_and_one_redis_lost_is_loaded_again(
    redis_url: str,
) -> None:
    """A client's first call of a script sends SCRIPT LOAD ahead of it (so the call runs when
    sent, not after a NOSCRIPT round trip); a script Redis lost later (restart, flush) is loaded
    and the call sent again, once."""
    client = redis.Redis.from_url(redis_url)
    client.script_flush()

    def calls(stats: dict[str, Any], name: str) -> int:
        return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))

    async def run() -> list[Any]:
        scripts = ScriptClient(redis_url)
        try:
            before = client.info("commandstats")
            first = await scripts.call(SLOW_SCRIPT, [0, "first"])
            middle = client.info("commandstats")
            client.script_flush()
            again = await scripts.call(SLOW_SCRIPT, [0, "again"])
            after = client.info("commandstats")
            return [first, middle, again, before, after]
        finally:
            await scripts.close()

    first, middle, again, before, after = asyncio.run(run())
    assert (first, again) == (b"first", b"again")
    assert calls(middle, "evalsha") - calls(before, "evalsha") == 1  # ran at once, no NOSCRIPT
    assert calls(middle, "script|load") - calls(before, "script|load") == 1
    assert calls(after, "evalsha") - calls(middle, "evalsha") == 2  # NOSCRIPT, then it ran
    assert client.script_exists(SLOW_SCRIPT.sha) == [True]
    client.close()


def test_connections_are_reused_and_a_result_is_taken_once(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    before = client.info("stats")["total_connections_received"]

    async def run() -> list[Any]:
        scripts = ScriptClient(redis_url)
        try:
            replies = [await scripts.call(SLOW_SCRIPT, [0, str(i)]) for i in range(5)]
            pending = await scripts.send(SLOW_SCRIPT, [0, "once"])
            replies.append(await pending.result())
            with pytest.raises(RuntimeError):
                await pending.result()
            return replies
        finally:
            await scripts.close()

    assert asyncio.run(run()) == [b"0", b"1", b"2", b"3", b"4", b"once"]
    assert client.info("stats")["total_connections_received"] - before == 1
    client.close()


ERRORS = [
    "OOM command not allowed when used memory > 'maxmemory'.",
    "NOPERM this user has no permissions to run the 'evalsha' command",
    "READONLY You can't write against a read only replica.",
    "LOADING Redis is loading the dataset in memory",
    "BUSY Redis is busy running a script.",
    "MASTERDOWN Link with MASTER is down",
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "ERR something else",
    "segstream state key x has the wrong type",
]


@pytest.mark.parametrize("reply", ERRORS)
def test_an_error_reply_is_raised_as_redis_py_raises_it(redis_url: str, reply: str) -> None:
    script = Script.of(f"return redis.error_reply({reply!r})")
    client = redis.Redis.from_url(redis_url)
    with pytest.raises(rex.RedisError) as by_redis_py:
        client.eval(script.text, 0)
    client.close()
    with pytest.raises(rex.RedisError) as got:
        call(redis_url, script, [])
    assert type(got.value) is type(by_redis_py.value)
    assert str(got.value) == str(by_redis_py.value)
    assert got.value.status_code == by_redis_py.value.status_code


def test_a_refused_connection_raises_connection_error() -> None:
    with pytest.raises(rex.ConnectionError):
        call(f"redis://127.0.0.1:{free_port()}/0", SLOW_SCRIPT, [0, "x"])


@dataclass
class PasswordRedis:
    port: int
    socket: Path
    password: str


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[PasswordRedis]:
    """A redis-server of this test's own that wants a password, on TCP and a unix socket."""
    port, sock, password = free_port(), tmp_path / "redis.sock", "s3cr:t@/pw"
    args = [
        str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
        "--unixsocket", str(sock), "--unixsocketperm", "700", "--requirepass", password,
    ]  # fmt: skip
    with open(tmp_path / "redis.log", "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port, password=password)

    def answers() -> bool:
        with contextlib.suppress(rex.ConnectionError):
            return bool(client.ping())
        return False

    try:
        wait_for(answers, 15, "the password-protected redis-server")
        yield PasswordRedis(port, sock, password)
    finally:
        client.close()
        proc.terminate()
        proc.wait(15)


def test_the_credentials_and_database_in_the_url_are_used(password_redis: PasswordRedis) -> None:
    from urllib.parse import quote

    pw = quote(password_redis.password, safe="")
    port = password_redis.port
    assert call(f"redis://:{pw}@127.0.0.1:{port}/3", INCR, ["n"]) == 1
    assert call(f"redis://default:{pw}@127.0.0.1:{port}/3", INCR, ["n"]) == 2
    assert call(f"unix://:{pw}@{password_redis.socket}?db=3", INCR, ["n"]) == 3
    client = redis.Redis(port=port, password=password_redis.password, db=3)
    assert client.get("n") == b"3"  # database 3, not 0
    assert redis.Redis(port=port, password=password_redis.password).get("n") is None
    client.close()
    with pytest.raises(rex.AuthenticationError):
        call(f"redis://:wrong@127.0.0.1:{port}/0", INCR, ["n"])
    with pytest.raises(rex.AuthenticationError):
        call(f"redis://127.0.0.1:{port}/0", INCR, ["n"])  # NOAUTH


def test_a_redis_url_reads_as_redis_py_reads_it() -> None:
    assert Endpoint.from_url("redis://u:p%40ss@h:7000/2") == Endpoint(
        "h", 7000, None, 2, "u", "p@ss"
    )
    assert Endpoint.from_url("redis://h") == Endpoint("h")
    assert Endpoint.from_url("redis://h:1/0?db=5").db == 5
    assert Endpoint.from_url("rediss://h:1").tls
    assert Endpoint.from_url("unix:///run/redis.sock?db=1") == Endpoint(
        path="/run/redis.sock", db=1
    )
    with pytest.raises(ValueError):
        Endpoint.from_url("http://h:1")


def test_with_wait_replicas_a_call_returns_once_its_replica_has_it_and_fails_without_one(
    tmp_path: Path,
) -> None:
    """SEGSTREAM_REDIS_WAIT_REPLICAS: each call is followed by WAIT on its connection; a
    replica that has the write lets it return, none raises ReplicasBehind (an outage)."""
    primary_port, replica_port = free_port(), free_port()
    started = []
    for port, extra in (
        (primary_port, []),
        (replica_port, ["--replicaof", "127.0.0.1", str(primary_port)]),
    ):
        node_dir = tmp_path / str(port)
        node_dir.mkdir()
        started.append(
            subprocess.Popen(
                [
                    str(redis_server_binary()),
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(node_dir),
                    *extra,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        replica = redis.Redis(port=replica_port)
        wait_for(
            lambda: replica.info("replication").get("master_link_status") == "up",
            20,
            "the replica to follow the primary",
        )

        async def run(replicas: int, timeout_ms: int) -> Any:
            scripts = ScriptClient(
                f"redis://127.0.0.1:{primary_port}/0",
                wait_replicas=replicas,
                wait_timeout_ms=timeout_ms,
            )
            try:
                return await scripts.call(INCR, ["waited"])
            finally:
                await scripts.close()

        # WAIT returns as soon as the replica acknowledges: a long bound costs nothing here and
        # holds on a busy machine; the refusal waits its whole bound, so that one is short
        assert asyncio.run(run(1, 10_000)) == 1
        assert replica.get("waited") == b"1"
        with pytest.raises(ReplicasBehind, match="only 1 of 2 replica"):
            asyncio.run(run(2, 300))  # the write itself landed; the caller retries it (fenced)
    finally:
        for proc in started:
            proc.terminate()
            proc.wait(10)
