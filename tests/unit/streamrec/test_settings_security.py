"""TLS / SASL settings: validation, what librdkafka and Faust get, child processes, and
warnings for misspelt STREAMREC_* variables. No broker."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import faust
import pydantic
import pytest

import streamrec.settings as settings_module
from stream_app.app import faust_broker_options
from streamrec.broker.kafka import KafkaBroker, TlsFiles
from streamrec.errors import ConfigError
from streamrec.kafka import consumer_config, producer_config, ssl_context
from streamrec.settings import Settings, unknown_env_vars
from tests.certs import Certs, make_certs

SASL = dict(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
            sasl_username="alice", sasl_password="pw-secret")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No STREAMREC_* / KAFKA_* variables of the machine running the tests leak in."""
    import os
    for var in list(os.environ):
        if var.upper().startswith(("STREAMREC_", "KAFKA_")):
            monkeypatch.delenv(var)
    monkeypatch.setattr(settings_module, "_warned_env", set())


def full_tls(certs: Certs, **more: object) -> Settings:
    return Settings(**{**SASL, "ssl_ca_location": str(certs.ca),
                       "ssl_certificate_location": str(certs.client_cert),
                       "ssl_key_location": str(certs.client_key),
                       "ssl_key_password": certs.client_key_password, **more})


def test_default_is_plaintext_as_before() -> None:
    assert Settings().kafka_common() == {"bootstrap.servers": "localhost:9092",
                                         "security.protocol": "PLAINTEXT"}
    assert "broker_credentials" not in faust_broker_options(Settings())


def test_every_librdkafka_client_gets_tls_and_sasl(certs: Certs) -> None:
    s = full_tls(certs)
    want = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "alice", "sasl.password": "pw-secret",
            "ssl.ca.location": str(certs.ca), "ssl.certificate.location": str(certs.client_cert),
            "ssl.key.location": str(certs.client_key),
            "ssl.key.password": certs.client_key_password,
            "ssl.endpoint.identification.algorithm": "https"}
    for conf in (s.kafka_common(), producer_config(s), consumer_config(s, "g")):
        assert want.items() <= conf.items()
    none = full_tls(certs, ssl_endpoint_identification="none").kafka_common()
    assert none["ssl.endpoint.identification.algorithm"] == "none"


def test_names_are_case_insensitive_and_validated() -> None:
    s = Settings(security_protocol="sasl_ssl", sasl_mechanism="scram-sha-256",
                 sasl_username="a", sasl_password="b")
    assert (s.security_protocol, s.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    with pytest.raises(pydantic.ValidationError, match="SASL_SSL"):
        Settings(security_protocol="TLS")
    with pytest.raises(pydantic.ValidationError, match="SCRAM-SHA-512"):
        Settings(**{**SASL, "sasl_mechanism": "GSSAPI"})


@pytest.mark.parametrize("values, message", [
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "a"},
     "needs STREAMREC_SASL_USERNAME and STREAMREC_SASL_PASSWORD; missing: "
     "STREAMREC_SASL_PASSWORD"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"},
     "missing: STREAMREC_SASL_USERNAME, STREAMREC_SASL_PASSWORD"),
    ({"security_protocol": "SASL_SSL", "sasl_username": "a", "sasl_password": "b"},
     "needs STREAMREC_SASL_MECHANISM"),
    ({"sasl_mechanism": "PLAIN", "sasl_username": "a", "sasl_password": "b"},
     "PLAINTEXT does not authenticate: set STREAMREC_SECURITY_PROTOCOL to SASL_SSL"),
    ({"ssl_ca_location": "/etc/hostname"}, "PLAINTEXT does not use TLS"),
    ({"security_protocol": "SSL", "ssl_ca_location": "/no/such/ca.pem"},
     "STREAMREC_SSL_CA_LOCATION=/no/such/ca.pem: no such file"),
    ({"security_protocol": "SSL", "ssl_certificate_location": "/etc/hostname"},
     "needs both STREAMREC_SSL_CERTIFICATE_LOCATION and STREAMREC_SSL_KEY_LOCATION"),
])
def test_contradictions_are_config_errors(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings(**values)
    assert message in str(err.value)
    assert "pw-secret" not in str(err.value)


def test_sasl_from_the_environment_without_password_is_a_config_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAMREC_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("STREAMREC_SASL_USERNAME", "alice")
    with pytest.raises(ConfigError, match="missing: STREAMREC_SASL_PASSWORD"):
        Settings()


def test_child_processes_get_every_setting_and_secret(certs: Certs,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    s = full_tls(certs, ssl_endpoint_identification="none")
    env = s.as_env()
    assert env["STREAMREC_SASL_PASSWORD"] == "pw-secret"
    assert env["STREAMREC_SSL_KEY_PASSWORD"] == certs.client_key_password
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert Settings().kafka_common() == s.kafka_common()


def test_secrets_stay_out_of_reprs(certs: Certs) -> None:
    s = full_tls(certs)
    for text in (repr(s), str(s), str(s.model_dump()), repr(faust_broker_options(s))):
        assert "pw-secret" not in text and certs.client_key_password not in text


def test_faust_gets_the_same_tls_and_sasl(certs: Certs) -> None:
    creds = faust_broker_options(full_tls(certs))["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL"          # was SASL_PLAINTEXT
    assert creds.mechanism.value == "SCRAM-SHA-512"
    assert (creds.username, creds.password) == ("alice", "pw-secret")
    assert creds.ssl_context.check_hostname and creds.ssl_context.verify_mode == ssl.CERT_REQUIRED

    plain = faust_broker_options(Settings(security_protocol="SASL_PLAINTEXT",
                                          sasl_mechanism="PLAIN", sasl_username="a",
                                          sasl_password="b"))["broker_credentials"]
    assert plain.protocol.value == "SASL_PLAINTEXT" and plain.ssl_context is None

    tls = faust_broker_options(Settings(security_protocol="SSL", ssl_ca_location=str(certs.ca),
                                        ssl_endpoint_identification="none"))
    assert isinstance(tls["broker_credentials"], faust.SSLCredentials)
    assert not tls["broker_credentials"].context.check_hostname


def test_ssl_context_trusts_the_ca_and_loads_an_encrypted_client_key(certs: Certs) -> None:
    ctx = ssl_context(full_tls(certs))
    assert any(c["subject"] == ((("commonName", "streamrec test CA"),),)
               for c in ctx.get_ca_certs())
    with pytest.raises(ConfigError, match="STREAMREC_SSL_KEY_PASSWORD"):
        ssl_context(full_tls(certs, ssl_key_password="wrong"))
    # no password for an encrypted key: an error, never OpenSSL prompting on a terminal
    with pytest.raises(ConfigError, match="STREAMREC_SSL_KEY_PASSWORD"):
        ssl_context(full_tls(certs, ssl_key_password=None))


def test_misspelt_variables_are_named_once_with_a_suggestion(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("STREAMREC_TOPN", "50")
    monkeypatch.setenv("STREAMREC_SASL_PASWORD", "x")
    monkeypatch.setenv("STREAMREC_WHATEVER_ZZZ", "1")
    for fine in ("STREAMREC_TOP_N", "STREAMREC_LOG_LEVEL", "STREAMREC_CACHE_DIR",
                 "STREAMREC_MAVEN_REPOSITORY", "STREAMREC_TEST_BROKER", "STREAMREC_STATE_DIR",
                 "STREAMREC_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.setenv(fine, "20" if fine == "STREAMREC_TOP_N" else "localhost:1")
    with caplog.at_level(logging.WARNING, logger="streamrec.settings"):
        s = Settings()
        Settings()
    assert s.top_n == 20
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines                      # once per variable, not per Settings
    assert any("STREAMREC_TOPN" in m and "did you mean STREAMREC_TOP_N?" in m for m in lines)
    assert any("STREAMREC_SASL_PASWORD" in m and "did you mean STREAMREC_SASL_PASSWORD?" in m
               for m in lines)
    assert any("STREAMREC_WHATEVER_ZZZ" in m and "did you mean" not in m for m in lines)
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_unknown_env_vars_is_pure() -> None:
    env = {"STREAMREC_TOP_N": "1", "streamrec_explore_shre": "0", "PATH": "/bin",
           "STREAMREC_LOG_LEVEL": "INFO"}
    assert unknown_env_vars(env) == [("streamrec_explore_shre", "STREAMREC_EXPLORE_SHARE")]


def test_broker_adds_a_sasl_ssl_listener_only_when_asked(certs: Certs, tmp_path: Path) -> None:
    plain = KafkaBroker(19092, data_dir=tmp_path / "a", controller_port=19093)
    plain.data_dir.mkdir()
    plain._write_properties()
    text = plain.properties_path.read_text()
    assert "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093\n" in text
    keys = [line.split("=", 1)[0] for line in text.splitlines() if "=" in line]
    assert not [k for k in keys if "sasl" in k.lower() or "ssl" in k.lower()]
    assert "advertised.listeners=PLAINTEXT://127.0.0.1:19092\n" in text

    b = KafkaBroker(19092, data_dir=tmp_path / "b", controller_port=19093, sasl_ssl_port=19094,
                    tls=TlsFiles(certs.server_cert, certs.server_key),
                    users={"alice": "a-secret", "bob": "b-secret"})
    b.data_dir.mkdir()
    b._write_properties()
    props = dict(line.split("=", 1) for line in b.properties_path.read_text().splitlines()
                 if "=" in line and not line.startswith("#"))
    assert props["listeners"].endswith(",SASL_SSL://127.0.0.1:19094")
    assert props["advertised.listeners"] == ("PLAINTEXT://127.0.0.1:19092,"
                                             "SASL_SSL://127.0.0.1:19094")
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["listener.name.sasl_ssl.sasl.enabled.mechanisms"] == \
        "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    assert 'user_alice="a-secret" user_bob="b-secret";' in \
        props["listener.name.sasl_ssl.plain.sasl.jaas.config"]
    assert b.properties_path.stat().st_mode & 0o077 == 0      # it holds passwords
    keystore = b.keystore_path.read_text()
    assert "BEGIN PRIVATE KEY" in keystore and "BEGIN CERTIFICATE" in keystore
    assert b.keystore_path.stat().st_mode & 0o077 == 0
    assert b.sasl_ssl_bootstrap == "127.0.0.1:19094"


@pytest.mark.parametrize("kwargs, message", [
    ({"users": {"alice": "x"}}, "needs tls"),
    ({"users": {"al ice": "x"}, "tls": True}, "letters, digits"),
    ({"users": {"alice": 'x"y'}, "tls": True}, "without quotes"),
])
def test_broker_refuses_bad_listener_arguments(certs: Certs, tmp_path: Path, kwargs: dict,
                                               message: str) -> None:
    if kwargs.pop("tls", None):
        kwargs["tls"] = TlsFiles(certs.server_cert, certs.server_key)
    with pytest.raises(ConfigError, match=message):
        KafkaBroker(19092, data_dir=tmp_path, sasl_ssl_port=19094, **kwargs)


def test_broker_wants_a_pkcs8_key(certs: Certs, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(certs.server_key.read_bytes(), None)
    legacy = tmp_path / "legacy.key"
    legacy.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.TraditionalOpenSSL,
                                         serialization.NoEncryption()))
    b = KafkaBroker(19092, data_dir=tmp_path / "d", controller_port=19093, sasl_ssl_port=19094,
                    tls=TlsFiles(certs.server_cert, legacy), users={"alice": "x"})
    b.data_dir.mkdir()
    with pytest.raises(ConfigError, match="openssl pkcs8 -topk8 -nocrypt"):
        b._write_properties()
