"""importer.secrets: the one place that redacts the SECRET (issue 12)."""

from __future__ import annotations

import pytest

from importer.secrets import env_secrets, is_secret_key, redact, watch_env


def test_every_form_of_a_secret_is_redacted() -> None:
    secret = "Tok+en/9Zq=Xy 42"
    text = (
        f"raw {secret}; quoted Tok%2Ben%2F9Zq%3DXy%2042; plus Tok%2Ben%2F9Zq%3DXy+42; "
        "path Tok%2Ben/9Zq%3DXy%2042"
    )
    assert redact(text, [secret]) == "raw ****; quoted ****; plus ****; path ****"


def test_query_parameters_named_like_credentials_are_redacted_whatever_their_value() -> None:
    url = "GET https://h/v1/user?secret=abc%2Fdef&page=2&api_key=k1;token=t#frag failed"
    assert (
        redact(url)
        == "GET https://h/v1/user?secret=****&page=2&api_key=****;token=****#frag failed"
    )
    assert redact("phone=138;email=a@b.cn") == "phone=138;email=a@b.cn"


def test_a_secret_cut_by_a_truncated_message_is_redacted_from_what_is_left() -> None:
    secret = "s3cr3t-value-42"
    text = "echo " + secret[:9] + "... (1000 more characters)"
    assert redact(text, [secret], cut_at=14) == "echo ****... (1000 more characters)"


def test_the_configured_variable_is_covered_once_a_config_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("H5_TEST_TOKEN", "value-of-the-token")
    assert "value-of-the-token" not in env_secrets()
    assert env_secrets("H5_TEST_TOKEN") == ("value-of-the-token",)
    watch_env("H5_TEST_TOKEN")
    assert redact("it was value-of-the-token") == "it was ****"


def test_secret_keys() -> None:
    for name in ("secret_env", "api_key", "accessKeySecret", "password", "token"):
        assert is_secret_key(name)
    for name in ("phone", "email", "page", "monkey"):
        assert not is_secret_key(name)
