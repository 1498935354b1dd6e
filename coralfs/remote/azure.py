"""az://container/prefix remotes (Azure Blob Storage, or Azurite), through obstore.

Credentials: AZURE_STORAGE_CONNECTION_STRING (AccountName, AccountKey or
SharedAccessSignature, BlobEndpoint); else AZURE_STORAGE_ACCOUNT_NAME with
AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN; else obstore's own chain (service
principal AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, managed identity). The
account can also be given as ``options["account"]``. Endpoint: --endpoint, the
connection string's BlobEndpoint, else https://ACCOUNT.blob.core.windows.net.
"""

from __future__ import annotations

import os

from obstore.store import AzureStore

from ._common import Limits, ObstoreBlobs
from .blobs import RemoteError
from .url import RemoteURL


def parse_connection_string(text: str, url: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise RemoteError(f"{url}: AZURE_STORAGE_CONNECTION_STRING is not NAME=VALUE;...: fix the variable")
        out[name.strip()] = value.strip()
    return out


class AzureBlobs(ObstoreBlobs):
    kind = "container"
    credentials_hint = "check AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME/AZURE_STORAGE_ACCOUNT_KEY"

    def __init__(self, url: RemoteURL, *, endpoint: str | None = None, options: dict | None = None) -> None:
        options = options or {}
        super().__init__(url, Limits.from_options(str(url), options))
        env = os.environ
        config: dict[str, str] = {}
        conn = env.get("AZURE_STORAGE_CONNECTION_STRING")
        blob_endpoint = None
        if conn:
            cs = parse_connection_string(conn, self.url)
            if cs.get("AccountName"):
                config["account_name"] = cs["AccountName"]
            if cs.get("AccountKey"):
                config["account_key"] = cs["AccountKey"]
            elif cs.get("SharedAccessSignature"):
                config["sas_key"] = cs["SharedAccessSignature"]
            blob_endpoint = cs.get("BlobEndpoint")
            self.credentials = "AZURE_STORAGE_CONNECTION_STRING"
        else:
            name = options.get("account") or env.get("AZURE_STORAGE_ACCOUNT_NAME") or env.get("AZURE_STORAGE_ACCOUNT")
            if name:
                config["account_name"] = name
            if env.get("AZURE_STORAGE_ACCOUNT_KEY") or env.get("AZURE_STORAGE_KEY"):
                config["account_key"] = env.get("AZURE_STORAGE_ACCOUNT_KEY") or env["AZURE_STORAGE_KEY"]
                self.credentials = "AZURE_STORAGE_ACCOUNT_KEY"
            elif env.get("AZURE_STORAGE_SAS_TOKEN"):
                config["sas_key"] = env["AZURE_STORAGE_SAS_TOKEN"]
                self.credentials = "AZURE_STORAGE_SAS_TOKEN"
            elif env.get("AZURE_CLIENT_ID") and (env.get("AZURE_CLIENT_SECRET") or env.get("AZURE_FEDERATED_TOKEN_FILE")):
                self.credentials = "the Azure service principal in the environment (AZURE_CLIENT_ID)"
        account = config.get("account_name")
        if not account:
            raise RemoteError(f"{self.url}: no Azure storage account: set AZURE_STORAGE_CONNECTION_STRING or "
                              "AZURE_STORAGE_ACCOUNT_NAME (with AZURE_STORAGE_ACCOUNT_KEY)")
        override = endpoint or blob_endpoint
        # Azure itself: obstore derives the account's endpoint; the text is for messages only.
        self.endpoint = (override or f"https://{account}.blob.core.windows.net").rstrip("/")
        if override:
            config["endpoint"] = self.endpoint
        try:
            self.store = AzureStore(self.bucket, prefix=self.prefix or None, config=config,
                                    client_options=self.client_options(), retry_config=self.retry_config())
        except Exception as e:   # obstore raises ValueError or its own BaseError for a bad configuration
            raise RemoteError(f"{self.url}: cannot configure Azure Blob: {str(e).splitlines()[0]}; check "
                              "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME/AZURE_STORAGE_ACCOUNT_KEY "
                              "(an account key is base64)") from None


__all__ = ["AzureBlobs", "parse_connection_string"]
