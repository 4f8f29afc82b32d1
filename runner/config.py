"""User settings that apply to every job: network (CA bundle, pip index, HF mirror) and default folders.

Read from $RUNNER_CONFIG or ~/.config/runner/config.yaml; environment variables win over the file.
Secrets (HF_TOKEN) are never stored here: they are read from the environment when a job starts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, TypeAdapter, ValidationError

from runner import inputs
from runner.errors import UserError
from runner.spec import HostPath, Int, Text


def default_hf_home() -> Path:
    """The Hugging Face home on this machine, as huggingface_hub finds it: $HF_HOME, else $XDG_CACHE_HOME/huggingface,
    else ~/.cache/huggingface."""
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "huggingface"

ENV = {"ca_bundle": "RUNNER_CA_BUNDLE", "pip_index_url": "PIP_INDEX_URL", "hf_endpoint": "HF_ENDPOINT", "pins": "RUNNER_PINS"}


def config_dir() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "runner"


def state_dir() -> Path:
    return Path(os.environ.get("RUNNER_STATE", Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "runner"))


SETTINGS_DOC = "the settings are listed in README.md (Images, compose and networks)"
URLS = {"pip_index_url": "https://pypi.example/simple", "hf_endpoint": "https://hf-mirror.example"}  # URL settings: an example each
_HTTP_URL = TypeAdapter(HttpUrl)
_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*://"
# credentials in a URL, anywhere in a text: https://user:password@mirror/simple, https://token@mirror/simple, and at its
# start user:password@host; the password runs to the last @, as it may hold one
URL_CREDENTIALS = re.compile(rf"(?:(?P<scheme>{_SCHEME})|^(?!{_SCHEME})(?=[^:@/?#\s]*:))(?P<user>[^:@/?#\s]*)(?::(?P<password>.*))?@", re.S)


def redacted(url: str) -> str:
    """A URL as messages may quote it: the password of a user:password@ part replaced by ***."""
    return URL_CREDENTIALS.sub(lambda m: f"{m['scheme'] or ''}{m['user']}:***@" if m["password"] is not None else m[0], url)


_YAML_KINDS = {list: "a list", dict: "a mapping", bool: "true or false", int: "a number", float: "a number"}


def check_url(value: object, where: str, field: str, unset: str = "") -> None:
    """A UserError naming `where` unless value is an http(s) URL (a user and password in it are fine). The value is
    kept as given; messages quote it without its password."""
    if value is None:
        return
    if not isinstance(value, str):
        problem = f"is {_YAML_KINDS.get(type(value), type(value).__name__)}, not a URL."
    elif not value.isprintable() or any(c.isspace() for c in value):
        problem = f"{inputs.quote(redacted(value))} is not an http(s) URL: it holds whitespace or a control character."
    else:
        try:
            _HTTP_URL.validate_python(value)
            return
        except ValidationError as e:
            reason = e.errors()[0]["msg"].removeprefix("Input should be a valid URL, ")
            problem = f"{inputs.quote(redacted(value))} is not an http(s) URL: {reason}."
    raise UserError(where, problem, f"give the full URL, e.g. {URLS[field]} (a user and password go before the host: "
                                    f"https://USER:PASSWORD@host/…; encode @ : / in them as %40 %3A %2F){unset}.")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ca_bundle: HostPath | None = Field(None, description="extra CA certificates (PEM) for TLS-intercepting proxies")
    pip_index_url: Text | None = Field(None, description="pip index or mirror used in image builds")
    hf_endpoint: Text | None = Field(None, description="Hugging Face mirror, passed to containers as HF_ENDPOINT")
    pins: HostPath | None = Field(None, description="pins file for images (default: images/pins.toml of runner)")
    models: HostPath = Field(Path.home() / "runner" / "models", description="`runner up`: host folder mounted at /models")
    data: HostPath = Field(Path.home() / "runner" / "data", description="`runner up`: host folder mounted at /data")
    cache: HostPath = Field(Path.home() / "runner" / "cache", description="`runner up`: host folder mounted at /cache")
    outputs: HostPath = Field(Path.home() / "runner" / "outputs", description="`runner up`: host folder mounted at /outputs")
    shm_size: str = Field("16g", pattern=r"^[1-9][0-9]*[bkmg]?$", description="/dev/shm size for containers (DeepSpeed and data loaders need more than 64 MB)")
    ulimits: dict[Text, Annotated[Int, Field(ge=-1)]] = Field(
        default_factory=lambda: {"memlock": -1, "stack": 67108864},
        description="container ulimits in bytes (-1 = unlimited); DeepSpeed pins memory and needs a large memlock",
    )


def config_file() -> Path:
    return Path(os.environ.get("RUNNER_CONFIG", config_dir() / "config.yaml"))


def load() -> Settings:
    path = config_file()
    found = inputs.read_yaml(path, "runner config", missing_ok=True)
    if found is None or found[0] is None:  # no config, or an empty one: the defaults
        settings = Settings()
    else:
        data, lines = found
        for field in URLS if isinstance(data, dict) else ():  # before the schema, whose messages quote values whole
            check_url(data.get(field), f"{path}:{lines.get((field,), 1)}: {field}", field)
        settings = inputs.validate(Settings, data, path, lines, "runner config", SETTINGS_DOC, SETTINGS_DOC)
    overrides = {field: os.environ[var] for field, var in ENV.items() if os.environ.get(var)}
    for field in URLS.keys() & overrides.keys():
        check_url(overrides[field], f"{ENV[field]} (environment)", field, f", or unset it for runner: `env -u {ENV[field]} runner …`")
    settings = settings.model_copy(update={k: (Path(v) if k in ("ca_bundle", "pins") else v) for k, v in overrides.items()})
    if settings.ca_bundle is not None and not settings.ca_bundle.is_file():
        raise UserError(
            "ca_bundle" if "ca_bundle" not in overrides else ENV["ca_bundle"],
            f"{settings.ca_bundle} is not a file.",
            "point it at a PEM file of CA certificates, e.g. /etc/ssl/certs/ca-certificates.crt.",
        )
    return settings


def network_env(settings: Settings) -> dict[str, str]:
    """Variables that let containers reach mirrors; the CA bundle is installed in the image itself."""
    env = {}
    if settings.hf_endpoint:
        env["HF_ENDPOINT"] = settings.hf_endpoint
    if settings.pip_index_url:
        env["PIP_INDEX_URL"] = settings.pip_index_url
    return env
