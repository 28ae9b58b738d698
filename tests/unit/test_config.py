"""Settings: precedence, validation and clear errors at configure() time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from promptgov import ConfigurationError, Governor
from promptgov.config import resolve_settings


def test_explicit_beats_environment_beats_default(tmp_path: Path) -> None:
    env = {"PROMPTGOV_APP": "from-env", "PROMPTGOV_ENVIRONMENT": "staging",
           "PROMPTGOV_MAX_QUEUE_SIZE": "42", "PROMPTGOV_LOCAL_DIR": str(tmp_path)}
    settings = resolve_settings({"app": "explicit"}, env)
    assert settings.app == "explicit"
    assert settings.environment == "staging"
    assert settings.max_queue_size == 42
    assert settings.topic_prefix == "promptgov"  # default


def test_producer_defaults_are_durable_and_overridable(tmp_path: Path) -> None:
    options = resolve_settings({"local_dir": tmp_path, "producer": {"linger_ms": 20}},
                               {}).producer_options
    assert options["acks"] == "all" and options["enable_idempotence"] is True
    assert options["compression_type"] == "lz4" and options["linger_ms"] == 20


@pytest.mark.parametrize(
    ("settings", "setting", "fix"),
    [
        ({"bootstrap_servers": "localhost"}, "bootstrap_servers", "host:port"),
        ({"bootstrap_servers": "h:99999"}, "bootstrap_servers", "host:port"),
        ({"bootstrap_servers": ""}, "bootstrap_servers", "host:port"),
        ({"topic_prefix": "bad prefix!"}, "topic_prefix", "letters, digits"),
        ({"bootstrap_sever": "h:1"}, "bootstrap_sever", "bootstrap_servers"),
        ({"producer": {"acks": "all", "lingerms": 1}}, "producer.lingerms", "linger_ms"),
        ({"capture_content": "everything"}, "capture_content", "'redacted'"),
        ({"max_queue_size": 0}, "max_queue_size", ">= 1"),
        ({"redactor": object()}, "redactor", "Redactor"),
        ({"policy": {"version": "1"}}, "policy", "id"),
    ],
)
def test_misconfiguration_names_the_setting_and_the_fix(
    tmp_path: Path, settings: dict[str, object], setting: str, fix: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Governor(local_dir=tmp_path, register_atexit=False, **settings)
    assert caught.value.setting == setting
    assert fix in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_local_dir_is_rejected(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ConfigurationError, match="local_dir"):
        Governor(local_dir=locked / "sub", register_atexit=False)


def test_local_dir_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ConfigurationError, match="local_dir") as caught:
        Governor(local_dir=not_a_dir, register_atexit=False)
    assert "PROMPTGOV_LOCAL_DIR" in str(caught.value)


def test_malformed_environment_value_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="max_queue_size"):
        resolve_settings({"local_dir": tmp_path}, {"PROMPTGOV_MAX_QUEUE_SIZE": "lots"})


def test_unknown_environment_variable_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = resolve_settings({"local_dir": tmp_path}, {"PROMPTGOV_BOOTSTRAP_SERVER": "h:1",
                                                          "PROMPTGOV_TEST_BOOTSTRAP": "h:2"})
    assert settings.bootstrap_servers is None
    assert "PROMPTGOV_BOOTSTRAP_SERVER" in caplog.text
    assert "PROMPTGOV_TEST_BOOTSTRAP" not in caplog.text


def test_bootstrap_forms_are_normalised(tmp_path: Path) -> None:
    settings = resolve_settings(
        {"local_dir": tmp_path, "bootstrap_servers": ["PLAINTEXT://a:9092", " b:9093 "]}, {})
    assert settings.bootstrap_servers == "a:9092,b:9093"


def test_capture_content_booleans(tmp_path: Path) -> None:
    assert resolve_settings({"local_dir": tmp_path, "capture_content": False},
                            {}).capture_content == "metadata"
    assert resolve_settings({"local_dir": tmp_path, "capture_content": True},
                            {}).capture_content == "redacted"


def test_local_dir_is_private(tmp_path: Path) -> None:
    target = tmp_path / "private"
    resolve_settings({"local_dir": target}, {})
    assert (target.stat().st_mode & 0o777) == 0o700


def test_capture_content_booleans_from_the_environment(tmp_path: Path) -> None:
    settings = resolve_settings({"local_dir": tmp_path}, {"PROMPTGOV_CAPTURE_CONTENT": "false"})
    assert settings.capture_content == "metadata"


def test_out_of_range_port_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="port is not in 1-65535"):
        resolve_settings({"local_dir": tmp_path, "bootstrap_servers": "localhost:99999"}, {})
