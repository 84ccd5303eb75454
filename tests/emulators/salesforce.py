"""A stateful local emulator of the Salesforce REST API, for the real simple-salesforce client.

Follows /work/shared/crm/REFERENCE.md §2 (what simple-salesforce sends and what Salesforce answers)
and §5.1/§5.2 (what an emulator must implement). It serves HTTPS, because simple-salesforce builds
every URL as ``https://`` (§2.1); `tls_for_tests()` makes a trustme CA whose PEM the tests put in
REQUESTS_CA_BUNDLE (§2.2).

Usage::

    ssl_ctx, ca_path = tls_for_tests(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_path)
    with SalesforceEmulator(tls_context=ssl_ctx) as sf_emu:
        sf = Salesforce(session_id="00Dtest!token", instance_url=sf_emu.url, version="62.0")
        sf.Contact.upsert(format_external_id("Okendo_Customer_Id__c", "c-1"), {"LastName": "Doe"})
        assert sf_emu.find("Contact", Okendo_Customer_Id__c="c-1")

Where the real API's exact wording is not documented in REFERENCE, the messages below follow what
public issue threads show (cited inline) or are marked as the emulator's own wording.
"""

from __future__ import annotations

import base64
import copy
import re
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt

from tests.emulators.base import Emulator, Fault, Reply, Request

DATA_PATH = r"^/services/data/"  # default target of the fault helpers: the REST API, not the token endpoint
TOKEN_PATH = "/services/oauth2/token"
JWT_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")  # §2.3
MAX_COLLECTION = 200  # sObject Collections limit (§2.5)
UPSERT_200_SINCE = 46.0  # upsert-update answers 200 + body from v46, 204 before (§2.5)

TEXT_TYPES = {"string", "textarea", "email", "phone", "url", "picklist"}
STANDARD_PREFIXES = {"Account": "001", "Contact": "003", "User": "005", "Opportunity": "006",
                     "Lead": "00Q", "Task": "00T", "Case": "500", "PermissionSet": "0PS",
                     "PermissionSetAssignment": "0Pa"}
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]  # §2.6: must be a list
LIMIT_EXCEEDED = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
RESOURCE_MISSING = "The requested resource does not exist"
ROLLED_BACK = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
               "message": "Record rolled back because not all records were valid and the request "
                          "was using AllOrNone header", "fields": []}
RECORD_FAULT_MESSAGES = {"UNABLE_TO_LOCK_ROW": "unable to obtain exclusive access to this record",
                         "DUPLICATES_DETECTED": "Use one of these records?"}


# --- errors -------------------------------------------------------------------------------------


class ApiError(Exception):
    """A whole-request error: a JSON list of {"message","errorCode"[,"fields"]} (§2.5)."""

    def __init__(self, status: int, code: str, message: str, fields: Iterable[str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields = list(fields) if fields is not None else None

    def reply(self) -> Reply:
        item: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            item["fields"] = self.fields
        return Reply(self.status, [item])


class RecordError(Exception):
    """A per-record validation error: 400 on single-record calls, a result entry in Collections (§2.5)."""

    def __init__(self, code: str, message: str, fields: Iterable[str] = ()):
        super().__init__(message)
        self.code, self.message, self.fields = code, message, list(fields)

    def item(self) -> dict[str, Any]:  # Collections use statusCode, not errorCode (§2.5)
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}

    def reply(self) -> Reply:
        return ApiError(400, self.code, self.message, self.fields).reply()


def resource_missing(message: str = RESOURCE_MISSING) -> ApiError:
    return ApiError(404, "NOT_FOUND", message)


def no_such_ext_field(name: str) -> ApiError:
    # Wording from real responses, e.g. https://github.com/restforce/restforce/issues/182
    return resource_missing(f"Provided external ID field does not exist or is not accessible: {name}")


# --- Salesforce ids (§5.2: 18 characters with the object's key prefix) ------------------------------


def _checksum(id15: str) -> str:
    """The 3-character case-safe suffix that turns a 15-character id into the 18-character one."""
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << i for i, ch in enumerate(id15[chunk * 5:chunk * 5 + 5]) if "A" <= ch <= "Z")
        suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
    return suffix


def to18(value: Any) -> str | None:
    """The 18-character form of a 15/18-character id, or None when `value` is not a well-formed id."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?", value):
        return None
    if len(value) == 18 and value[15:].upper() != _checksum(value[:15]):
        return None
    return value[:15] + _checksum(value[:15])


# --- schema -------------------------------------------------------------------------------------


def _label(name: str) -> str:
    base = name[:-3] if name.endswith("__c") else name
    if not name.endswith("__c") and base.endswith("Id") and len(base) > 2:
        base = base[:-2] + " ID"
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", base.replace("_", " "))


@dataclass
class FieldDef:
    name: str
    type: str = "string"  # string textarea email phone url picklist double boolean date datetime reference id
    length: int = 255
    external_id: bool = False
    unique: bool = False
    required: bool = False
    id_lookup: bool = False
    reference_to: tuple[str, ...] = ()
    picklist: tuple[str, ...] = ()  # a restricted picklist's values
    writable: bool = True  # False for Id and the system audit fields
    label: str = ""
    precision: int | None = None  # a Number's digits in all (None: 18) ...
    scale: int | None = None  # ... and after the point (None: 0); values beyond precision - scale are refused
    default: Any = None  # a Checkbox's defaultValue, set on create when the field is not given
    restricted: bool = True  # whether a picklist refuses values outside `picklist`
    visible_lines: int | None = None  # a LongTextArea's, as deployed
    child_relationship: str | None = None  # a Lookup's relationshipName (the parent's related list), as deployed

    def __post_init__(self) -> None:
        self.label = self.label or _label(self.name)
        self.reference_to = tuple(self.reference_to)
        self.picklist = tuple(self.picklist)

    @property
    def is_lookup(self) -> bool:  # usable in /sobjects/{Type}/{Field}/{value} (brief: external id or idLookup)
        return self.external_id or self.id_lookup or self.type == "id"

    @property
    def relationship_name(self) -> str | None:
        if self.type != "reference":
            return None
        if self.name.endswith("__c"):
            return self.name[:-3] + "__r"
        return self.name[:-2] if self.name.endswith("Id") else None

    def describe(self) -> dict[str, Any]:
        text = self.type in TEXT_TYPES
        return {
            "name": self.name, "label": self.label, "type": self.type,
            "length": self.length if text else (18 if self.type in ("id", "reference") else 0),
            "externalId": self.external_id, "idLookup": self.is_lookup, "unique": self.unique,
            "nillable": not self.required and self.type not in ("boolean", "id"),
            "createable": self.writable, "updateable": self.writable,
            "defaultedOnCreate": self.type == "boolean" or not self.writable,
            "custom": self.name.endswith("__c"),
            "referenceTo": list(self.reference_to), "relationshipName": self.relationship_name,
            "picklistValues": [{"value": v, "label": v, "active": True, "defaultValue": False} for v in self.picklist],
            "restrictedPicklist": bool(self.picklist) and self.restricted,
            "precision": (self.precision or 18) if self.type == "double" else 0,
            "scale": (self.scale or 0) if self.type == "double" else 0, "digits": 0,
            "defaultValue": self.default if self.type == "boolean" else None,
        }


@dataclass
class SObjectDef:
    name: str
    prefix: str
    fields: dict[str, FieldDef] = field(default_factory=dict)  # keyed by lower-cased name: names are case-insensitive (§5.2)
    display_label: str = ""  # a deployed object's label and pluralLabel
    plural_label: str = ""

    @property
    def custom(self) -> bool:
        return self.name.endswith("__c")

    @property
    def label(self) -> str:
        return self.display_label or _label(self.name)

    def field(self, name: str) -> FieldDef | None:
        return self.fields.get(name.lower())

    def add(self, fdef: FieldDef) -> None:
        self.fields[fdef.name.lower()] = fdef

    def by_relationship(self, name: str) -> FieldDef | None:
        return next((f for f in self.fields.values() if (f.relationship_name or "").lower() == name.lower()), None)

    def summary(self, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {"name": self.name, "label": self.label, "labelPlural": self.plural_label or self.label + "s",
                "custom": self.custom,
                "keyPrefix": self.prefix, "createable": True, "updateable": True, "deletable": True,
                "queryable": True, "urls": {"sobject": base, "describe": f"{base}/describe",
                                            "rowTemplate": f"{base}/{{ID}}"}}


def _text(length: int, **kw: Any) -> dict[str, Any]:
    return {"type": "string", "length": length, **kw}


_LONG = {"type": "textarea", "length": 32768}
_EXT = {"external_id": True, "unique": True}
_CONTACT_REF = {"type": "reference", "reference_to": ["Contact"]}


def _number(precision: int, scale: int = 0) -> dict[str, Any]:
    return {"type": "double", "precision": precision, "scale": scale}


# What every org has: the standard objects the connector touches (a minimal Account so Contact.AccountId
# can resolve), and those a declared Lookup may point to (Lead; User is in SYSTEM_SCHEMA) so a deploy
# succeeds here when it would in a real org. SalesforceEmulator(okendo_schema=False) starts with these only.
STANDARD_SCHEMA: dict[str, dict[str, dict[str, Any]]] = {
    "Account": {"Name": _text(255, required=True)},
    "Lead": {"FirstName": _text(40), "LastName": _text(80, required=True), "Company": _text(255, required=True),
             "Email": {"type": "email", "length": 80}},
    "Contact": {
        "FirstName": _text(40), "LastName": _text(80, required=True),
        "Email": {"type": "email", "length": 80, "id_lookup": True},
        "AccountId": {"type": "reference", "reference_to": ["Account"]},
    },
    "Task": {
        "Subject": _text(255), "WhoId": {"type": "reference", "reference_to": ["Contact", "Lead"]},
        "Description": _LONG, "ActivityDate": {"type": "date"},
    },
}

# The Okendo fields the connector maps, as mappings/salesforce.schema.yaml declares them (types, lengths,
# precisions), present and visible from the start in the default org.
OKENDO_CONTACT_FIELDS: dict[str, dict[str, Any]] = {
    "Okendo_Customer_Id__c": _text(64, external_id=True),
    "Okendo_Loyalty_Customer_Id__c": _text(64, external_id=True),
    "Okendo_Last_Review_Rating__c": _number(2),
    "Okendo_Last_Review_Date__c": {"type": "date"},
    "Okendo_Loyalty_Status__c": _text(40),
    "Okendo_Points_Balance__c": _number(18),
    "Okendo_VIP_Tier__c": _text(80),
    "Okendo_Birthday__c": _text(5),
    "Okendo_Last_NPS_Score__c": _number(2),
    "Okendo_Last_Survey_Date__c": {"type": "date"},
}
OKENDO_OBJECTS: dict[str, dict[str, dict[str, Any]]] = {
    "Okendo_Review__c": {
        "Name": _text(80), "Okendo_Review_Id__c": _text(64, **_EXT), "Contact__c": _CONTACT_REF,
        "Rating__c": _number(1), "Title__c": _text(255), "Body__c": _LONG,
        "Product_Id__c": _text(64), "Product_Name__c": _text(255), "Reviewer_Name__c": _text(255),
        "Reviewer_Email__c": {"type": "email", "length": 80}, "Is_Recommended__c": {"type": "boolean"},
        "Verified_Buyer__c": {"type": "boolean"}, "Contains_Profanity__c": {"type": "boolean"},
        "Reply__c": _LONG, "Order_Number__c": _text(32), "Review_Date__c": {"type": "datetime"},
    },
    "Okendo_Loyalty_Transaction__c": {
        "Name": _text(80), "Okendo_Transaction_Id__c": _text(64, **_EXT), "Contact__c": _CONTACT_REF,
        "Type__c": {"type": "picklist", "length": 40, "picklist": ["Earning", "Redemption", "Adjustment"]},
        "Points__c": _number(18), "Status__c": _text(40), "Reason__c": _text(255),
        "Notification_Text__c": _text(255), "Loyalty_Customer_Id__c": _text(64),
        "Transaction_Date__c": {"type": "datetime"},
    },
    "Okendo_Survey_Response__c": {
        "Name": _text(80), "Okendo_Survey_Response_Id__c": _text(64, **_EXT), "Contact__c": _CONTACT_REF,
        "Survey_Name__c": _text(255), "Channel__c": _text(40), "Answers__c": _LONG,
        "NPS_Score__c": _number(2), "Order_Id__c": _text(32), "Response_Date__c": {"type": "datetime"},
    },
}
DEFAULT_SCHEMA: dict[str, dict[str, dict[str, Any]]] = {
    **STANDARD_SCHEMA, "Contact": {**STANDARD_SCHEMA["Contact"], **OKENDO_CONTACT_FIELDS}, **OKENDO_OBJECTS}

# Objects every org has whatever `schema` says: the connecting user, permission sets and their assignments
# (field-level security, salesforce_metadata.py).
SYSTEM_SCHEMA: dict[str, dict[str, dict[str, Any]]] = {
    "User": {"Username": _text(80, required=True, unique=True), "FirstName": _text(40),
             "LastName": _text(80, required=True), "Email": {"type": "email", "length": 128, "required": True},
             "IsActive": {"type": "boolean", "default": True}},
    "PermissionSet": {"Name": _text(80, required=True, unique=True), "Label": _text(80, required=True),
                      "Description": _text(255), "IsOwnedByProfile": {"type": "boolean", "writable": False}},
    "PermissionSetAssignment": {
        "AssigneeId": {"type": "reference", "reference_to": ["User"], "required": True},
        "PermissionSetId": {"type": "reference", "reference_to": ["PermissionSet"], "required": True}},
}
ORG_ID = "00Demu000000001" + _checksum("00Demu000000001")  # 18-character ids (§5.2)
USER_ID = "005emuUser00001" + _checksum("005emuUser00001")  # the one user every token belongs to
USERNAME = "connector@okendo-connector.example"


# --- value handling -----------------------------------------------------------------------------


def _norm_datetime(value: str) -> str | None:
    """Salesforce's own datetime rendering, in UTC: 2024-01-31T10:00:00.000+0000."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _norm_date(value: str) -> str | None:
    try:
        return date.fromisoformat(value[:10]).isoformat() if len(value) == 10 or value[10:11] == "T" else None
    except ValueError:
        return None


def _parse_error(fdef: FieldDef, value: Any) -> ApiError:
    # A JSON value of the wrong type fails deserialisation of the whole request (emulator's wording,
    # modelled on Salesforce's JSON_PARSER_ERROR messages).
    kind = {"double": "double", "boolean": "boolean", "date": "date", "datetime": "datetime"}.get(fdef.type, "String")
    return ApiError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of {kind} from value {value!r} "
                                              f"for field {fdef.name}")


def _comparable(fdef: FieldDef, value: Any) -> Any:
    """A stored value in the form used for equality: text is case-insensitive, ids are 18-character."""
    if value is None:
        return None
    if fdef.type in ("id", "reference"):
        return to18(value) or value
    if fdef.type in TEXT_TYPES:
        return str(value).lower()
    return value


# --- TLS ----------------------------------------------------------------------------------------


def tls_for_tests(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    """A server context with a trustme certificate for 127.0.0.1, and the CA's PEM path (§2.2)."""
    import trustme  # a test-only dependency

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_path = Path(tmp_path) / "salesforce-emulator-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return context, str(ca_path)


# --- the emulator -------------------------------------------------------------------------------


@dataclass
class _RecordFault:
    status_code: str
    message: str
    indexes: set[int]
    fields: list[str]
    times: int


class SalesforceEmulator(Emulator):
    """Salesforce REST (any /services/data/vNN.N), OAuth token endpoint and userinfo, schema, records,
    faults; the Metadata API's deploy and field-level security (salesforce_metadata.py).

    `okendo_schema=False`: an org without the connector's objects and fields (STANDARD_SCHEMA only);
    `schema=` replaces the whole starting schema. User, PermissionSet and PermissionSetAssignment are always
    there, with one User: the connecting user (`user_id`, `username`), whom every token belongs to."""

    def __init__(self, *, tls_context: ssl.SSLContext | None, tokens: Iterable[str] = ("00Dtest!token",),
                 schema: dict[str, dict[str, dict[str, Any]]] | None = None, api_limit: int = 15000,
                 latency: tuple[float, float] | None = None, page_size: int = 2000, okendo_schema: bool = True):
        super().__init__(tls_context=tls_context, latency=latency)
        if schema is None:
            schema = DEFAULT_SCHEMA if okendo_schema else STANDARD_SCHEMA
        self._initial = (tuple(tokens), copy.deepcopy(schema), api_limit, page_size, latency)
        self._flight_lock = threading.Lock()
        self._in_flight = 0
        self._id_counter = 0
        self._as_user = False  # True while a REST handler runs: field-level security applies
        self._grant_cache: Any = None
        # salesforce_metadata imports this module, so it is imported here, not at the top
        from tests.emulators import salesforce_metadata
        self._md = salesforce_metadata
        self.metadata = salesforce_metadata.MetadataApi(self)
        self.reset()
        self._add_routes()

    def reset(self) -> None:
        """Back to the constructor's state (§5.1): schema, tokens, limits, latency; no records, apps,
        faults or log. Lets a test module share one running emulator (stopping one takes ~0.5 s)."""
        with self._lock:
            # page_size: the query page size; small values exercise nextRecordsUrl paging (§2.4)
            tokens, schema, self.api_limit, self.page_size, self.latency = self._initial
            self.tokens: set[str] = set(tokens)
            self._jwt_apps: dict[str, tuple[str, str]] = {}  # consumer key -> (public key PEM, username)
            self._client_apps: dict[str, str] = {}  # client id -> secret
            self.schema: dict[str, SObjectDef] = {}
            for name, specs in {**SYSTEM_SCHEMA, **schema}.items():
                self.add_object(name, specs)
            self._data: dict[str, dict[str, dict[str, Any]]] = {obj.name: {} for obj in self.schema.values()}
            self._deleted: set[str] = set()
            # (object, field) -> comparable value -> record ids: what `_match` finds without scanning
            # every record (a batch of 200 upserts among thousands of records was quadratic).
            self._indexes: dict[tuple[str, str], dict[Any, set[str]]] = {}
            self._journal: list[Callable[[], None]] | None = None  # undo steps of the collection in progress
            self._cursors: dict[str, list[dict[str, Any]]] = {}
            self._record_faults: list[_RecordFault] = []
            self.api_used = 0
            with self._flight_lock:
                self._max_in_flight = self._in_flight
            self.requests.clear()
            self._faults.clear()
            # Field-level security: what the connecting user sees only through an assigned permission set
            # (deployed fields and objects, add_field(visible=False)); what is here at reset() is visible.
            self.hidden_fields: set[tuple[str, str]] = set()  # (object, field), lower-cased
            self.hidden_objects: set[str] = set()  # lower-cased
            self.permission_sets: dict[str, Any] = {}  # lower-cased Name -> salesforce_metadata.PermissionSetDef
            self._grant_cache = None
            self.deploys: list[dict[str, Any]] = []  # every Metadata API deploy: id, check_only, status, ...
            self.deploy_polls_in_progress = 1  # checkDeployStatus answers InProgress this many times first
            self.can_modify_metadata = True  # False: the user lacks "Modify Metadata Through Metadata API Functions"
            self.metadata.reset()
            self.user_id, self.username = USER_ID, USERNAME
            self._store(self.schema["user"], {"Username": USERNAME, "FirstName": "Okendo", "LastName": "Connector",
                                              "Email": USERNAME, "IsActive": True}, record_id=USER_ID)

    # --- schema helpers -------------------------------------------------------------------------

    def add_object(self, name: str, fields: dict[str, dict[str, Any]] | None = None, *,
                   visible: bool = True) -> SObjectDef:
        """Declare an sObject; `fields` maps field name -> `add_field` keyword arguments. visible=False: the
        user needs a permission set's objectPermissions (allowRead...) to see or write it."""
        with self._lock:
            prefix = STANDARD_PREFIXES.get(name) or self._free_prefix("a0" if name.endswith("__c") else "0E")
            obj = SObjectDef(name, prefix)
            obj.add(FieldDef("Id", "id", 18, writable=False))
            for audit in ("CreatedDate", "LastModifiedDate"):
                obj.add(FieldDef(audit, "datetime", writable=False))
            if obj.custom:
                obj.add(FieldDef("Name", length=80))
            for fname, spec in (fields or {}).items():
                obj.add(FieldDef(fname, **spec))
            self.schema[name.lower()] = obj
            if hasattr(self, "_data"):
                self._data.setdefault(name, {})
                if visible:
                    self.hidden_objects.discard(name.lower())
                else:
                    self.hidden_objects.add(name.lower())
            return obj

    def add_field(self, object: str, name: str, type: str = "string", length: int = 255, external_id: bool = False,
                  unique: bool = False, required: bool = False, reference_to: Iterable[str] | None = None,
                  visible: bool = True, **extra: Any) -> FieldDef:
        """Add (or replace) a field; `extra` takes FieldDef's other attributes (id_lookup=, picklist=, label=,
        precision=, scale=, default=...). visible=False: as a field made through the Metadata API, the user
        sees it only through an assigned permission set's fieldPermissions (readable; editable to write), unless
        it is required: a required field takes no field-level security and is always visible and writable."""
        with self._lock:
            fdef = FieldDef(name, type, length, external_id, unique, required,
                            reference_to=tuple(reference_to or ()), **extra)
            obj = self._known(object)
            obj.add(fdef)
            self._indexes.pop((obj.name, fdef.name), None)  # its type, so its comparable values, may differ
            key = (obj.name.lower(), fdef.name.lower())
            if visible:
                self.hidden_fields.discard(key)
            else:
                self.hidden_fields.add(key)
            return fdef

    def remove_field(self, object: str, name: str) -> None:
        """Drop a field and its values, e.g. to test the connector's start-up describe check."""
        with self._lock:
            obj = self._known(object, name)
            fdef = obj.fields.pop(name.lower())
            for record in self._data[obj.name].values():
                record.pop(fdef.name, None)
            self._indexes.pop((obj.name, fdef.name), None)
            self.hidden_fields.discard((obj.name.lower(), fdef.name.lower()))

    def remove_object(self, name: str) -> None:
        with self._lock:
            obj = self.schema.pop(self._known(name).name.lower())
            self._data.pop(obj.name, None)
            for key in [key for key in self._indexes if key[0] == obj.name]:
                del self._indexes[key]
            self.hidden_objects.discard(obj.name.lower())
            self.hidden_fields -= {key for key in self.hidden_fields if key[0] == obj.name.lower()}

    def _free_prefix(self, start: str) -> str:
        used = {obj.prefix for obj in self.schema.values()}
        return next(start + ch for ch in _B62[1:] if start + ch not in used)

    def _object(self, name: str) -> SObjectDef:
        obj = self.schema.get(name.lower())
        if obj is None or not self._can(obj, "allowRead"):
            raise resource_missing()  # §5.2: unknown (or, to this user, invisible) sObject -> 404 NOT_FOUND
        return obj

    # --- field-level security (the permission sets and their grants: salesforce_metadata.py) ------------

    def _grants(self) -> Any:
        if self._grant_cache is None:
            self._grant_cache = self._md.effective_grants(self)
        return self._grant_cache

    def _can(self, obj: SObjectDef, permission: str) -> bool:
        """Object permission (allowRead, allowCreate, allowEdit, allowDelete) of the connecting user."""
        if not self._as_user or obj.name.lower() not in self.hidden_objects:
            return True
        return permission in self._grants().objects.get(obj.name.lower(), ())

    def _sees(self, obj: SObjectDef, fdef: FieldDef, *, edit: bool = False) -> bool:
        # A required field takes no field-level security: whoever may use the object reads and edits it
        # (a permission set naming it is refused, salesforce_metadata.py [A]).
        if not self._as_user or fdef.required or (obj.name.lower(), fdef.name.lower()) not in self.hidden_fields:
            return True
        readable, editable = self._grants().fields.get(f"{obj.name}.{fdef.name}".lower(), (False, False))
        return editable if edit else readable

    def _visible_field(self, obj: SObjectDef, name: str) -> FieldDef | None:
        fdef = obj.field(name)
        return fdef if fdef is not None and self._sees(obj, fdef) else None

    def _require(self, obj: SObjectDef, permission: str) -> None:
        if not self._can(obj, permission):
            # Emulator's wording (the status code Salesforce uses for refused access on writes)
            raise RecordError("INSUFFICIENT_ACCESS_OR_READONLY", f"insufficient access rights on object id: "
                                                                 f"no {permission} on {obj.name}")

    def _known(self, name: str, field_name: str | None = None) -> SObjectDef:
        """For the Python helpers: a KeyError (a test bug), not an API error."""
        obj = self.schema.get(name.lower())
        if obj is None or (field_name is not None and obj.field(field_name) is None):
            raise KeyError(f"no {name}.{field_name} in the emulator's schema" if obj else f"no sObject {name}")
        return obj

    def _object_for_id(self, record_id: str) -> SObjectDef | None:
        return next((obj for obj in self.schema.values() if obj.prefix == record_id[:3]), None)

    # --- record helpers (bypass the API: seeding and assertions) --------------------------------

    def records(self, object: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._data[self._known(object).name].values()]

    def get(self, object: str, record_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._data[self._known(object).name].get(to18(record_id) or record_id)
            return dict(record) if record else None

    def delete(self, object: str, record_id: str) -> None:
        """Delete a record as a person would in Salesforce: to the recycle bin, so a later write naming
        its id (its own, or in a lookup field) is refused with ENTITY_IS_DELETED."""
        with self._lock:
            obj = self._known(object)
            self._delete(obj, to18(record_id) or record_id)

    def insert(self, object: str, fields: dict[str, Any]) -> str:
        """Store a record without the API's record-level checks (so tests can seed duplicates)."""
        with self._lock:
            obj = self._known(object)
            return self._store(obj, self._deserialize(obj, fields))

    def find(self, object: str, **fields: Any) -> list[dict[str, Any]]:
        """Records whose fields equal the given values (text compared case-insensitively)."""
        with self._lock:
            obj = self._known(object)
            wanted = [(self._known(object, name).fields[name.lower()], value) for name, value in fields.items()]
            return [dict(r) for r in self._data[obj.name].values()
                    if all(_comparable(f, r.get(f.name)) == _comparable(f, v) for f, v in wanted)]

    # --- tokens and apps ------------------------------------------------------------------------

    def expire(self, token: str | None = None) -> None:
        """Invalidate one token, or every token when None (§5.1 'token expiry')."""
        with self._lock:
            if token is None:
                self.tokens.clear()
            else:
                self.tokens.discard(token)

    def register_jwt_app(self, consumer_key: str, public_key_pem: str | bytes, username: str) -> None:
        with self._lock:
            pem = public_key_pem.decode() if isinstance(public_key_pem, bytes) else public_key_pem
            self._jwt_apps[consumer_key] = (pem, username)

    def register_client_credentials(self, client_id: str, client_secret: str) -> None:
        with self._lock:
            self._client_apps[client_id] = client_secret

    def token_requests(self) -> int:
        return len(self.calls("POST", "^" + TOKEN_PATH + "$"))

    def max_concurrent_requests(self) -> int:
        with self._flight_lock:
            return self._max_in_flight

    # --- fault helpers (on top of base.fail; path is a regex, default: the data API) ------------

    def fail_status(self, status: int, error_code: str, message: str, *, times: int = 1, path: str | None = None,
                    method: str | None = None, headers: dict[str, str] | None = None) -> Fault:
        return self.fail(method=method, path=path or DATA_PATH, status=status, times=times,
                         body=[{"message": message, "errorCode": error_code}], headers=dict(headers or {}),
                         name=error_code)

    def fail_lost_answer(self, path: str | None = None, times: int = 1, *, method: str | None = None) -> Fault:
        """Apply the request, then close the connection: the change is made, its answer never arrives."""
        return self.fail(method=method, path=path, drop_after=True, times=times, name="lost_answer")

    def fail_expired_session(self, times: int = 1, path: str | None = None) -> Fault:
        return self.fail_status(401, "INVALID_SESSION_ID", "Session expired or invalid", times=times, path=path)

    def fail_request_limit(self, times: int = 1, path: str | None = None) -> Fault:
        return self.fail_status(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", times=times, path=path)

    def fail_unavailable(self, times: int = 1, path: str | None = None, retry_after: int | None = None) -> Fault:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return self.fail_status(503, "SERVER_UNAVAILABLE", "Server unavailable", times=times, path=path,
                                headers=headers)

    def fail_server_error(self, times: int = 1, path: str | None = None) -> Fault:
        return self.fail_status(500, "UNKNOWN_EXCEPTION", "An unexpected error occurred. Please include this "
                                "ErrorId if you contact support: 1234567890-12345 (-1234567890)", times=times, path=path)

    def fail_slow(self, path: str | None = None, seconds: float = 2.0, times: int = 1) -> Fault:
        """Answer normally but only after `seconds` (longer than a client timeout = a timeout, §5.1)."""
        return self.fail(path=path or DATA_PATH, delay=seconds, times=times, name="slow")

    def fail_drop(self, path: str | None = None, times: int = 1) -> Fault:
        return self.fail(path=path or DATA_PATH, drop=True, times=times, name="drop")

    def fail_records(self, status_code: str = "UNABLE_TO_LOCK_ROW", message: str | None = None,
                     indexes: Iterable[int] = (1,), times: int = 1, fields: Iterable[str] = ()) -> None:
        """Fail the records at `indexes` of the next `times` Collections calls with a per-record error."""
        with self._lock:
            self._record_faults.append(_RecordFault(
                status_code, message or RECORD_FAULT_MESSAGES.get(status_code, status_code.lower()),
                set(indexes), list(fields), times))

    def _take_record_fault(self) -> _RecordFault | None:
        if not self._record_faults:
            return None
        fault = self._record_faults[0]
        fault.times -= 1
        if fault.times <= 0:
            self._record_faults.pop(0)
        return fault

    # --- base hooks -----------------------------------------------------------------------------

    def _handle(self, http: BaseHTTPRequestHandler) -> None:
        # Count requests in flight around the whole exchange (latency and slow faults included).
        with self._flight_lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            super()._handle(http)
        finally:
            with self._flight_lock:
                self._in_flight -= 1

    def authorize(self, request: Request) -> Reply | None:
        if request.path.startswith(("/services/oauth2/", "/services/Soap/")):
            return None  # the token endpoint; userinfo and the Metadata API check their own credentials
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or token not in self.tokens:
            return Reply(401, INVALID_SESSION)
        self.api_used += 1  # §5.2: every authenticated API call counts against the daily allocation
        if self.api_used > self.api_limit:
            return Reply(403, LIMIT_EXCEEDED)  # limits arrive as 403, not 429 (§2.6)
        return None

    def decorate(self, request: Request, reply: Reply) -> None:
        reply.headers["Sforce-Limit-Info"] = f"api-usage={self.api_used}/{self.api_limit}"  # §2.6

    def not_found(self, request: Request, method_allowed: bool) -> Reply:
        if method_allowed:
            return resource_missing().reply()
        return ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed").reply()

    # --- routes ---------------------------------------------------------------------------------

    def _add_routes(self) -> None:
        v = "/services/data/v{version}"
        routes: list[tuple[str, str, Callable[[Request], Reply]]] = [
            ("POST", TOKEN_PATH, self._token),
            ("GET", f"{v}/limits", self._limits),
            ("GET", f"{v}/sobjects", self._describe_global),
            ("GET", f"{v}/sobjects/{{type}}/describe", self._describe),
            ("GET", f"{v}/sobjects/{{type}}", self._object_info),
            ("POST", f"{v}/sobjects/{{type}}", self._create_one),
            ("GET", f"{v}/sobjects/{{type}}/{{id}}", self._get_one),
            ("PATCH", f"{v}/sobjects/{{type}}/{{id}}", self._update_one),
            ("DELETE", f"{v}/sobjects/{{type}}/{{id}}", self._delete_one),
            ("GET", f"{v}/sobjects/{{type}}/{{field}}/{{value}}", self._get_by_ext),
            ("PATCH", f"{v}/sobjects/{{type}}/{{field}}/{{value}}", self._upsert_one),
            ("DELETE", f"{v}/sobjects/{{type}}/{{field}}/{{value}}", self._delete_by_ext),
            ("GET", f"{v}/query", self._query),
            ("GET", f"{v}/queryAll", self._query),
            ("GET", f"{v}/query/{{cursor}}", self._query_more),
            ("GET", f"{v}/queryAll/{{cursor}}", self._query_more),
            ("POST", f"{v}/composite/sobjects", self._collection_create),
            ("PATCH", f"{v}/composite/sobjects", self._collection_update),
            ("DELETE", f"{v}/composite/sobjects", self._collection_delete),
            ("PATCH", f"{v}/composite/sobjects/{{type}}/{{field}}", self._collection_upsert),
            ("GET", "/services/oauth2/userinfo", lambda request: self._md.userinfo(self, request)),
        ]
        for method, pattern, handler in routes:
            self.route(method, pattern, self._guarded(handler))
        # The Metadata API (SOAP): simple-salesforce posts deploy to .../deployRequest and checkDeployStatus
        # to .../deployRequest/{asyncId}; the operation is the SOAP body's, whatever the path says.
        for pattern in ("/services/Soap/m/{version}", "/services/Soap/m/{version}/deployRequest",
                        "/services/Soap/m/{version}/deployRequest/{async_id}"):
            self.route("POST", pattern, self.metadata.handle)

    def _guarded(self, handler: Callable[[Request], Reply]) -> Callable[[Request], Reply]:
        def run(request: Request) -> Reply:
            self._as_user, self._grant_cache = True, None  # the API sees what the connecting user may see
            try:
                return handler(request)
            except (ApiError, RecordError) as error:
                return error.reply()
            finally:
                self._as_user, self._grant_cache = False, None
        return run

    @staticmethod
    def _json(request: Request) -> Any:
        if request.body and request.headers.get("content-type", "").split(";")[0].strip().lower() in (
                "text/xml", "application/xml"):
            # The REST API reads an XML content type's body as XML, so a JSON body sent with it fails
            # (simple-salesforce's deploy leaves Content-Type: text/xml in Salesforce.headers, which
            # sf.restful(..., json=...) then sends). Emulator's wording.
            raise ApiError(400, "INVALID_XML", "The request body is not valid XML (Content-Type: "
                                               f"{request.headers['content-type']})")
        try:
            return request.json()
        except ValueError as error:
            raise ApiError(400, "JSON_PARSER_ERROR", f"Unexpected character: {error}") from error

    def _url(self, request: Request, obj: SObjectDef, record_id: str) -> str:
        return f"/services/data/v{request.params['version']}/sobjects/{obj.name}/{record_id}"

    # --- OAuth token endpoint (§2.3, §5.2) ------------------------------------------------------

    def _token(self, request: Request) -> Reply:
        form = {k: v[0] for k, v in parse_qs(request.body.decode(errors="replace"), keep_blank_values=True).items()}
        grant = form.get("grant_type")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self._jwt_grant(form.get("assertion", ""))
        if grant == "client_credentials":
            return self._client_credentials_grant(request, form)
        return _oauth_error("unsupported_grant_type", "grant type not supported")

    def _jwt_grant(self, assertion: str) -> Reply:
        try:
            issuer = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
        except jwt.InvalidTokenError:
            return _oauth_error("invalid_grant", "invalid assertion")
        app = self._jwt_apps.get(issuer) if isinstance(issuer, str) else None
        if app is None:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        public_key, username = app
        try:
            claims = jwt.decode(assertion, public_key, algorithms=["RS256"], audience=list(JWT_AUDIENCES),
                                issuer=issuer, options={"require": ["iss", "sub", "aud", "exp"]})
        except jwt.ExpiredSignatureError:
            return _oauth_error("invalid_grant", "expired authorization code")
        except jwt.InvalidAudienceError:
            return _oauth_error("invalid_grant", "audience is invalid")
        except jwt.InvalidTokenError:
            return _oauth_error("invalid_grant", "invalid assertion")
        if claims.get("sub") != username:
            # simple-salesforce special-cases this exact text (login.py token_login)
            return _oauth_error("invalid_grant", "user hasn't approved this consumer")
        return self._issue_token()

    def _client_credentials_grant(self, request: Request, form: dict[str, str]) -> Reply:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return _oauth_error("invalid_client", "invalid client credentials")
        if client_id not in self._client_apps:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if not secrets.compare_digest(self._client_apps[client_id], secret or ""):
            return _oauth_error("invalid_client", "invalid client credentials")
        return self._issue_token()

    def _issue_token(self) -> Reply:
        token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(24)}"
        self.tokens.add(token)
        return Reply(200, {
            "access_token": token, "instance_url": self.url, "token_type": "Bearer", "scope": "api",
            "id": f"{self.url}/id/{ORG_ID}/{self.user_id}",
            "issued_at": str(int(time.time() * 1000)),
            "signature": base64.b64encode(secrets.token_bytes(32)).decode(),
        })

    # --- describe and limits ----------------------------------------------------------------------

    def _limits(self, request: Request) -> Reply:
        return Reply(200, {"DailyApiRequests": {"Max": self.api_limit,
                                                "Remaining": max(0, self.api_limit - self.api_used)}})

    def _summary(self, obj: SObjectDef, version: str) -> dict[str, Any]:
        return {**obj.summary(version), "createable": self._can(obj, "allowCreate"),
                "updateable": self._can(obj, "allowEdit"), "deletable": self._can(obj, "allowDelete")}

    def _describe_global(self, request: Request) -> Reply:
        version = request.params["version"]
        return Reply(200, {"encoding": "UTF-8", "maxBatchSize": MAX_COLLECTION,
                           "sobjects": [self._summary(obj, version) for obj in self.schema.values()
                                        if self._can(obj, "allowRead")]})

    def _object_info(self, request: Request) -> Reply:
        obj = self._object(request.params["type"])
        return Reply(200, {"objectDescribe": self._summary(obj, request.params["version"]), "recentItems": []})

    def _describe(self, request: Request) -> Reply:
        obj = self._object(request.params["type"])
        fields = []
        for fdef in obj.fields.values():
            if self._sees(obj, fdef):  # a field the user may not read is not described at all
                described = fdef.describe()
                if not self._sees(obj, fdef, edit=True):
                    described.update(createable=False, updateable=False)
                fields.append(described)
        return Reply(200, {**self._summary(obj, request.params["version"]), "fields": fields})

    # --- single-record endpoints (§2.4, §5.2) -----------------------------------------------------

    def _create_one(self, request: Request) -> Reply:
        obj = self._object(request.params["type"])
        new_id = self._create(obj, self._json(request))
        return Reply(201, {"id": new_id, "success": True, "errors": []})

    def _record_for(self, obj: SObjectDef, raw_id: str) -> dict[str, Any]:
        """The record for a path id segment, with the API's errors for a foreign or malformed id."""
        record_id = to18(raw_id)
        if record_id is None:
            raise no_such_ext_field(raw_id)  # a non-id segment is read as an external-id field name
        if record_id[:3] != obj.prefix:
            # Shape from the REST error docs' "Incorrect ID example"
            raise ApiError(400, "MALFORMED_ID", f"{obj.label} ID: id value of incorrect type: {raw_id}", ["Id"])
        record = self._data[obj.name].get(record_id)
        if record is None:
            raise resource_missing()
        return record

    def _get_one(self, request: Request) -> Reply:
        obj = self._object(request.params["type"])
        record = self._record_for(obj, request.params["id"])
        wanted = request.query.get("fields", [""])[0]
        names = [self._field(obj, n.strip()).name for n in wanted.split(",") if n.strip()] or None
        return Reply(200, self._render(request, obj, record, names))

    def _update_one(self, request: Request) -> Reply:
        obj = self._object(request.params["type"])
        record = self._record_for(obj, request.params["id"])
        self._update(obj, record, self._json(request))
        return Reply(204)

    def _delete_one(self, request: Request) -> Reply:
        obj = self._object(request.params["type"])
        self._delete(obj, self._record_for(obj, request.params["id"])["Id"])
        return Reply(204)

    def _ext_matches(self, request: Request) -> tuple[SObjectDef, FieldDef, str, list[dict[str, Any]]]:
        obj = self._object(request.params["type"])
        fdef = self._visible_field(obj, request.params["field"])
        if fdef is None or not fdef.is_lookup:
            raise no_such_ext_field(request.params["field"])
        value = request.params["value"]  # percent-decoded by base; '+' stays '+' (simple-salesforce #801)
        return obj, fdef, value, self._match(obj, fdef, value)

    def _multiple(self, request: Request, obj: SObjectDef, matches: list[dict[str, Any]]) -> Reply:
        return Reply(300, [self._url(request, obj, r["Id"]) for r in matches])  # §2.5: list of record URLs

    def _get_by_ext(self, request: Request) -> Reply:
        obj, _, _, matches = self._ext_matches(request)
        if not matches:
            raise resource_missing()
        if len(matches) > 1:
            return self._multiple(request, obj, matches)
        return Reply(200, self._render(request, obj, matches[0]))

    def _delete_by_ext(self, request: Request) -> Reply:
        obj, _, _, matches = self._ext_matches(request)
        if not matches:
            raise resource_missing()
        if len(matches) > 1:
            return self._multiple(request, obj, matches)
        self._delete(obj, matches[0]["Id"])
        return Reply(204)

    def _upsert_one(self, request: Request) -> Reply:
        obj, fdef, value, matches = self._ext_matches(request)
        body = self._json(request)
        if len(matches) > 1:
            return self._multiple(request, obj, matches)
        if matches:
            self._update(obj, matches[0], body)
            if float(request.params["version"]) < UPSERT_200_SINCE:
                return Reply(204)
            return Reply(200, {"id": matches[0]["Id"], "success": True, "errors": [], "created": False})
        if fdef.type == "id" or request.query.get("updateOnly", [""])[0].lower() == "true":
            raise resource_missing()
        new_id = self._create(obj, body, defaults={fdef.name: value})
        return Reply(201, {"id": new_id, "success": True, "errors": [], "created": True})

    # --- record operations shared by single calls and Collections ---------------------------------

    def _field(self, obj: SObjectDef, name: str) -> FieldDef:
        fdef = self._visible_field(obj, name)
        if fdef is None:  # unknown, or invisible to the user (field-level security): the same answer
            raise ApiError(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {obj.name}")
        return fdef

    def _deserialize(self, obj: SObjectDef, body: Any) -> dict[str, Any]:
        """Field names and JSON types; failures here reject the whole request (ApiError)."""
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of {obj.name} from the request body")
        values: dict[str, Any] = {}
        for key, value in body.items():
            if key == "attributes":
                continue
            rel = obj.by_relationship(key) if self._visible_field(obj, key) is None else None
            # "Contact__r": {"Okendo_Customer_Id__c": "..."} sets Contact__c by external id
            if rel is not None and self._sees(obj, rel):
                values[rel.name] = self._resolve_relationship(rel, value)
                continue
            fdef = self._field(obj, key)
            if fdef.type == "id":
                raise ApiError(400, "INVALID_FIELD", "The Id field should not be specified in the sobject data.")
            values[fdef.name] = self._coerce(fdef, value)
        return values

    def _coerce(self, fdef: FieldDef, value: Any) -> Any:
        if value is None:
            return False if fdef.type == "boolean" else None
        if fdef.type in TEXT_TYPES or fdef.type == "reference":
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise _parse_error(fdef, value)
            return str(value) or None  # Salesforce stores "" as null
        if fdef.type == "double":
            if isinstance(value, bool):
                raise _parse_error(fdef, value)
            try:
                return float(value)
            except (TypeError, ValueError):
                raise _parse_error(fdef, value) from None
        if fdef.type == "boolean":
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise _parse_error(fdef, value)
            return value
        normalized = (_norm_date if fdef.type == "date" else _norm_datetime)(value) if isinstance(value, str) else None
        if normalized is None:
            raise _parse_error(fdef, value)
        return normalized

    def _resolve_relationship(self, rel: FieldDef, value: Any) -> str | None:
        if value is None:
            return None
        keys = [k for k in value if k != "attributes"] if isinstance(value, dict) else []
        target_name = (value.get("attributes") or {}).get("type") if isinstance(value, dict) else None
        target = self.schema.get((target_name or (rel.reference_to or ("",))[0]).lower())
        if len(keys) != 1 or target is None or not self._can(target, "allowRead"):
            raise ApiError(400, "JSON_PARSER_ERROR", f"Invalid relationship value for {rel.relationship_name}")
        ext = self._visible_field(target, keys[0])
        if ext is None or not ext.is_lookup:
            raise ApiError(400, "INVALID_FIELD", f"Field name provided, {keys[0]} is not an External ID or indexed "
                                                 f"field for {target.name}")
        matches = self._match(target, ext, value[keys[0]])
        if len(matches) != 1:  # a record error, so Collections report it per record (emulator's wording)
            verdict = "not found for" if not matches else "matched more than one record for"
            code = "INVALID_FIELD" if not matches else "DUPLICATE_EXTERNAL_ID"
            raise RecordError(code, f"Foreign key external ID: {value[keys[0]]} {verdict} field {ext.name} "
                                    f"in entity {target.name}")
        return str(matches[0]["Id"])

    def _validate(self, obj: SObjectDef, values: dict[str, Any], *, creating: bool, record_id: str | None) -> None:
        """Record-level rules; failures are RecordErrors (400 alone, a result entry in Collections)."""
        for fdef in (obj.field(n) for n in values):
            assert fdef is not None
            value = values[fdef.name]
            if not fdef.writable or not self._sees(obj, fdef, edit=True):
                raise RecordError("INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {fdef.name}. "
                                  "Please check the security settings of this field and verify that it is read/write "
                                  "for your profile or permission set.", [fdef.name])
            if value is None:
                continue
            if fdef.type in TEXT_TYPES and len(value) > fdef.length:
                raise RecordError("STRING_TOO_LONG", f"{fdef.label}: data value too large: {value} "
                                  f"(max length={fdef.length})", [fdef.name])
            # Email fields take ASCII addresses only (an internationalised one is refused).
            if fdef.type == "email" and (not value.isascii() or not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value)):
                raise RecordError("INVALID_EMAIL_ADDRESS", f"{fdef.label}: invalid email address: {value}", [fdef.name])
            if fdef.type == "double" and fdef.precision is not None and \
                    abs(value) >= 10 ** (fdef.precision - (fdef.scale or 0)):
                # Salesforce's message, e.g. "Rating: value outside of valid range on numeric field: 10"
                raise RecordError("NUMBER_OUTSIDE_VALID_RANGE", f"{fdef.label}: value outside of valid range on "
                                  f"numeric field: {value:g}", [fdef.name])
            if fdef.picklist and fdef.restricted and value not in fdef.picklist:
                raise RecordError("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                  f"{fdef.label}: bad value for restricted picklist field: {value}", [fdef.name])
            if fdef.type == "reference":
                values[fdef.name] = self._check_reference(fdef, value)
        missing = [f.name for f in obj.fields.values() if f.required and (
            (creating and values.get(f.name) is None) or (not creating and f.name in values and values[f.name] is None))]
        if missing:
            raise RecordError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)
        if obj.name == "PermissionSetAssignment":
            self._md.check_assignment(self, values, record_id)
        for fdef in obj.fields.values():
            if fdef.unique and values.get(fdef.name) is not None:
                clash = next((r["Id"] for r in self._match(obj, fdef, values[fdef.name]) if r["Id"] != record_id), None)
                if clash:
                    raise RecordError("DUPLICATE_VALUE", f"duplicate value found: {fdef.name} duplicates value on "
                                                         f"record with id: {clash}", [fdef.name])

    def _check_reference(self, fdef: FieldDef, value: str) -> str:
        ref_id = to18(value)
        if ref_id is None:
            # e.g. "id value of incorrect type: NOT LINKED TO INVOICE ... statusCode: MALFORMED_ID" (public reports)
            raise RecordError("MALFORMED_ID", f"{fdef.label}: id value of incorrect type: {value}", [fdef.name])
        target = self._object_for_id(ref_id)
        if target is None or target.name not in fdef.reference_to:
            raise RecordError("FIELD_INTEGRITY_EXCEPTION", f"{fdef.label}: id value of incorrect type: {value}",
                              [fdef.name])
        if ref_id not in self._data.get(target.name, {}):
            if ref_id in self._deleted:  # in the recycle bin: Salesforce's "entity is deleted", naming no field
                raise RecordError("ENTITY_IS_DELETED", "entity is deleted")
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [fdef.name])
        return ref_id

    def _create(self, obj: SObjectDef, body: Any, defaults: dict[str, Any] | None = None) -> str:
        self._require(obj, "allowCreate")
        values = self._deserialize(obj, body)
        for name, value in (defaults or {}).items():
            fdef = obj.field(name)
            assert fdef is not None
            values.setdefault(name, value if fdef.type == "id" else self._coerce(fdef, value))
        self._validate(obj, values, creating=True, record_id=None)
        return self._store(obj, values)

    def _update(self, obj: SObjectDef, record: dict[str, Any], body: Any) -> None:
        self._require(obj, "allowEdit")
        values = self._deserialize(obj, body)
        self._validate(obj, values, creating=False, record_id=record["Id"])
        before = dict(record)
        self._unindex(obj, record)
        record.update(values)
        record["LastModifiedDate"] = _norm_datetime(datetime.now(timezone.utc).isoformat())
        self._index_record(obj, record)
        if self._journal is not None:
            self._journal.append(lambda: self._restore(obj, record, before))

    def _restore(self, obj: SObjectDef, record: dict[str, Any], before: dict[str, Any]) -> None:
        self._unindex(obj, record)
        record.clear()
        record.update(before)
        self._index_record(obj, record)

    def _new_id(self, prefix: str) -> str:
        self._id_counter += 1
        body = prefix + "emu" + _base62(self._id_counter).rjust(9, "0")
        return body + _checksum(body)

    def _store(self, obj: SObjectDef, values: dict[str, Any], record_id: str | None = None) -> str:
        new_id = record_id or self._new_id(obj.prefix)
        now = _norm_datetime(datetime.now(timezone.utc).isoformat())
        record = {f.name: (bool(f.default) if f.type == "boolean" else None) for f in obj.fields.values()}
        record.update(values, Id=new_id, CreatedDate=now, LastModifiedDate=now)
        self._data[obj.name][new_id] = record
        self._index_record(obj, record)
        self._grant_cache = None  # an assignment takes effect at once
        if self._journal is not None:
            self._journal.append(lambda: self._unstore(obj, new_id))
        return new_id

    def _unstore(self, obj: SObjectDef, record_id: str) -> None:
        self._unindex(obj, self._data[obj.name].pop(record_id))
        self._grant_cache = None

    def _delete(self, obj: SObjectDef, record_id: str) -> None:
        self._require(obj, "allowDelete")
        self._grant_cache = None
        record = self._data[obj.name].pop(record_id)
        self._unindex(obj, record)
        self._deleted.add(record_id)
        if self._journal is not None:
            self._journal.append(lambda: self._undelete(obj, record))

    def _undelete(self, obj: SObjectDef, record: dict[str, Any]) -> None:
        self._deleted.discard(record["Id"])
        self._data[obj.name][record["Id"]] = record  # (at the end: `records()` order may differ after a rollback)
        self._index_record(obj, record)

    def _match(self, obj: SObjectDef, fdef: FieldDef, value: Any) -> list[dict[str, Any]]:
        wanted = _comparable(fdef, value if fdef.type in TEXT_TYPES | {"id", "reference"} else
                             self._coerce(fdef, value))
        key = (obj.name, fdef.name)
        if key not in self._indexes:
            index: dict[Any, set[str]] = {}
            for r in self._data[obj.name].values():
                index.setdefault(_comparable(fdef, r.get(fdef.name)), set()).add(r["Id"])
            self._indexes[key] = index
        records = self._data[obj.name]
        return sorted((records[i] for i in self._indexes[key].get(wanted, ())), key=lambda r: r["Id"])

    def _index_record(self, obj: SObjectDef, record: dict[str, Any]) -> None:
        for (name, field_name), index in self._indexes.items():
            if name == obj.name:
                fdef = obj.field(field_name)
                if fdef is not None:
                    index.setdefault(_comparable(fdef, record.get(fdef.name)), set()).add(record["Id"])

    def _unindex(self, obj: SObjectDef, record: dict[str, Any]) -> None:
        for (name, field_name), index in self._indexes.items():
            if name == obj.name:
                fdef = obj.field(field_name)
                ids = index.get(_comparable(fdef, record.get(fdef.name))) if fdef is not None else None
                if ids is not None:
                    ids.discard(record["Id"])

    def _render(self, request: Request, obj: SObjectDef, record: dict[str, Any],
                names: list[str] | None = None) -> dict[str, Any]:
        names = names or [f.name for f in obj.fields.values() if self._sees(obj, f)]
        return {"attributes": {"type": obj.name, "url": self._url(request, obj, record["Id"])},
                **{name: record.get(name) for name in names}}

    # --- sObject Collections (§2.4, §2.5, §5.2) -------------------------------------------------------

    def _collection_records(self, request: Request, path_type: str | None = None) -> tuple[list[Any], bool]:
        body = self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body must be {\"allOrNone\": ..., \"records\": [...]}")
        records = body["records"]
        if len(records) > MAX_COLLECTION:
            # Wording as reported in https://github.com/sorenkrabbe/Chrome-Salesforce-inspector/issues/134
            raise ApiError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records "
                                                     "into this call")
        for item in records:
            kind = (item.get("attributes") or {}).get("type") if isinstance(item, dict) else None
            if not kind:  # §5.2: each record needs attributes.type (emulator's wording)
                raise ApiError(400, "INVALID_TYPE", "Every record needs attributes.type in an sObject Collections call")
            self._object(kind)
            if path_type and kind.lower() != path_type.lower():
                raise ApiError(400, "INVALID_TYPE", f"Record type {kind} does not match {path_type}")
        return records, bool(body.get("allOrNone", False))

    def _run_collection(self, items: list[Any], all_or_none: bool,
                        apply: Callable[[int, Any], dict[str, Any]]) -> Reply:
        """Apply `apply` per item in order; per-record failures become results, allOrNone rolls back."""
        # Every change journalled, undone in reverse on a rollback (a copy of all data per request was
        # most of the emulator's time once it held thousands of records).
        journal: list[Callable[[], None]] = []
        self._journal = journal
        injected = self._take_record_fault()
        results: list[dict[str, Any]] = []

        def roll_back() -> None:
            for undo in reversed(journal):
                undo()

        try:
            for index, item in enumerate(items):
                try:
                    if injected and index in injected.indexes:
                        raise RecordError(injected.status_code, injected.message, injected.fields)
                    results.append(apply(index, item))
                except RecordError as error:
                    results.append(_failure(item, error))
        except ApiError:
            roll_back()  # a malformed request changes nothing
            raise
        finally:
            self._journal = None
        if all_or_none and not all(r["success"] for r in results):
            roll_back()
            # Records that existed before keep their id; would-be new records have none to report.
            results = [r if not r["success"] else {**({"id": r["id"]} if r.get("existing") else {}),
                                                   "success": False, "errors": [dict(ROLLED_BACK)]}
                       for r in results]
        for r in results:
            r.pop("existing", None)
        return Reply(200, results)  # 200 whenever well formed, results in request order (§2.5)

    def _collection_create(self, request: Request) -> Reply:
        records, all_or_none = self._collection_records(request)

        def create(_: int, item: dict[str, Any]) -> dict[str, Any]:
            if "Id" in item or "id" in item:
                raise RecordError("INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", ["Id"])
            obj = self._object(item["attributes"]["type"])
            return {"id": self._create(obj, item), "success": True, "errors": []}

        return self._run_collection(records, all_or_none, create)

    def _collection_update(self, request: Request) -> Reply:
        records, all_or_none = self._collection_records(request)

        def update(_: int, item: dict[str, Any]) -> dict[str, Any]:
            obj = self._object(item["attributes"]["type"])
            body = {k: v for k, v in item.items() if k.lower() != "id"}
            record = self._existing(obj, next((v for k, v in item.items() if k.lower() == "id"), None),
                                    missing="Id not specified in an update call")
            self._update(obj, record, body)
            return {"id": record["Id"], "success": True, "errors": [], "existing": True}

        return self._run_collection(records, all_or_none, update)

    def _collection_delete(self, request: Request) -> Reply:
        ids = [i for i in request.query.get("ids", [""])[0].split(",") if i]
        if len(ids) > MAX_COLLECTION:
            raise ApiError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records "
                                                     "into this call")
        all_or_none = request.query.get("allOrNone", ["false"])[0].lower() == "true"

        def delete(_: int, raw_id: str) -> dict[str, Any]:
            record_id = to18(raw_id)
            obj = self._object_for_id(record_id) if record_id else None
            if obj is None:
                raise RecordError("MALFORMED_ID", f"malformed id {raw_id}")
            record = self._existing(obj, raw_id, missing="")
            self._delete(obj, record["Id"])
            return {"id": record["Id"], "success": True, "errors": [], "existing": True}

        return self._run_collection(ids, all_or_none, delete)

    def _collection_upsert(self, request: Request) -> Reply:
        obj = self._object(request.params["type"])
        fdef = self._visible_field(obj, request.params["field"])
        if fdef is None or not fdef.is_lookup:
            raise ApiError(400, "INVALID_FIELD", f"Field name provided, {request.params['field']} is not an External "
                                                 f"ID or indexed field for {obj.name}")
        records, all_or_none = self._collection_records(request, path_type=obj.name)
        keys = [_comparable(fdef, _ci_get(item, fdef.name)) for item in records]

        def upsert(index: int, item: dict[str, Any]) -> dict[str, Any]:
            value = _ci_get(item, fdef.name)
            if value in (None, ""):
                raise RecordError("MISSING_ARGUMENT", f"{fdef.name} not specified", [fdef.name])
            if keys.count(keys[index]) > 1:  # the same key twice in one request fails each copy
                raise RecordError("DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {value}", [fdef.name])
            matches = self._match(obj, fdef, value)
            if len(matches) > 1:
                raise RecordError("DUPLICATE_EXTERNAL_ID", f"{fdef.name}: more than one record found for external id "
                                  f"field: [{', '.join(r['Id'] for r in matches)}]", [fdef.name])
            if matches:
                self._update(obj, matches[0], item)
                return {"id": matches[0]["Id"], "success": True, "errors": [], "created": False, "existing": True}
            return {"id": self._create(obj, item), "success": True, "errors": [], "created": True}

        return self._run_collection(records, all_or_none, upsert)

    def _existing(self, obj: SObjectDef, raw_id: Any, missing: str) -> dict[str, Any]:
        if raw_id in (None, ""):
            raise RecordError("MISSING_ARGUMENT", missing, ["Id"])
        record_id = to18(raw_id)
        if record_id is None or record_id[:3] != obj.prefix:
            raise RecordError("MALFORMED_ID", f"{obj.label} ID: id value of incorrect type: {raw_id}", ["Id"])
        record = self._data[obj.name].get(record_id)
        if record is None:
            if record_id in self._deleted:
                raise RecordError("ENTITY_IS_DELETED", "entity is deleted")
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        return record

    # --- SOQL (§5.2: a deliberately tiny subset) ----------------------------------------------------

    def _query(self, request: Request) -> Reply:
        soql = request.query.get("q", [""])[0]
        parsed = _Soql(soql, self._object_for_query, self._visible_field).parse()
        obj = parsed.obj
        definitions = obj is self._md.FIELD_DEFINITION  # every field, whatever the user may see
        if definitions:
            self._md.require_entity_filter(parsed.where)
        source = self._md.field_definition_rows(self) if definitions else self._data[obj.name].values()
        rows = [r for r in source if parsed.where is None or _evaluate(parsed.where, r)]
        for fdef, descending in reversed(parsed.order):
            rows.sort(key=lambda r, f=fdef: _sort_key(f, r.get(f.name)), reverse=descending)
        rows = rows[parsed.offset:]
        if parsed.limit is not None:
            rows = rows[:parsed.limit]
        if parsed.fields is None:  # SELECT COUNT()
            return Reply(200, {"totalSize": len(rows), "done": True, "records": []})
        names = [f.name for f in parsed.fields]
        if definitions:
            rendered = [self._md.render_field_definition(request.params["version"], r, names) for r in rows]
        else:
            rendered = [self._render(request, obj, r, names) for r in rows]
        locator = "01g" + secrets.token_hex(8)[:15]
        self._cursors[locator] = rendered
        return self._page(request, locator, 0)

    def _query_more(self, request: Request) -> Reply:
        locator, _, offset = request.params["cursor"].rpartition("-")
        if locator not in self._cursors or not offset.isdigit():
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(request, locator, int(offset))

    def _page(self, request: Request, locator: str, offset: int) -> Reply:
        rows = self._cursors[locator]
        end = offset + self.page_size
        page: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows), "records": rows[offset:end]}
        if end < len(rows):
            # A path, not a URL: query_all prefixes https://{instance} itself (§2.4)
            page["nextRecordsUrl"] = f"/services/data/v{request.params['version']}/query/{locator}-{end}"
        else:
            self._cursors.pop(locator, None)
        return Reply(200, page)

    def _object_for_query(self, name: str) -> SObjectDef:
        if name.lower() == "fielddefinition":
            return self._md.FIELD_DEFINITION
        obj = self.schema.get(name.lower())
        if obj is None or not self._can(obj, "allowRead"):
            raise ApiError(400, "INVALID_TYPE", f"sObject type '{name}' is not supported. If you are attempting to "
                           "use a custom object, be sure to append the '__c' after the entity name. Please reference "
                           "your WSDL or the describe call for the appropriate names.")
        return obj


def _oauth_error(error: str, description: str) -> Reply:
    return Reply(400, {"error": error, "error_description": description})


def _failure(item: Any, error: RecordError) -> dict[str, Any]:
    result: dict[str, Any] = {"success": False, "errors": [error.item()]}
    if isinstance(item, str):  # deletes report the id they were given
        result = {"id": item, **result}
    return result


def _ci_get(item: dict[str, Any], name: str) -> Any:
    return next((v for k, v in item.items() if k.lower() == name.lower()), None)


def _base62(number: int) -> str:
    digits = ""
    while number:
        number, rest = divmod(number, 62)
        digits = _B62[rest] + digits
    return digits or "0"


def _sort_key(fdef: FieldDef, value: Any) -> tuple[bool, Any]:
    # Nulls sort lowest: first ascending, last descending (SOQL's defaults); text case-insensitively.
    return (value is not None, _comparable(fdef, value) if value is not None else "")


# --- SOQL parsing and evaluation ------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<number>[+-]?\d+(?:\.\d+)?)
  | (?P<op>!=|<>|<=|>=|=|<|>|\(|\)|,)
  | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
""", re.X | re.S)
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f",
            "%": "%", "_": "_"}  # the escapes simple_salesforce.format_soql produces (format.py)


@dataclass
class _Literal:
    kind: str  # string number date datetime boolean null
    value: Any
    raw: str = ""  # a string's text with escapes kept, for LIKE


@dataclass
class _Parsed:
    obj: SObjectDef
    fields: list[FieldDef] | None
    where: Any
    order: list[tuple[FieldDef, bool]]
    limit: int | None
    offset: int


def _malformed(message: str) -> ApiError:
    return ApiError(400, "MALFORMED_QUERY", message)


class _Soql:
    """SELECT f[, f] | COUNT() FROM Obj [WHERE cond {AND|OR cond}] [ORDER BY f [ASC|DESC]] [LIMIT n] [OFFSET n];
    cond: f op literal, f [NOT] IN (...), f LIKE '...', NOT cond, (cond). No relationship fields."""

    def __init__(self, text: str, lookup: Callable[[str], SObjectDef],
                 field_lookup: Callable[[SObjectDef, str], FieldDef | None] = lambda obj, name: obj.field(name)):
        self.tokens: list[tuple[str, str]] = []
        self.lookup, self.field_lookup = lookup, field_lookup
        pos = 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise _malformed(f"unexpected token: {text[pos:pos + 20]}")
            if match.lastgroup != "ws":
                self.tokens.append((match.lastgroup or "", match.group()))
            pos = match.end()
        self.pos = 0
        self.obj: SObjectDef | None = None

    def peek(self, word: str | None = None) -> bool:
        if self.pos >= len(self.tokens):
            return False
        return word is None or self.tokens[self.pos][1].upper() == word

    def take(self, word: str | None = None) -> tuple[str, str]:
        if not self.peek(word):
            found = self.tokens[self.pos][1] if self.pos < len(self.tokens) else "end of query"
            raise _malformed(f"unexpected token: {found}" + (f" (expected {word})" if word else ""))
        self.pos += 1
        return self.tokens[self.pos - 1]

    def field(self, name: str) -> FieldDef:
        assert self.obj is not None
        fdef = self.field_lookup(self.obj, name)  # FieldDefinition has "EntityDefinition.QualifiedApiName"
        if fdef is None and "." in name:
            raise _malformed(f"relationship fields are not supported by the emulator: {name}")
        if fdef is None:
            raise ApiError(400, "INVALID_FIELD", f"No such column '{name}' on entity '{self.obj.name}'. If you are "
                           "attempting to use a custom field, be sure to append the '__c' after the custom field name. "
                           "Please reference your WSDL or the describe call for the appropriate names.")
        return fdef

    def parse(self) -> _Parsed:
        self.take("SELECT")
        names: list[str] | None = []
        if self.peek("COUNT"):
            for word in ("COUNT", "(", ")"):
                self.take(word)
            names = None
        else:
            names = [self.take()[1]]
            while self.peek(","):
                self.take()
                names.append(self.take()[1])
        self.take("FROM")
        self.obj = self.lookup(self.take()[1])
        fields = None if names is None else [self.field(n) for n in names]
        where = None
        if self.peek("WHERE"):
            self.take()
            where = self.expression()
        order: list[tuple[FieldDef, bool]] = []
        if self.peek("ORDER"):
            self.take("ORDER")
            self.take("BY")
            while True:
                fdef = self.field(self.take()[1])
                descending = self.peek("DESC")
                if self.peek("ASC") or self.peek("DESC"):
                    self.take()
                order.append((fdef, descending))
                if not self.peek(","):
                    break
                self.take()
        limit = self.integer() if self.peek("LIMIT") else None
        offset = self.integer() if self.peek("OFFSET") else 0
        if self.pos < len(self.tokens):
            raise _malformed(f"unexpected token: {self.tokens[self.pos][1]}")
        return _Parsed(self.obj, fields, where, order, limit, offset)

    def integer(self) -> int:
        self.take()
        kind, text = self.take()
        if kind != "number" or not text.isdigit():
            raise _malformed(f"unexpected token: {text}")
        return int(text)

    def expression(self) -> Any:
        node = self.conjunction()
        while self.peek("OR"):
            self.take()
            node = ("or", node, self.conjunction())
        return node

    def conjunction(self) -> Any:
        node = self.condition()
        while self.peek("AND"):
            self.take()
            node = ("and", node, self.condition())
        return node

    def condition(self) -> Any:
        if self.peek("NOT"):
            self.take()
            return ("not", self.condition())
        if self.peek("("):
            self.take()
            node = self.expression()
            self.take(")")
            return node
        fdef = self.field(self.take()[1])
        negate = self.peek("NOT")
        if negate:
            self.take()
        if self.peek("IN"):
            self.take("IN")
            self.take("(")
            values = [self.literal(fdef)]
            while self.peek(","):
                self.take()
                values.append(self.literal(fdef))
            self.take(")")
            return ("in", fdef, negate, values)
        if negate:
            raise _malformed("unexpected token: NOT")
        if self.peek("LIKE"):
            self.take()
            lit = self.literal(fdef)
            if lit.kind != "string":
                raise _malformed("LIKE needs a string literal")
            return ("like", fdef, _like_regex(lit.raw))
        kind, op = self.take()
        if kind != "op" or op in "(),":
            raise _malformed(f"unexpected token: {op}")
        lit = self.literal(fdef)
        if lit.kind == "null" and op not in ("=", "!=", "<>"):
            raise _malformed(f"null can only be compared with = or !=, not {op}")
        return ("cmp", fdef, "!=" if op == "<>" else op, lit)

    def literal(self, fdef: FieldDef) -> _Literal:
        kind, text = self.take()
        if kind == "string":
            lit = _Literal("string", _unescape(text[1:-1]), text[1:-1])
        elif kind in ("number", "date", "datetime"):
            lit = _Literal(kind, float(text) if kind == "number" else text)
        elif text.upper() in ("TRUE", "FALSE"):
            lit = _Literal("boolean", text.upper() == "TRUE")
        elif text.upper() == "NULL":
            return _Literal("null", None)
        else:
            raise _malformed(f"unexpected token: {text}")
        expected = {"double": "number", "boolean": "boolean", "date": "date", "datetime": "datetime"}.get(
            fdef.type, "string")
        if lit.kind != expected:
            quoted = "should be enclosed in quotes" if expected == "string" else "should not be enclosed in quotes"
            raise ApiError(400, "INVALID_QUERY_FILTER_OPERATOR", f"value of filter criterion for field '{fdef.name}' "
                                                                  f"must be of type {fdef.type} and {quoted}")
        if lit.kind == "datetime":
            lit.value = _norm_datetime(lit.value)
        return lit


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            if i + 1 >= len(text) or text[i + 1] not in _ESCAPES:
                raise _malformed(f"Invalid string literal '{text}'. Illegal character sequence '\\{text[i + 1:i + 2]}'")
            out.append(_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _like_regex(raw: str) -> re.Pattern[str]:
    parts, i = [], 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            parts.append(re.escape(_ESCAPES.get(raw[i + 1], raw[i + 1])))
            i += 2
            continue
        parts.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(parts), re.I | re.S)


def _evaluate(node: Any, record: dict[str, Any]) -> bool:
    op = node[0]
    if op == "and":
        return _evaluate(node[1], record) and _evaluate(node[2], record)
    if op == "or":
        return _evaluate(node[1], record) or _evaluate(node[2], record)
    if op == "not":
        return not _evaluate(node[1], record)
    fdef: FieldDef = node[1]
    stored = _comparable(fdef, record.get(fdef.name))
    if op == "like":
        return stored is not None and node[2].fullmatch(str(record.get(fdef.name))) is not None
    if op == "in":
        found = stored in [_comparable(fdef, lit.value) for lit in node[3]]
        return found != node[2]
    _, _, cmp, lit = node
    wanted = _comparable(fdef, lit.value)
    if cmp == "=":
        return stored == wanted
    if cmp == "!=":
        return stored != wanted
    if stored is None or wanted is None:
        return False
    return {"<": stored < wanted, ">": stored > wanted, "<=": stored <= wanted, ">=": stored >= wanted}[cmp]
