"""Salesforce access tokens: a given token, OAuth 2.0 JWT bearer, or client credentials.

The connector fetches tokens itself: the library's own re-login is unbounded
on 401 (https://github.com/simple-salesforce/simple-salesforce/issues/804), and
the password and SOAP flows are being retired
(https://help.salesforce.com/s/articleView?id=000886201&type=1,
https://developer.salesforce.com/docs/platform/api/guide/api-eol-soap.html).
Tokens are held in memory only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
import requests

from connector.config import SalesforceDestinationConfig
from connector.destinations.errors import DeliveryError, ErrorClass

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass(frozen=True)
class Token:
    access_token: str
    instance_url: str


class TokenProvider:
    refreshable = True

    def __init__(self, config: SalesforceDestinationConfig, base_dir: Path | None = None):
        self.config = config
        self.base_dir = base_dir
        self._token: Token | None = None
        self._lock = threading.Lock()

    def current(self) -> Token:
        with self._lock:
            if self._token is None:
                self._token = self._fetch()
            return self._token

    def renew(self, stale: Token) -> Token:
        """A new token, unless another thread already replaced the stale one."""
        with self._lock:
            if self._token is None or self._token == stale:
                self._token = self._fetch()
            return self._token

    def _fetch(self) -> Token:
        raise NotImplementedError

    def _token_request(self, data: dict[str, str], auth: tuple[str, str] | None = None) -> Token:
        url = self.config.login_url.rstrip("/") + "/services/oauth2/token"
        try:
            response = requests.post(url, data=data, auth=auth, timeout=(self.config.connect_timeout_s,
                                                                          self.config.timeout_s))
        except requests.RequestException as error:
            raise DeliveryError(ErrorClass.RETRY_SOON, f"cannot reach {url}: {error}", None, "CONNECTION") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or "access_token" not in body:
            description = body.get("error_description") or body.get("error") or response.text[:200]
            error_class = ErrorClass.RETRY_SOON if response.status_code >= 500 else ErrorClass.REAUTHENTICATE
            raise DeliveryError(error_class, f"Salesforce refused the credentials at {url}: {description}",
                                response.status_code, body.get("error"))
        return Token(body["access_token"], body.get("instance_url") or self.config.instance_url or "")


class GivenToken(TokenProvider):
    """SALESFORCE_ACCESS_TOKEN with SALESFORCE_INSTANCE_URL: cannot be renewed by the connector."""

    refreshable = False

    def _fetch(self) -> Token:
        return Token(self.config.access_token or "", self.config.instance_url or "")

    def renew(self, stale: Token) -> Token:
        raise DeliveryError(ErrorClass.REAUTHENTICATE, "Salesforce refused the access token and it cannot be renewed "
                            "here; set a new SALESFORCE_ACCESS_TOKEN or configure the JWT bearer or client-credentials "
                            "flow", 401, "INVALID_SESSION_ID")


class JwtBearer(TokenProvider):
    def _audience(self) -> str:
        login = self.config.login_url.lower()
        return "https://test.salesforce.com" if "test.salesforce.com" in login or ".sandbox." in login \
            else "https://login.salesforce.com"

    def _private_key(self) -> str:
        if self.config.private_key:
            return self.config.private_key
        path = Path(self.config.private_key_file or "")
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        try:
            return path.read_text()
        except OSError as error:
            raise DeliveryError(ErrorClass.PERMANENT, f"cannot read the Salesforce private key file {path}: {error}")

    def _fetch(self) -> Token:
        claims = {"iss": self.config.client_id, "sub": self.config.username, "aud": self._audience(),
                  "exp": int(time.time()) + 180}
        try:
            assertion = jwt.encode(claims, self._private_key(), algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as error:
            raise DeliveryError(ErrorClass.PERMANENT, f"the Salesforce private key cannot sign: {error}") from None
        return self._token_request({"grant_type": JWT_GRANT, "assertion": assertion})


class ClientCredentials(TokenProvider):
    def _fetch(self) -> Token:
        return self._token_request({"grant_type": "client_credentials"},
                                   auth=(self.config.client_id or "", self.config.client_secret or ""))


PROVIDERS: dict[str, type[TokenProvider]] = {
    "token": GivenToken,
    "jwt": JwtBearer,
    "client_credentials": ClientCredentials,
}
