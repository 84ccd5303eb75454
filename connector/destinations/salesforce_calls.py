"""Salesforce's API as the destination calls it, through `simple-salesforce`: one client per token,
every request with a timeout (a session subclass: the library's write calls take none), through the
destination's concurrency cap, retried briefly and classified, reported to the destination's wire
(forensics), one re-authentication on an expired session; the describes, and whether a field is an
External ID. The remote check and the setup are in salesforce_setup.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError

from connector.config import SalesforceDestinationConfig
from connector.destinations.base import Destination, call_with_retries
from connector.destinations.errors import DeliveryError, ErrorClass, parse_retry_after
from connector.destinations.ratelimit import Limiter, shared_limiter
from connector.destinations.salesforce_answers import classify
from connector.destinations.salesforce_auth import PROVIDERS, Token, TokenProvider
from connector.destinations.wire import RecordingSession, Wire
from connector.logs import register_secrets


def _call_name(method: str, path: str) -> str:
    """A bounded label for the metrics: `PATCH composite/sobjects`, `PATCH composite/sobjects/upsert`, `describe`."""
    parts = path.split("?")[0].split("/")
    if parts[:2] == ["composite", "sobjects"]:
        return f"{method} composite/sobjects" + ("/upsert" if len(parts) > 2 else "")
    if parts[0] == "sobjects" and parts[-1] == "describe":
        return "describe"
    return f"{method} {parts[0]}"


class SalesforceCalls(Destination):
    kind = "salesforce"

    def __init__(self, name: str, config: SalesforceDestinationConfig, base_dir: Path | None = None, *,
                 limiter: Limiter | None = None):
        self.name = name
        self.config = config
        self._tokens: TokenProvider = PROVIDERS[config.auth_mode or "token"](config, base_dir)
        self._token: Token | None = None
        self._sf: Salesforce | None = None
        self._describes: dict[str, dict[str, Any]] = {}
        self._not_external: set[tuple[str, str]] = set()  # (sObject, field lower-cased) refused as upsert keys
        limit = config.rate_limit
        self.limiter: Limiter = limiter or shared_limiter(name, limit.requests, limit.per_seconds,
                                                          limit.max_concurrency)
        self._quota: dict[str, Any] = {}
        self._wire = Wire()

    # --- client and calls -------------------------------------------------------

    def _client(self, token: Token) -> Salesforce:
        if self._sf is None or self._token != token:
            register_secrets([token.access_token])  # never kept in an attempt's answer, nor logged
            session = RecordingSession((self.config.connect_timeout_s, self.config.timeout_s), self._wire)
            self._sf = Salesforce(session_id=token.access_token, instance_url=token.instance_url,
                                  version=self.config.api_version, session=session)
            self._token = token
        return self._sf

    def _call(self, make: Callable[[Salesforce], Any], *, idempotent: bool = True, call_name: str = "other") -> Any:
        """Run a request; on INVALID_SESSION_ID renew the token once and try again, never in a loop."""

        def call() -> Any:
            token = self._tokens.current()
            try:
                return self._with_usage(make, token)
            except SalesforceError as error:
                if classify(error).error_class != ErrorClass.REAUTHENTICATE:
                    raise
            renewed = self._tokens.renew(token)
            try:
                return self._with_usage(make, renewed)
            except SalesforceError as error:
                failure = classify(error)
                if failure.error_class == ErrorClass.REAUTHENTICATE:
                    failure.message = f"still refused after one re-authentication: {failure.message}"
                raise failure from error

        return call_with_retries(call, self._classify, self.limiter, attempts=self.config.retry_attempts,
                                 max_wait=self.config.max_retry_wait_s, idempotent=idempotent,
                                 destination=self.name, call_name=call_name, wire=self._wire)

    def _classify(self, error: BaseException) -> DeliveryError:
        """`classify`, with the Retry-After the answer carried (Salesforce sends it on some 503s):
        simple-salesforce's exceptions keep the body but not the headers; the wire has them."""
        failure = classify(error)
        last = self._wire.last
        if isinstance(error, SalesforceError) and last is not None:
            retry_after = parse_retry_after(last.headers.get("Retry-After"))
            if retry_after is not None:
                failure.retry_after = retry_after
        return failure

    def _with_usage(self, make: Callable[[Salesforce], Any], token: Token) -> Any:
        client = self._client(token)
        try:
            return make(client)
        finally:
            usage = (client.api_usage or {}).get("api-usage")
            if usage is not None:
                self._quota = {"api_usage": usage.used, "api_limit": usage.total}

    def quota(self) -> dict[str, Any]:
        return dict(self._quota)

    def refresh_quota(self) -> dict[str, Any]:
        """The daily allocation now, from `/limits` (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_limits.htm)."""
        daily = (self._restful("limits") or {}).get("DailyApiRequests") or {}
        if isinstance(daily.get("Max"), int) and isinstance(daily.get("Remaining"), int):
            self._quota = {"api_usage": daily["Max"] - daily["Remaining"], "api_limit": daily["Max"]}
        return dict(self._quota)

    def _restful(self, path: str, method: str = "GET", *, idempotent: bool = True, **kwargs: Any) -> Any:
        return self._call(lambda sf: sf.restful(path, method=method, **kwargs), idempotent=idempotent,
                          call_name=_call_name(method, path))

    def _describe(self, sobject: str) -> dict[str, Any]:
        if sobject not in self._describes:
            self._describes[sobject] = self._restful(f"sobjects/{sobject}/describe")
        return self._describes[sobject]

    def _is_external_id(self, sobject: str, field: str) -> bool:
        """Whether records can be upserted by this field. Only custom fields can be External IDs
        (https://help.salesforce.com/s/articleView?id=sf.custom_field_attributes.htm): a standard one
        (Email) is not, with no call; a custom one is taken to be until Salesforce says otherwise (the
        upsert is refused for it: `_not_external_id`) or a describe this process made says otherwise,
        so no describe is spent on the fields the mappings upsert by."""
        if not field.endswith("__c"):
            return False
        if (sobject, field.lower()) in self._not_external:
            return False
        if sobject not in self._describes:
            return True
        for described in self._describes[sobject].get("fields", []):
            if described.get("name", "").lower() == field.lower():
                return bool(described.get("externalId"))
        return False

    def close(self) -> None:
        if self._sf is not None:
            self._sf.session.close()


