"""s3://bucket/prefix remotes (AWS S3 and S3-compatible stores such as MinIO or moto),
through obstore.

Credentials, in the order AWS tools use: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
(/ AWS_SESSION_TOKEN) in the environment; else the profile ``options["profile"]`` or
AWS_PROFILE (or ``default``) from ~/.aws/credentials and ~/.aws/config
(AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE move them); else obstore's own chain
(web identity, container and instance metadata). Region: options["region"], AWS_REGION,
AWS_DEFAULT_REGION, the profile's, else us-east-1. Endpoint: --endpoint, AWS_ENDPOINT_URL_S3,
AWS_ENDPOINT_URL, the profile's endpoint_url. Nothing is written anywhere.
"""

from __future__ import annotations

import configparser
import os

from obstore.store import S3Store

from ._common import Limits, ObstoreBlobs
from .blobs import RemoteError
from .url import RemoteURL

_ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def _read_profile(name: str, explicit: bool, url: str) -> dict[str, str]:
    """The settings of one profile from the shared credentials and config files."""
    home = os.path.expanduser("~")
    cred_file = os.environ.get("AWS_SHARED_CREDENTIALS_FILE", os.path.join(home, ".aws", "credentials"))
    conf_file = os.environ.get("AWS_CONFIG_FILE", os.path.join(home, ".aws", "config"))
    out: dict[str, str] = {}
    found = False
    for path, section in ((conf_file, "default" if name == "default" else f"profile {name}"), (cred_file, name)):
        cp = configparser.RawConfigParser()
        try:
            cp.read(path)
        except configparser.Error as e:
            raise RemoteError(f"{url}: cannot parse {path}: {str(e).splitlines()[0]}") from None
        if cp.has_section(section):
            found = True
            out.update(cp.items(section))
    if not found:
        if explicit:
            raise RemoteError(f"{url}: AWS profile {name!r} is in neither {cred_file} nor {conf_file}: "
                              f"run 'aws configure --profile {name}' or fix --profile")
        return {}
    if explicit and "aws_access_key_id" not in out:
        kinds = [k for k in ("sso_session", "sso_start_url", "role_arn", "credential_process") if k in out]
        if kinds:
            raise RemoteError(f"{url}: AWS profile {name!r} uses {kinds[0]}, which coralfs does not run: export "
                              f"its keys with 'aws configure export-credentials --profile {name} --format env'")
        raise RemoteError(f"{url}: AWS profile {name!r} has no aws_access_key_id: run 'aws configure --profile {name}'")
    return out


class S3Blobs(ObstoreBlobs):
    credentials_hint = "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the --profile in ~/.aws/credentials"

    def __init__(self, url: RemoteURL, *, endpoint: str | None = None, options: dict | None = None) -> None:
        options = options or {}
        super().__init__(url, Limits.from_options(str(url), options))
        env = os.environ
        config: dict[str, str] = {}
        if all(env.get(k) for k in _ENV_KEYS):
            config = {"access_key_id": env["AWS_ACCESS_KEY_ID"], "secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}
            if env.get("AWS_SESSION_TOKEN"):
                config["token"] = env["AWS_SESSION_TOKEN"]
            self.credentials = "AWS_ACCESS_KEY_ID in the environment"
            profile = _read_profile(options["profile"], True, self.url) if options.get("profile") else {}
        else:
            name = options.get("profile") or env.get("AWS_PROFILE") or "default"
            profile = _read_profile(name, bool(options.get("profile") or env.get("AWS_PROFILE")), self.url)
            if "aws_access_key_id" in profile:
                config = {"access_key_id": profile["aws_access_key_id"],
                          "secret_access_key": profile.get("aws_secret_access_key", "")}
                if profile.get("aws_session_token"):
                    config["token"] = profile["aws_session_token"]
                self.credentials = f"AWS profile {name!r}"
            elif env.get("AWS_WEB_IDENTITY_TOKEN_FILE") or env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") \
                    or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
                self.credentials = "the AWS web identity / container credentials in the environment"
        region = (options.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
                  or profile.get("region") or "us-east-1")
        override = (endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
                    or profile.get("endpoint_url"))
        # AWS itself: obstore derives the regional endpoint; the text is for messages only.
        self.endpoint = override or f"https://s3.{region}.amazonaws.com"
        if override:
            config["endpoint"] = override
        try:
            self.store = S3Store(self.bucket, prefix=self.prefix or None, config={**config, "region": region},
                                 client_options=self.client_options(), retry_config=self.retry_config())
        except Exception as e:   # obstore raises ValueError or its own BaseError for a bad configuration
            raise RemoteError(f"{self.url}: cannot configure S3: {str(e).splitlines()[0]}") from None


__all__ = ["S3Blobs"]
