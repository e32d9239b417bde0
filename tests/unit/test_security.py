"""Client security options built from the settings, and what a bad setting says."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from devstack.certs import issue_local_certs
from segstream.acl import SEGSTREAM_COMMANDS, segstream_acl, storefront_acl
from segstream.cli import _access_refusal
from segstream.errors import ConfigError
from segstream.security import kafka_options, read_secret, redis_options, redis_ssl_context
from segstream.settings import KafkaSettings, RedisSettings, Settings


def test_plaintext_kafka_passes_nothing_new_to_the_clients() -> None:
    assert kafka_options(KafkaSettings()) == {}


def test_sasl_ssl_gives_a_verifying_tls_context_and_the_scram_login(tmp_path: Path) -> None:
    certs = issue_local_certs(tmp_path)
    options = kafka_options(
        KafkaSettings(
            security_protocol="sasl_ssl",
            sasl_mechanism="scram-sha-512",
            sasl_username="segstream",
            sasl_password="pw",
            ssl_cafile=str(certs.ca),
        )
    )
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "segstream",
        "sasl_plain_password": "pw",
    }


def test_the_sasl_password_is_read_from_its_file_when_not_given(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-the-file\n")
    options = kafka_options(
        KafkaSettings(
            security_protocol="SASL_PLAINTEXT",
            sasl_username="u",
            sasl_password_file=str(secret),
        )
    )
    assert options["sasl_plain_password"] == "from-the-file"
    assert "ssl_context" not in options


def test_hostname_checks_are_off_only_when_asked(tmp_path: Path) -> None:
    certs = issue_local_certs(tmp_path)
    loose = KafkaSettings(
        security_protocol="SSL", ssl_cafile=str(certs.ca), ssl_check_hostname=False
    )
    context = kafka_options(loose)["ssl_context"]
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("kafka", "says"),
    [
        (KafkaSettings(security_protocol="TLS"), "SEGSTREAM_KAFKA_SECURITY_PROTOCOL='TLS'"),
        (
            KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="GSSAPI"),
            "SEGSTREAM_KAFKA_SASL_MECHANISM='GSSAPI'",
        ),
        (KafkaSettings(security_protocol="SASL_PLAINTEXT"), "SEGSTREAM_KAFKA_SASL_USERNAME"),
        (
            KafkaSettings(security_protocol="SSL", ssl_cafile="/nonexistent/ca.pem"),
            "SEGSTREAM_KAFKA_SSL_CAFILE=/nonexistent/ca.pem: no such file",
        ),
        (
            KafkaSettings(
                security_protocol="SASL_PLAINTEXT",
                sasl_username="u",
                sasl_password_file="/nonexistent/pw",
            ),
            "SEGSTREAM_KAFKA_SASL_PASSWORD_FILE=/nonexistent/pw: cannot read it",
        ),
    ],
)
def test_a_setting_that_cannot_work_is_a_config_error_naming_its_variable(
    kafka: KafkaSettings, says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        kafka_options(kafka)
    assert says in str(caught.value)


def test_redis_tls_options_apply_to_rediss_urls_only(tmp_path: Path) -> None:
    certs = issue_local_certs(tmp_path)
    plain = RedisSettings(url="redis://h:6379/0", ssl_ca_certs=str(certs.ca))
    assert redis_options(plain) == {}
    secure = RedisSettings(url="rediss://u@h:6380/0", ssl_ca_certs=str(certs.ca))
    assert redis_options(secure) == {"ssl_ca_certs": str(certs.ca), "ssl_check_hostname": True}
    assert redis_ssl_context(secure).verify_mode == ssl.CERT_REQUIRED


def test_the_redis_password_file_is_used_when_the_url_carries_no_password(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text("s3cret\n")
    bare = RedisSettings(url="redis://segstream@h:6379/0", password_file=str(secret))
    assert redis_options(bare) == {"password": "s3cret"}
    given = RedisSettings(url="redis://segstream:other@h:6379/0", password_file=str(secret))
    assert redis_options(given) == {}


def test_an_empty_secret_file_reads_as_no_secret(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    assert read_secret(str(empty), "X") == ""
    assert read_secret("", "X") == ""


def test_security_settings_come_from_their_environment_variables() -> None:
    settings = Settings.from_env(
        {
            "SEGSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "SEGSTREAM_KAFKA_SASL_USERNAME": "svc",
            "SEGSTREAM_KAFKA_SSL_CHECK_HOSTNAME": "0",
            "SEGSTREAM_REDIS_SSL_CA_CERTS": "/etc/ca.pem",
            "SEGSTREAM_REDIS_PASSWORD_FILE": "/run/secrets/redis",
        }
    )
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.sasl_username == "svc"
    assert settings.kafka.ssl_check_hostname is False
    assert settings.redis.ssl_ca_certs == "/etc/ca.pem"
    assert settings.redis.password_file == "/run/secrets/redis"


def test_the_sasl_password_is_not_in_the_settings_repr() -> None:
    settings = Settings.of(kafka_sasl_password="hunter2-secret")
    assert "hunter2-secret" not in repr(settings)


def test_the_segstream_acl_names_its_prefix_and_every_command_it_needs() -> None:
    rules = segstream_acl("shop")
    assert rules[:3] == ["resetkeys", "resetchannels", "-@all"]
    assert "~shop:*" in rules
    assert {f"+{c}" for c in SEGSTREAM_COMMANDS} <= set(rules)


def test_the_storefront_acl_reads_the_prefix_only_and_writes_nothing() -> None:
    rules = storefront_acl("shop")
    assert "%R~shop:*" in rules and "~shop:*" not in rules
    assert not {"+hset", "+set", "+del", "+eval", "+evalsha"} & set(rules)


def test_a_client_refusal_anywhere_in_the_chain_becomes_one_redacted_line() -> None:
    import redis.exceptions as rex

    try:
        try:
            raise rex.AuthenticationError("invalid password for redis://u:pw@h:6379/0")
        except rex.AuthenticationError as inner:
            raise RuntimeError("while exporting") from inner
    except RuntimeError as outer:
        line = _access_refusal(outer)
    assert line == "AuthenticationError: invalid password for redis://u:***@h:6379/0"
    assert _access_refusal(ValueError("something else")) is None


def test_the_start_up_probe_runs_every_data_command_the_acl_grants() -> None:
    from worker.preflight import PROBE_SCRIPT

    sent_by_the_client = {"auth", "hello", "ping", "select", "client|setname", "client|id"}
    sent_by_the_client |= {"evalsha", "eval", "script|load", "script|exists", "scan", "wait"}
    for command in set(SEGSTREAM_COMMANDS) - sent_by_the_client:
        assert f"'{command.upper()}'" in PROBE_SCRIPT, command


def test_every_command_a_lua_script_sends_is_granted_by_the_acl() -> None:
    """A command a script adds but the ACL lacks fails every batch under a least-privilege user."""
    root = Path(__file__).resolve().parents[2]
    scripts = sorted(root.glob("worker/**/*.lua"))
    called = {
        match.lower()
        for script in scripts
        for match in re.findall(r"redis\.p?call\(\s*'([A-Za-z]+)'", script.read_text())
    }
    assert scripts and {"hset", "zadd", "zmscore"} <= called
    assert called <= set(SEGSTREAM_COMMANDS), called - set(SEGSTREAM_COMMANDS)


def test_the_acl_lines_in_the_security_docs_are_what_segstream_acl_prints() -> None:
    from click.testing import CliRunner

    from segstream.acl_cli import acl

    printed = CliRunner().invoke(acl, ["--redis-prefix", "ss"]).output.splitlines()
    docs = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    assert len(printed) == 2
    for line in printed:
        assert line in docs, line
