"""What Salesforce must hold for the mappings: the declared objects and fields, compared with the org
(`connector check --remote`, the doctor), and created through the Metadata API with a permission set
for the connecting user (`connector setup salesforce`).

The org is read two ways, because they answer different questions: `describe` lists the fields the
connecting user can see (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_sobject_describe.htm),
FieldDefinition every field of the object whatever its field-level security
(https://developer.salesforce.com/docs/atlas.en-us.api_tooling.meta/api_tooling/tooling_api_objects_fielddefinition.htm).
A field in the second and not the first exists but is invisible to the user: Salesforce then
answers INVALID_FIELD as if it did not exist, the most common integration failure.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from xml.etree import ElementTree
from dataclasses import dataclass, field
from typing import Any

from simple_salesforce.exceptions import SalesforceError

from connector.destinations.errors import DeliveryError
from connector.destinations.salesforce_calls import SalesforceCalls
from connector.destinations.salesforce_schema import FieldSpec, SalesforceSchema
from connector.destinations.salesforce_schema.deploy_status import DONE, DeployStatus, check_deploy_status
from connector.destinations.salesforce_schema.package import PERMISSION_SET, Package
from connector.mapping.engine import MappingSet

# describe's `type` for each declared type (https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/field_types.htm).
DESCRIBE_TYPES = {"Text": "string", "LongTextArea": "textarea", "Number": "double", "Checkbox": "boolean",
                  "Date": "date", "DateTime": "datetime", "Email": "email", "Picklist": "picklist",
                  "Lookup": "reference"}
DEPLOY_POLL_S = 2.0
DEPLOY_TIMEOUT_S = 600.0


@dataclass
class OrgState:
    """How the org stands against the declaration."""

    user: str | None = None  # the connecting user's username, for people
    missing_objects: list[str] = field(default_factory=list)  # custom objects not there at all
    invisible_objects: list[str] = field(default_factory=list)  # there, but the user cannot read them
    missing: dict[str, list[str]] = field(default_factory=dict)  # fields not there, by object
    invisible: dict[str, list[str]] = field(default_factory=dict)  # there, not visible to the user
    # "Object.Field" -> how it differs: there with another type (or size, target...): reported, never changed
    different: dict[str, str] = field(default_factory=dict)
    # there and required (universally): no field permissions for them, Salesforce refuses the permission set
    required: dict[str, list[str]] = field(default_factory=dict)
    assigned: bool = False  # the permission set is assigned to the user

    @property
    def to_deploy(self) -> bool:
        return bool(self.missing_objects or self.missing)

    @property
    def to_grant(self) -> bool:
        return bool(self.invisible_objects or self.invisible) or (self.to_deploy and not self.assigned)

    @property
    def complete(self) -> bool:
        return not (self.to_deploy or self.invisible_objects or self.invisible)


class DeployTimedOut(Exception):
    """The deploy was still running when the wait ended: Salesforce may yet finish (or fail) it."""

    def __init__(self, async_id: str, state: str, waited_s: float):
        super().__init__(f"deploy {async_id} still {state} after {waited_s:.0f} s")
        self.async_id, self.state, self.waited_s = async_id, state, waited_s


class SetupError(Exception):
    """What stops the setup that is neither Salesforce's refusal nor a failed call; the message says what to do."""


def _differs(spec: FieldSpec, described: dict[str, Any]) -> str | None:
    """How the org's field differs from the declaration, in words; None when it will do. A field the user
    cannot see is known only by its FieldDefinition.DataType (_from_data_type, which keeps `data_type`):
    its type, length, precision and lookup target are compared; the rest once the grant makes it visible
    to describe."""
    expected = DESCRIBE_TYPES[spec.type]
    actual = described.get("type")
    if spec.type == "Email" and actual == "string":  # some orgs describe email fields as string
        actual = "email"
    shown = described.get("data_type") or actual
    if actual != expected:
        return f"is {shown} in Salesforce, declared {spec.describe()}"
    if spec.type == "Text" and (described.get("length") or 0) < (spec.length or 0):
        return f"is text of {described.get('length')} characters, declared {spec.length}"
    if spec.type == "Number" and (described.get("precision"), described.get("scale")) != (spec.precision, spec.scale):
        return (f"is Number({described.get('precision')}, {described.get('scale')}), "
                f"declared Number({spec.precision}, {spec.scale})")
    if spec.type == "Lookup" and spec.to not in (described.get("referenceTo") or []):
        return f"looks up {', '.join(described.get('referenceTo') or []) or 'nothing'}, declared {spec.to}"
    if "data_type" in described:  # from FieldDefinition: nothing more to compare
        return None
    if spec.external_id and not described.get("externalId"):
        return "is not an External ID: upserts by it are refused"
    if spec.unique and not described.get("unique"):
        return "is not Unique: two records could share one key"
    if spec.type == "Picklist" and described.get("restrictedPicklist", True):
        # a restricted picklist (describe: restrictedPicklist) refuses any other value
        # (https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_describesobjects_describesobjectresult.htm)
        have = {str(v.get("value")) for v in described.get("picklistValues") or [] if v.get("active", True)}
        lacking = [value for value in spec.values or [] if value not in have]
        if lacking:
            return (f"lacks the picklist value{'s' if len(lacking) > 1 else ''} {', '.join(lacking)}: Salesforce "
                    f"refuses records with {'them' if len(lacking) > 1 else 'it'}")
    return None


# FieldDefinition.DataType is the type as Setup shows it: "Text(64)", "Number(2, 0)", "Lookup(Contact)",
# "Long Text Area(32768)", "Date/Time", sometimes followed by "(External ID)" and the like
# (https://developer.salesforce.com/docs/atlas.en-us.api_tooling.meta/api_tooling/tooling_api_objects_fielddefinition.htm).
_DATA_TYPES = {"Text": "string", "Long Text Area": "textarea", "Text Area": "textarea", "Number": "double",
               "Checkbox": "boolean", "Date": "date", "Date/Time": "datetime", "Email": "email",
               "Picklist": "picklist", "Lookup": "reference", "Master-Detail": "reference"}
_DATA_TYPE = re.compile(r"^\s*([^()]+?)\s*(?:\(([^()]*)\))?(?:\s+\(.*)?$")


def _from_data_type(data_type: str) -> dict[str, Any]:
    """FieldDefinition.DataType as the parts of a describe that _differs reads."""
    match = _DATA_TYPE.match(data_type or "")
    base, inside = (match.group(1), match.group(2) or "") if match else (data_type, "")
    numbers = [int(part) for part in re.findall(r"\d+", inside)]
    described: dict[str, Any] = {"type": _DATA_TYPES.get(base, base), "data_type": data_type}
    if base in ("Text", "Long Text Area", "Text Area") and numbers:
        described["length"] = numbers[0]
    if base == "Number" and len(numbers) == 2:
        described["precision"], described["scale"] = numbers
    if base == "Lookup":
        described["referenceTo"] = [target.strip() for target in inside.split(",") if target.strip()]
    return described


def _required(described: dict[str, Any]) -> bool:
    """Whether the org's field is required: describe's `nillable` (FieldDefinition.IsNillable) is false. A
    Checkbox is never null either, yet is not required and takes field permissions like any other field
    (https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_describesobjects_describesobjectresult.htm).
    A master-detail field (a declared Lookup may be one in the org) is required too."""
    return described.get("nillable") is False and described.get("type") != "boolean"


def _keeping_headers(sf: Any, call: Callable[[], Any]) -> Any:
    """A Metadata API call that leaves the client's REST headers as they were: simple-salesforce's
    SOAP calls write `Content-Type: text/xml` and a `SOAPAction` into the headers it shares with its
    REST calls (simple_salesforce.util.call_salesforce updates them in place), and a JSON insert
    sent after them would be labelled as XML."""
    saved = dict(sf.headers)
    try:
        return call()
    except SalesforceError as error:
        _read_soap_fault(error)
        raise
    finally:
        sf.headers.clear()
        sf.headers.update(saved)


def _read_soap_fault(error: SalesforceError) -> None:
    """A SOAP fault (`<faultcode>sf:INSUFFICIENT_ACCESS</faultcode><faultstring>...`) as the REST
    error shape the rest of the connector reads: [{"errorCode", "message"}]."""
    content = error.content
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
    if not isinstance(text, str) or "faultcode" not in text:
        return
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return
    code = next((node.text for node in root.iter() if node.tag.endswith("faultcode")), None) or ""
    message = next((node.text for node in root.iter() if node.tag.endswith("faultstring")), None) or ""
    error.content = [{"errorCode": code.rpartition(":")[2], "message": message.strip()}]


class SalesforceSetup(SalesforceCalls):
    # --- reading the org ---------------------------------------------------------------------------

    def _query(self, soql: str) -> list[dict[str, Any]]:
        return self._call(lambda sf: sf.query_all(soql), call_name="query").get("records", [])

    def _field_definitions(self, sobject: str) -> dict[str, dict[str, Any]]:
        """Every field of the object, visible to the user or not: lower-cased name -> the parts of a describe
        that _differs and _required read, from its DataType and IsNillable."""
        escaped = sobject.replace("\\", "\\\\").replace("'", "\\'")
        rows = self._query("SELECT QualifiedApiName, DataType, IsNillable FROM FieldDefinition "
                           f"WHERE EntityDefinition.QualifiedApiName = '{escaped}'")
        return {str(row.get("QualifiedApiName", "")).lower():
                {**_from_data_type(str(row.get("DataType") or "")), "nillable": row.get("IsNillable")}
                for row in rows}

    def current_user(self) -> dict[str, Any]:
        """The connecting user (OpenID userinfo: user_id, preferred_username)."""
        return self._call(lambda sf: sf.oauth2("userinfo"), call_name="userinfo") or {}

    def _permission_set_id(self) -> str | None:
        rows = self._query(f"SELECT Id FROM PermissionSet WHERE Name = '{PERMISSION_SET}'")
        return rows[0]["Id"] if rows else None

    def _assignment_exists(self, user_id: str, permission_set_id: str) -> bool:
        return bool(self._query("SELECT Id FROM PermissionSetAssignment "
                                f"WHERE AssigneeId = '{user_id}' AND PermissionSetId = '{permission_set_id}'"))

    def compare(self, schema: SalesforceSchema) -> OrgState:
        state = OrgState()
        user = self.current_user()
        if not user.get("user_id"):  # before anything changes: the grant needs to know whom to assign it to
            raise SetupError(f"Salesforce's userinfo did not say who the connecting user is (no user_id), so the "
                             f"{PERMISSION_SET} permission set could not be assigned; nothing was changed. Give an "
                             "admin the package from `connector setup salesforce --export DIR`")
        state.user = user.get("preferred_username") or user.get("user_id")
        for sobject, spec in schema.objects.items():
            self._describes.pop(sobject, None)  # this run's view, not an earlier one's
            try:
                described: dict[str, Any] | None = self._describe(sobject)
            except DeliveryError as error:
                if error.status != 404:
                    raise
                described = None  # absent, or there and unreadable to the user: FieldDefinition says which
            visible = {str(f.get("name", "")).lower(): f for f in (described or {}).get("fields", [])}
            hidden_or_absent = [name for name in spec.fields if name.lower() not in visible]
            defined = self._field_definitions(sobject) if described is None or hidden_or_absent else {}
            if described is None:
                if not defined:
                    state.missing_objects.append(sobject)
                    state.missing[sobject] = list(spec.fields)
                    continue
                state.invisible_objects.append(sobject)
            for name, field_spec in spec.fields.items():
                found = visible.get(name.lower()) or defined.get(name.lower())
                if found is None:
                    state.missing.setdefault(sobject, []).append(name)
                    continue
                required = _required(found)
                if required:
                    # Always readable and editable by whoever may use the object; a permission set naming it
                    # is refused whole ("You cannot deploy to a required field: Object.Field").
                    state.required.setdefault(sobject, []).append(name)
                elif name.lower() not in visible:  # there, but field-level security hides it
                    state.invisible.setdefault(sobject, []).append(name)
                # (a required field hidden from describe: Salesforce shows it to everyone, so the object is hidden)
                differs = _differs(field_spec, found)
                if differs:
                    state.different[f"{sobject}.{name}"] = differs
        permission_set = self._permission_set_id()
        state.assigned = bool(permission_set and self._assignment_exists(user["user_id"], permission_set))
        return state

    # --- changing it ----------------------------------------------------------------------------

    def deploy(self, package: Package, *, check_only: bool = False, poll_every_s: float = DEPLOY_POLL_S,
               timeout_s: float = DEPLOY_TIMEOUT_S, on_poll: Callable[[str], None] = lambda state: None
               ) -> DeployStatus:
        """Deploy the package (rolled back whole on any failure) and wait until Salesforce is done; the
        answer holds each component's result. DeployTimedOut when it is still running after timeout_s."""
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".zip") as archive:
            archive.write(package.zip_bytes())
            archive.flush()
            started = self._call(lambda sf: _keeping_headers(sf, lambda: sf.deploy(
                archive.name, sandbox=False, checkOnly=check_only)), idempotent=False, call_name="deploy")
        async_id = started.get("asyncId")
        if not async_id:
            raise SetupError(f"Salesforce answered the deploy without an id: {started!r}")
        began = time.monotonic()
        while True:
            status = self._call(lambda sf: _keeping_headers(sf, lambda: check_deploy_status(sf, async_id)),
                                call_name="checkDeployStatus")
            on_poll(status.status)
            if status.done or status.status in DONE:
                return status
            waited = time.monotonic() - began
            if waited >= timeout_s:
                raise DeployTimedOut(async_id, status.status, waited)
            time.sleep(min(poll_every_s, timeout_s - waited))

    def assign_permission_set(self) -> bool:
        """Assign the connector's permission set to the connecting user; False when it already was."""
        user_id = self.current_user().get("user_id")
        permission_set = self._permission_set_id()
        if not user_id or not permission_set:
            raise SetupError(f"deployed, but cannot assign {PERMISSION_SET}: "
                             + ("Salesforce did not say who the connecting user is" if not user_id
                                else "the permission set is not in the org yet")
                             + "; assign it in Setup > Permission Sets > Manage Assignments, or run "
                               "`connector setup salesforce` again")
        if self._assignment_exists(user_id, permission_set):
            return False
        try:
            self._restful("sobjects/PermissionSetAssignment/", "POST", idempotent=False,
                          json={"AssigneeId": user_id, "PermissionSetId": permission_set})
        except DeliveryError as error:
            if error.code == "DUPLICATE_VALUE":  # assigned meanwhile
                return False
            raise
        return True

    # --- the remote check -----------------------------------------------------------------------

    def check_remote(self, mappings: MappingSet) -> list[str]:
        """Missing objects and fields, and those that exist but the integration user cannot see."""
        problems = []
        try:
            self._tokens.current()
        except DeliveryError as error:
            return [f"{self.name}: cannot authenticate: {error.message}"]
        for sobject, fields in sorted(mappings.written_fields(self.name).items()):
            try:
                described = self._describe(sobject)
            except DeliveryError as error:
                if error.status != 404:
                    problems.append(f"{self.name}: cannot describe {sobject}: {error}")
                elif self._safe_all_fields(sobject):
                    problems.append(f"{self.name}: object {sobject} exists but the integration user cannot read "
                                    f"it (object permissions): run `connector setup salesforce` to grant them")
                else:
                    problems.append(f"{self.name}: object {sobject} does not exist")
                continue
            existing = {f.get("name", "").lower() for f in described.get("fields", [])}
            absent = sorted(name for name in fields if name.lower() not in existing)
            if not absent:
                continue
            everything = self._safe_all_fields(sobject)
            invisible = [name for name in absent if name.lower() in everything]
            missing = [name for name in absent if name.lower() not in everything]
            if missing:
                problems.append(f"{self.name}: {sobject} is missing field{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(missing)}")
            if invisible:
                problems.append(f"{self.name}: {sobject}: field{'s' if len(invisible) > 1 else ''} "
                                f"{', '.join(invisible)} exist{'' if len(invisible) > 1 else 's'} but "
                                f"{'are' if len(invisible) > 1 else 'is'} invisible to the integration user "
                                "(field-level security): assign the Okendo_Connector permission set with "
                                "`connector setup salesforce`")
        return problems

    def _safe_all_fields(self, sobject: str) -> set[str]:
        """FieldDefinition's answer, or nothing when the user may not read it (View Setup): then a field
        absent from describe is reported as missing, as before."""
        try:
            return set(self._field_definitions(sobject))
        except DeliveryError:
            return set()
