"""pip_index_url and hf_endpoint, in the runner config or the environment, must be http(s) URLs; a user and password
in them are allowed, and no message ever shows the password."""

from __future__ import annotations

import pytest

from runner import config
from tests.test_bad_inputs import refused, sandbox  # noqa: F401  (fixtures)

PASSWORD = "s3cr3t-Pw"
BAD = [
    f"htp://me:{PASSWORD}@pypi.example/simple",  # not http(s)
    f"https://me:{PASSWORD}@pypi.example:99999/simple",  # port out of range
    f"https://me:{PASSWORD}@pypi.example/ simple",  # whitespace
    f"https://me:{PASSWORD}@",  # no host
    f"me:{PASSWORD}@pypi.example/simple",  # no scheme
    "file:///opt/pypi/simple",  # a folder of the host, which no build or container sees
    "pypi.example/simple",
]


@pytest.mark.parametrize("field", list(config.URLS))
@pytest.mark.parametrize("value", BAD)
def test_a_bad_url_in_the_config_is_refused_without_its_password(refused, sandbox, monkeypatch, field, value):
    monkeypatch.setenv("RUNNER_CONFIG", str(sandbox / "config.yaml"))
    (sandbox / "config.yaml").write_text(f'shm_size: "16g"\n{field}: "{value}"\n')
    err = refused(["build", "musubi"], f"config.yaml:2: {field}", "http(s) URL" if "://" in value else "URL", config.URLS[field])
    assert PASSWORD not in err
    assert ("me:***@" in err) == (PASSWORD in value), err


@pytest.mark.parametrize("value, kind", [("[a, b]", "a list"), ("true", "true or false"), ("8080", "a number")])
def test_a_url_that_is_not_text_is_refused(refused, sandbox, monkeypatch, value, kind):
    monkeypatch.setenv("RUNNER_CONFIG", str(sandbox / "config.yaml"))
    (sandbox / "config.yaml").write_text(f"hf_endpoint: {value}\n")
    refused(["build", "musubi"], "config.yaml:1: hf_endpoint", f"is {kind}, not a URL")


@pytest.mark.parametrize("field", list(config.URLS))
def test_a_bad_url_in_the_environment_is_refused(refused, sandbox, monkeypatch, field):
    monkeypatch.setenv(config.ENV[field], f"ftp://me:{PASSWORD}@mirror.example/")
    err = refused(["build", "musubi"], f"{config.ENV[field]} (environment)", "ftp://me:***@mirror.example/", f"env -u {config.ENV[field]}")
    assert PASSWORD not in err


def test_urls_with_credentials_are_kept_as_given(sandbox, monkeypatch):
    monkeypatch.setenv("RUNNER_CONFIG", str(sandbox / "config.yaml"))
    pip = f"https://me:{PASSWORD}@pypi.example/simple"
    (sandbox / "config.yaml").write_text(f'pip_index_url: "{pip}"\nhf_endpoint: "https://hf-mirror.example"\n')
    settings = config.load()
    assert (settings.pip_index_url, settings.hf_endpoint) == (pip, "https://hf-mirror.example")  # not normalised
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:8080")
    assert config.load().hf_endpoint == "http://127.0.0.1:8080"


@pytest.mark.parametrize("url, shown", [
    ("https://me:pw@host/simple", "https://me:***@host/simple"),
    ("https://me:p@ss/w:rd@host/simple", "https://me:***@host/simple"),  # an @ or / in the password: cut at the last @
    ("me:pw@host", "me:***@host"),
    ("https://token@host/simple", "https://token@host/simple"),  # a user part alone is shown, as the user part always is
    ("https://host:8080/simple", "https://host:8080/simple"),
])
def test_redacted(url, shown):
    assert config.redacted(url) == shown


@pytest.mark.parametrize("value, secret", [
    ("https://me:pw@host/simple", True),
    ("https://token@host/simple", True),  # a token as the user part is a credential too
    ("me:pw@host", True),
    ("--index-url https://me:pw@host/simple", True),  # a URL inside a longer value
    ("https://host:8080/simple", False),
    ("me@example.com", False),  # no scheme, no password: an address, not a credential
])
def test_the_urls_redacted_in_messages_are_the_ones_kept_out_of_containers_configuration(value, secret):
    from runner.plan import is_secret

    assert is_secret("MIRROR", value) == secret
    assert (config.redacted(value) != value) == (secret and ":pw@" in value)
