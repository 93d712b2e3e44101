"""Settings are layered defaults < YAML file < PREFLEAK_* env vars < flags, and fail clearly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from prefleak.config import MASK, ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own PREFLEAK_* variables must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("PREFLEAK_"):
            monkeypatch.delenv(name)


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "prefleak.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_defaults() -> None:
    settings = load_settings()
    assert settings.db == Path("prefleak.db")
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 9464)
    assert settings.http.max_body_bytes == 16 * 1024 * 1024
    assert settings.max_message_bytes == 1024 * 1024
    assert settings.recompute.interval_s == 30
    assert settings.metrics.top_pairs == 50
    assert not settings.kafka.enabled
    assert settings.kafka.verdict_topics == ["prefleak.verdicts"]
    assert settings.kafka.provenance_topics == ["prefleak.provenance"]
    assert settings.watch.directory is None


def test_layers_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _write(
        tmp_path,
        {"db": "from-file.db", "http": {"port": 1000, "host": "0.0.0.0"}, "pls": {"ties": "half"}},
    )
    settings = load_settings(config)
    assert (settings.db, settings.http.port, settings.http.host) == (
        Path("from-file.db"),
        1000,
        "0.0.0.0",
    )
    monkeypatch.setenv("PREFLEAK_HTTP__PORT", "2000")
    monkeypatch.setenv("PREFLEAK_DB", "from-env.db")
    settings = load_settings(config)
    assert (settings.db, settings.http.port) == (Path("from-env.db"), 2000)
    assert settings.http.host == "0.0.0.0", "an env var for one key keeps the file's siblings"
    assert settings.pls.ties == "half"
    settings = load_settings(config, {"http": {"port": 3000}, "db": Path("flag.db")})
    assert (settings.db, settings.http.port, settings.http.host) == (
        Path("flag.db"),
        3000,
        "0.0.0.0",
    )


def test_env_lists_may_be_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFLEAK_KAFKA__BOOTSTRAP_SERVERS", "k1:9092, k2:9092")
    monkeypatch.setenv("PREFLEAK_METRICS__JUDGES", '["gpt-4o", "gemini-1.5"]')
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == ["k1:9092", "k2:9092"]
    assert settings.kafka.enabled
    assert settings.metrics.judges == ["gpt-4o", "gemini-1.5"]
    assert load_settings(
        None, {"kafka": {"bootstrap_servers": "k3:1"}}
    ).kafka.bootstrap_servers == ["k3:1"]


def test_secrets_are_masked_in_shown_settings() -> None:
    options = {
        "security_protocol": "SASL_SSL",
        "sasl_plain_password": "hunter2",
        "SSL_KEY_PASSWORD": "s3cret",
        "oauth": {"token": "abc", "url": "https://idp"},
        "ssl_cafile": "/etc/ca.pem",
    }
    shown = load_settings(None, {"kafka": {"client_options": options}}).shown()
    assert shown["kafka"]["client_options"] == {
        "security_protocol": "SASL_SSL",
        "sasl_plain_password": MASK,
        "SSL_KEY_PASSWORD": MASK,
        "oauth": {"token": MASK, "url": "https://idp"},
        "ssl_cafile": "/etc/ca.pem",
    }
    assert "hunter2" not in yaml.safe_dump(shown)


def test_shown_settings_load_back(tmp_path: Path) -> None:
    """``config show`` output is itself a valid config file."""
    shown = load_settings(None, {"watch": {"directory": "incoming"}}).shown()
    assert load_settings(_write(tmp_path, shown)).shown() == shown


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"http": {"port": "abc"}}, "http.port: Input should be a valid integer"),
        ({"http": {"port": 70000}}, "http.port"),
        ({"recompute": {"interval_s": 0}}, "recompute.interval_s: Input should be greater than 0"),
        ({"pls": {"ties": "sometimes"}}, "pls.ties"),
        ({"kafak": {}}, "kafak: unknown key"),
        ("http: [\n", "is not valid YAML (line 2)"),
        ("- a\n- b\n", "must hold a mapping"),
    ],
)
def test_invalid_file_names_the_field(tmp_path: Path, content: object, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, content))
    assert expected in str(caught.value)


def test_invalid_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFLEAK_HTTP__MAX_BODY_BYTES", "-1")
    with pytest.raises(ConfigError, match=r"http\.max_body_bytes.*PREFLEAK_HTTP__MAX_BODY_BYTES"):
        load_settings()


def test_secret_values_are_not_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"kafka": {"client_options": "sasl_plain_password=hunter2"}})
    assert "kafka.client_options" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.yaml"):
        load_settings(tmp_path / "nope.yaml")


def test_example_config_is_the_defaults() -> None:
    """config/prefleak.example.yaml documents every key with its default value."""
    example = Path(__file__).parents[1] / "config" / "prefleak.example.yaml"
    assert load_settings(example).shown() == Settings().shown()


def test_kafka_example_config_loads() -> None:
    example = Path(__file__).parents[1] / "config" / "prefleak.kafka.example.yaml"
    settings = load_settings(example)
    assert settings.kafka.enabled
    assert settings.kafka.client_options["security_protocol"] == "SASL_SSL"


TOKEN = "0123456789abcdef-token"


def test_bearer_token_from_env_or_file_is_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings().http.bearer_token() is None
    monkeypatch.setenv("PREFLEAK_HTTP__AUTH_TOKEN", f"  {TOKEN}\n")
    settings = load_settings()
    assert settings.http.bearer_token() == TOKEN
    assert settings.shown()["http"]["auth_token"] == MASK
    assert TOKEN not in repr(settings) and TOKEN not in yaml.safe_dump(settings.shown())
    monkeypatch.delenv("PREFLEAK_HTTP__AUTH_TOKEN")

    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    settings = load_settings(_write(tmp_path, {"http": {"auth_token_file": str(token_file)}}))
    assert settings.http.bearer_token() == TOKEN
    assert settings.shown()["http"] == {
        **Settings().shown()["http"],
        "auth_token_file": str(token_file),
    }
    assert load_settings(_write(tmp_path, settings.shown())).http.bearer_token() == TOKEN
    monkeypatch.setenv("PREFLEAK_HTTP__PROTECT_READS", "true")
    assert load_settings(_write(tmp_path, settings.shown())).http.protect_reads


@pytest.mark.parametrize(
    ("http", "expected"),
    [
        ({"auth_token": "hunter2"}, "http.auth_token: a token needs 16 characters"),
        ({"auth_token": "hunter2 hunter2 hunter2"}, "http.auth_token: a token is printable ASCII"),
        ({"auth_token": "hunter2-hunter2-ü"}, "http.auth_token: a token is printable ASCII"),
        ({"auth_token": "***"}, "http.auth_token"),  # what `config show` prints instead
        ({"auth_token_file": "nope/token"}, "http.auth_token_file: cannot read nope/token"),
        ({"auth_token": "hunter2-hunter2-hunter2", "auth_token_file": "t"}, "give the token once"),
        ({"protect_reads": True}, "http.protect_reads: needs a token"),
    ],
)
def test_unusable_token_settings_name_the_key_not_the_token(
    tmp_path: Path, http: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, {"http": http}))
    assert expected in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_token_file_content_is_checked(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    for content, expected in [("", "16 characters"), ("two words here, too", "printable ASCII")]:
        token_file.write_text(content)
        with pytest.raises(ConfigError, match=expected):
            load_settings(None, {"http": {"auth_token_file": token_file}})
