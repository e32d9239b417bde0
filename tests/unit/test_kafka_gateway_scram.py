"""The gateway's SASL servers and wire encoding, without a socket (devstack/sasl.py, kafka_wire.py).

The SCRAM client below is written from RFC 5802 §3 (not taken from the gateway), checked first
against RFC 7677's SCRAM-SHA-256 example, then used against the server. The Kafka encodings are
decoded with kafka-python's own protocol classes, for every version the gateway answers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse
from kafka.protocol.sasl import (
    SaslAuthenticateRequest,
    SaslAuthenticateResponse,
    SaslHandshakeRequest,
    SaslHandshakeResponse,
)

from devstack.kafka_wire import (
    RequestHeader,
    advertised_versions,
    api_versions_body,
    parse_request,
    response_frame,
    sasl_authenticate_body,
    sasl_handshake_body,
)
from devstack.sasl import (
    AuthenticationFailed,
    PlainServer,
    ScramCredential,
    ScramServer,
    User,
    UserStore,
    load_users,
    write_users_file,
)
from segstream.errors import ConfigError

# RFC 7677 §3: user "user", password "pencil".
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
SECRET = b"k" * 32


def client_final(
    password: str, hash_name: str, client_first: bytes, server_first: bytes, channel: bytes = b""
) -> tuple[bytes, bytes]:
    """RFC 5802 §3, client side: (client-final-message, the server signature to expect)."""
    fields = dict(part.split("=", 1) for part in server_first.decode().split(","))
    salted = hashlib.pbkdf2_hmac(
        hash_name, password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
    )
    client_key = hmac.new(salted, b"Client Key", hash_name).digest()
    stored_key = hashlib.new(hash_name, client_key).digest()
    gs2_header, bare = client_first.split(b",", 2)[:2], client_first.split(b",", 2)[2]
    cbind = base64.b64encode(b",".join(gs2_header) + b"," + channel)
    without_proof = b"c=" + cbind + b",r=" + fields["r"].encode()
    auth_message = bare + b"," + server_first + b"," + without_proof
    signature = hmac.new(stored_key, auth_message, hash_name).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_key = hmac.new(salted, b"Server Key", hash_name).digest()
    expected = hmac.new(server_key, auth_message, hash_name).digest()
    return without_proof + b",p=" + base64.b64encode(proof), b"v=" + base64.b64encode(expected)


def rfc_server() -> ScramServer:
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    credential = ScramCredential.from_password("pencil", "SCRAM-SHA-256", salt=salt)
    return ScramServer(
        "SCRAM-SHA-256",
        {"user": credential}.get,
        secret=SECRET,
        server_nonce=RFC_SERVER_NONCE,
    )


def store() -> UserStore:
    return UserStore(
        [
            User("alice", "SCRAM-SHA-512", "wonder:land"),
            User("a,b=c", "SCRAM-SHA-512", "odd name"),
            User("bob", "PLAIN", "builder"),
        ]
    )


def scram512(users: UserStore) -> ScramServer:
    return ScramServer("SCRAM-SHA-512", lambda n: users.scram("SCRAM-SHA-512", n), secret=SECRET)


def exchange(server: ScramServer, user: str, password: str, nonce: str = "cnonce1") -> bytes:
    """A whole SCRAM-SHA-512 login; returns the server-final message or raises."""
    first = f"n,,n={user},r={nonce}".encode()
    server_first = server.step(first)
    final, _ = client_final(password, "sha512", first, server_first)
    return server.step(final)


# -- the RFC example ------------------------------------------------------------------------------
def test_the_test_client_reproduces_rfc_7677_client_proof_and_server_signature() -> None:
    final, signature = client_final("pencil", "sha256", RFC_CLIENT_FIRST, RFC_SERVER_FIRST)
    assert final == RFC_CLIENT_FINAL
    assert signature == RFC_SERVER_FINAL


def test_the_server_replays_rfc_7677_exchange_message_for_message() -> None:
    server = rfc_server()
    assert server.step(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert server.step(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL
    assert server.complete and server.username == "user"


def test_rfc_7677_exchange_with_a_wrong_proof_is_refused_as_invalid_proof() -> None:
    server = rfc_server()
    server.step(RFC_CLIENT_FIRST)
    tampered = RFC_CLIENT_FINAL.replace(b"p=dHzb", b"p=dHzc")
    with pytest.raises(AuthenticationFailed) as failed:
        server.step(tampered)
    assert failed.value.reply == b"e=invalid-proof"
    assert not server.complete


# -- SCRAM-SHA-512 against the store ------------------------------------------------------------
def test_scram_sha_512_login_succeeds_and_the_client_can_verify_the_server() -> None:
    users = store()
    server = scram512(users)
    first = b"n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL"
    server_first = server.step(first)
    assert server_first.startswith(b"r=fyko+d2lbbFgONRv9qkxdawL")
    final, expected_signature = client_final("wonder:land", "sha512", first, server_first)
    assert server.step(final) == expected_signature
    assert server.complete and server.username == "alice"


def test_a_wrong_password_is_refused_with_invalid_proof() -> None:
    with pytest.raises(AuthenticationFailed) as failed:
        exchange(scram512(store()), "alice", "wonderland")
    assert failed.value.reply == b"e=invalid-proof"


def test_an_unknown_user_gets_a_stable_plausible_salt_and_the_same_error_as_a_wrong_password() -> (
    None
):
    users = store()
    firsts = [scram512(users).step(f"n,,n={u},r=abc".encode()) for u in ("mallory", "mallory")]
    fields = [dict(p.split("=", 1) for p in f.decode().split(",")) for f in firsts]
    real = dict(
        p.split("=", 1) for p in scram512(users).step(b"n,,n=alice,r=abc").decode().split(",")
    )
    assert fields[0]["s"] == fields[1]["s"], "a changing salt would reveal an unknown user"
    assert len(base64.b64decode(fields[0]["s"])) == len(base64.b64decode(real["s"]))
    assert fields[0]["i"] == real["i"] == "4096"
    other = scram512(users).step(b"n,,n=trudy,r=abc").decode()
    assert f"s={fields[0]['s']}" not in other
    with pytest.raises(AuthenticationFailed) as failed:
        exchange(scram512(users), "mallory", "anything")
    assert failed.value.reply == b"e=invalid-proof"
    assert str(failed.value) == "invalid credentials (e=invalid-proof)"


def test_escaped_user_names_are_decoded_as_rfc_5802_says() -> None:
    server = scram512(store())
    assert exchange(server, "a=2Cb=3Dc", "odd name").startswith(b"v=")
    assert server.username == "a,b=c"


def test_a_server_nonce_the_client_changed_is_refused() -> None:
    server = scram512(store())
    first = b"n,,n=alice,r=abc"
    server_first = server.step(first)
    final, _ = client_final("wonder:land", "sha512", first, server_first)
    with pytest.raises(AuthenticationFailed) as failed:
        server.step(final.replace(b",r=abc", b",r=abd"))
    assert failed.value.reply == b"e=other-error"


def test_channel_binding_data_that_differ_from_the_gs2_header_are_refused() -> None:
    server = scram512(store())
    first = b"n,,n=alice,r=abc"
    server_first = server.step(first)
    final, _ = client_final("wonder:land", "sha512", b"y,,n=alice,r=abc", server_first)
    with pytest.raises(AuthenticationFailed) as failed:
        server.step(final)
    assert failed.value.reply == b"e=channel-bindings-dont-match"


@pytest.mark.parametrize(
    ("first", "error"),
    [
        (b"p=tls-unique,,n=alice,r=abc", b"e=channel-binding-not-supported"),
        (b"n,,m=ext,n=alice,r=abc", b"e=extensions-not-supported"),
        (b"n,,n=al=41ice,r=abc", b"e=invalid-username-encoding"),
        (b"n,,r=abc", b"e=invalid-encoding"),
        (b"\xff\xfe", b"e=invalid-encoding"),
    ],
)
def test_malformed_client_first_messages_are_refused_with_their_rfc_error(
    first: bytes, error: bytes
) -> None:
    with pytest.raises(AuthenticationFailed) as failed:
        scram512(store()).step(first)
    assert failed.value.reply == error


# -- PLAIN --------------------------------------------------------------------------------------
def test_plain_accepts_the_right_password_and_refuses_others() -> None:
    users = store()
    ok = PlainServer(users.plain_ok)
    assert ok.step(b"\0bob\0builder") == b"" and ok.complete and ok.username == "bob"
    for token in (b"\0bob\0fixer", b"\0nobody\0builder", b"alice\0bob\0builder", b"bob"):
        with pytest.raises(AuthenticationFailed):
            PlainServer(users.plain_ok).step(token)


def test_the_handshake_lists_only_mechanisms_some_user_has_strongest_first() -> None:
    assert store().mechanisms == ("SCRAM-SHA-512", "PLAIN")
    assert UserStore([User("x", "scram-sha-256", "p")]).mechanisms == ("SCRAM-SHA-256",)
    with pytest.raises(ConfigError, match="unknown SASL mechanism"):
        UserStore([User("x", "GSSAPI", "p")])


# -- the users file -----------------------------------------------------------------------------
def test_users_file_is_written_mode_0600_and_read_back_with_colons_in_passwords(
    tmp_path: Path,
) -> None:
    path = write_users_file(tmp_path / "users", [User("alice", "SCRAM-SHA-512", "a:b:c")])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "alice:SCRAM-SHA-512:a:b:c\n"
    users = load_users(path)
    assert exchange(scram512(users), "alice", "a:b:c").startswith(b"v=")


def test_a_users_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = write_users_file(tmp_path / "users", [User("alice", "PLAIN", "secret")])
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_users(path)


def test_a_users_file_line_without_a_password_is_refused_with_its_line_number(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users"
    path.write_text("# comment\n\nalice:PLAIN\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=r"users:3: expected name:MECHANISM:password"):
        load_users(path)


# -- the Kafka encoding, checked by kafka-python's decoders --------------------------------------
@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_api_versions_answers_decode_in_every_version_and_list_the_sasl_apis(
    version: int,
) -> None:
    extra = {"client_software_name": "t", "client_software_version": "1"} if version >= 3 else {}
    request = ApiVersionsRequest(version=version, **extra)
    request.with_header(correlation_id=7, client_id="c")
    header, _ = parse_request(request.encode(header=True, framed=True)[4:])
    versions = advertised_versions([(0, 0, 11), (17, 0, 1), (18, 0, 4), (36, 0, 1), (3, 0, 12)])
    frame = response_frame(header, api_versions_body(version, versions))
    decoded = ApiVersionsResponse.decode(frame, version=version, header=True, framed=True)
    assert decoded.error_code == 0
    ranges = {k.api_key: (k.min_version, k.max_version) for k in decoded.api_keys}
    assert ranges == {0: (0, 11), 3: (0, 12), 17: (0, 1), 18: (0, 4), 36: (0, 2)}


def test_an_api_versions_request_of_an_unknown_version_gets_unsupported_version_in_v0_form() -> (
    None
):
    frame = response_frame(RequestHeader(18, 9, 5, "c"), api_versions_body(9, []))
    decoded = ApiVersionsResponse.decode(frame, version=0, header=True, framed=True)
    assert decoded.error_code == 35
    assert [(k.api_key, k.max_version) for k in decoded.api_keys] == [(18, 4)]


@pytest.mark.parametrize("version", [0, 1, 2])
def test_sasl_authenticate_requests_and_answers_round_trip_in_every_version(version: int) -> None:
    request = SaslAuthenticateRequest(auth_bytes=b"n,,n=u,r=x", version=version)
    request.with_header(correlation_id=42, client_id="cli")
    header, body = parse_request(request.encode(header=True, framed=True)[4:])
    assert header == RequestHeader(36, version, 42, "cli")
    assert (body.compact_bytes() if version >= 2 else body.bytes32()) == b"n,,n=u,r=x"
    answer = sasl_authenticate_body(version, 58, "Authentication failed", b"e=invalid-proof")
    decoded = SaslAuthenticateResponse.decode(
        response_frame(header, answer), version=version, header=True, framed=True
    )
    assert (decoded.error_code, decoded.error_message, bytes(decoded.auth_bytes)) == (
        58,
        "Authentication failed",
        b"e=invalid-proof",
    )


@pytest.mark.parametrize("version", [0, 1])
def test_sasl_handshake_answers_decode_with_the_enabled_mechanisms(version: int) -> None:
    request = SaslHandshakeRequest(mechanism="SCRAM-SHA-512", version=version)
    request.with_header(correlation_id=3, client_id=None)
    header, body = parse_request(request.encode(header=True, framed=True)[4:])
    assert (header.api_key, header.api_version, body.string()) == (17, version, "SCRAM-SHA-512")
    frame = response_frame(header, sasl_handshake_body(33, ["SCRAM-SHA-512", "PLAIN"]))
    decoded = SaslHandshakeResponse.decode(frame, version=version, header=True, framed=True)
    assert (decoded.error_code, list(decoded.mechanisms)) == (33, ["SCRAM-SHA-512", "PLAIN"])
