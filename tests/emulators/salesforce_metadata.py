"""The Salesforce emulator's Metadata API (file-based deploy() and checkDeployStatus() over SOAP) and the
connecting user's field-level security, for the real simple-salesforce client.

What simple-salesforce 1.12 sends and reads (simple_salesforce/messages.py DEPLOY_MSG and
CHECK_DEPLOY_STATUS_MSG; metadata.py SfdcMetadataApi):

- `sf.deploy(zip, sandbox=False, checkOnly=...)` POSTs to /services/Soap/m/{version}/deployRequest a
  SessionHeader/sessionId, deploy/ZipFile (base64) and DeployOptions (Python's "True"/"False";
  rollbackOnError forced to True and allowMissingFiles to False when sandbox=False; singlePackage always
  True; "None" text where testLevel and tests are unset). It reads soapenv:Body/deployResponse/result/id
  and /state.
- `sf.checkDeployStatus(id)` POSTs checkDeployStatus(asyncProcessId, includeDetails=true) to
  .../deployRequest/{id} and reads Body/checkDeployStatusResponse/result: status, stateDetail,
  numberComponentErrors/-Total/-Deployed and, when status is Failed or there are errors,
  details/componentFailures (componentType, fileName, problemType, problem).
- Any status >= 300 raises; a SOAP fault is a 500, so SalesforceGeneralError with the XML as content.

Salesforce's behaviour and wording, with their sources (emulator's own wording is marked where used):

[D] deploy(), checkDeployStatus(), DeployResult, DeployMessage, CustomObject, CustomField, PermissionSet:
    https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/meta_deploy.htm,
    .../meta_checkdeploystatus.htm, .../customfield.htm, .../customobject.htm, .../meta_permissionset.htm.
    Calls to checkDeployStatus() do not count against the API limits (meta_checkdeploystatus.htm).
[S] An answer's shape (default namespace, fields in alphabetical order, createdBy as a 15-character id):
    a real checkDeployStatusResponse in https://github.com/RoseSilverSoftware/IlluminatedCloud/issues/2753;
    componentFailures/componentSuccesses in https://github.com/SFDO-Tooling/CumulusCI/issues/215.
[F] Faults: "INVALID_SESSION_ID: Invalid Session ID found in SessionHeader: Illegal Session"
    (https://github.com/forcedotcom/postman-salesforce-apis/issues/56); a 500 with sf:INSUFFICIENT_ACCESS
    "use of the Metadata API requires a user with the ModifyAllData or ModifyMetadata permissions"
    (https://github.com/forcedotcom/cli/issues/3048); a deploy id the org does not know:
    "INVALID_CROSS_REFERENCE_KEY: invalid cross reference id"
    (https://github.com/forcedotcom/salesforcedx-vscode/issues/1529).
[P] package.xml: "No package.xml found" (https://github.com/forcedotcom/CustomMetadataLoader/issues/34);
    "An object 'X' of type CustomField was named in package.xml, but was not found in zipped directory"
    (https://github.com/forcedotcom/cli/issues/2182, https://github.com/amtrack/force-dev-tool/issues/133);
    a file's component missing from package.xml: "Not in package.xml"
    (https://github.com/mshanemc/shane-sfdx-plugins/issues/104); "Unknown type name 'X' specified in
    package.xml" (https://github.com/ForceCLI/force/issues/506).
[X] "Error parsing file: Element {http://soap.sforce.com/2006/04/metadata}x invalid at this location in type
    CustomObject" (https://github.com/forcedotcom/cli/issues/3320); "Must specify a non-empty label for the
    CustomObject" (https://github.com/forcedotcom/cli/issues/1220); "fullName must end with: __c or __kav ..."
    and "Could not resolve standard field's name." (https://github.com/tiaanswart/lightning-fieldset/issues/17).
[R] "referenceTo value of 'X' does not resolve to a valid sObject type"
    (https://github.com/SalesforceLabs/CommunityCookieConsent/issues/25); "Cannot change type due to existing
    data" (https://github.com/trailheadapps/coral-cloud/issues/87).
[A] Permission sets: "In field: field - no CustomField named Product2.TransferRecordMode found"
    (https://github.com/apex-enterprise-patterns/fflib-apex-common-samplecode/issues/58); "You cannot deploy
    to a required field: X", X being Object.Field (https://github.com/hardisgroupcom/sfdx-hardis, docs/deployTips.md;
    https://docs.gearset.com/en/articles/12476080-resolving-validation-errors-you-cannot-deploy-to-a-required-field-xxx):
    a required field, master-detail ones included, takes no field permissions and is always readable and
    editable (/work/shared/crm/REFERENCE.md §2.8: "required fields must not be listed"); "Permission
    X depends on permission(s): Y" (AutoRabit's knowledge base, deployment-errors.md).
[L] A lookup's relationshipName names the parent's related list, once per parent: "The relationship name
    \"Line_Items__r\" is already used by custom field Line_Item__c.Invoice__c. Please rename existing
    relationship name." (https://github.com/forcedotcom/Salesforce1-Dev-Guide-Setup-Package/issues/4).
[U] PermissionSetAssignment twice: DUPLICATE_VALUE "duplicate value found: <unknown> duplicates value on
    record with id: <unknown>" (Salesforce's message for setup records, e.g.
    https://github.com/haripriyamurthy/Deprecated-CustomMetadataLoader/issues/8).

Deliberate simplifications: an org is a production org, so every deploy is all or nothing (rollbackOnError
as sent is recorded but treated as true, so SucceededPartial never happens); a deploy is validated and
applied when a checkDeployStatus() poll finds it done; a CustomObject member in package.xml covers the
fields in its file (as in Salesforce); permission sets merge into what an earlier deploy gave them.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from tests.emulators.base import Reply, Request
from tests.emulators.salesforce import ORG_ID, ApiError, FieldDef, RecordError, SObjectDef, to18

if TYPE_CHECKING:
    from tests.emulators.salesforce import SalesforceEmulator

MD = "http://soap.sforce.com/2006/04/metadata"
ENV = "http://schemas.xmlsoap.org/soap/envelope/"
_M, _E = "{" + MD + "}", "{" + ENV + "}"
XML_TYPE = {"Content-Type": "text/xml;charset=UTF-8"}

INVALID_SESSION = ("INVALID_SESSION_ID", "INVALID_SESSION_ID: Invalid Session ID found in SessionHeader: "
                                         "Illegal Session")  # [F]
NO_METADATA_ACCESS = ("INSUFFICIENT_ACCESS", "INSUFFICIENT_ACCESS: use of the Metadata API requires a user with "
                                             "the ModifyAllData or ModifyMetadata permissions")  # [F]
UNKNOWN_DEPLOY = ("INVALID_CROSS_REFERENCE_KEY", "INVALID_CROSS_REFERENCE_KEY: invalid cross reference id")  # [F]
LIMIT_EXCEEDED = ("REQUEST_LIMIT_EXCEEDED", "REQUEST_LIMIT_EXCEEDED: TotalRequests Limit exceeded.")
DUPLICATE_ASSIGNMENT = "duplicate value found: <unknown> duplicates value on record with id: <unknown>"  # [U]

# Metadata API field type -> describe type; the other FieldType values exist but the emulator has none.
FIELD_TYPES = {"Text": "string", "LongTextArea": "textarea", "Number": "double", "Checkbox": "boolean",
               "Date": "date", "DateTime": "datetime", "Email": "email", "Picklist": "picklist",
               "Lookup": "reference"}
OTHER_FIELD_TYPES = {"AutoNumber", "MasterDetail", "MetadataRelationship", "Currency", "EncryptedText", "Note",
                     "ExternalLookup", "IndirectLookup", "Percent", "Phone", "MultiselectPicklist", "Summary",
                     "TextArea", "Url", "Hierarchy", "File", "Html", "Location", "Time"}
_METADATA_TYPE = {v: k for k, v in FIELD_TYPES.items()} | {"id": "Id", "phone": "Phone", "url": "Url"}
_LENGTHS = {"Text": (1, 255), "LongTextArea": (256, 131072)}
_KEY_TYPES = ("Text", "Number", "Email")  # the types that can be an external id or unique
OBJECT_PERMISSIONS = ("allowCreate", "allowDelete", "allowEdit", "allowRead", "modifyAllRecords",
                      "viewAllRecords", "viewAllFields")
# What each object permission needs as well (Salesforce refuses a set that lacks them, [A]).
_NEEDS = {"allowCreate": ("allowRead",), "allowEdit": ("allowRead",), "allowDelete": ("allowRead", "allowEdit"),
          "viewAllRecords": ("allowRead",), "viewAllFields": ("allowRead",),
          "modifyAllRecords": ("allowRead", "allowEdit", "allowDelete", "viewAllRecords")}
_PERMISSION_WORDS = {"allowCreate": "Create", "allowDelete": "Delete", "allowEdit": "Edit", "allowRead": "Read",
                     "modifyAllRecords": "Modify All", "viewAllRecords": "View All", "viewAllFields": "View All Fields"}
SHARING_MODELS = {"Private", "Read", "ReadWrite", "ReadWriteTransfer", "FullAccess", "ControlledByParent",
                  "ControlledByCampaign", "ControlledByLeadOrContact"}
SYSTEM_FIELDS = {"id", "createddate", "lastmodifieddate"}

# The elements each metadata type knows (the Metadata API's WSDL); the emulator reads some, ignores the rest,
# and refuses others as Salesforce does ([X]). Those in _REPEATED may occur more than once.
_CUSTOM_OBJECT = {
    "fullName", "actionOverrides", "allowInChatterGroups", "businessProcesses", "compactLayoutAssignment",
    "compactLayouts", "customHelp", "customHelpPage", "deploymentStatus", "deprecated", "description",
    "enableActivities", "enableBulkApi", "enableDataTranslation", "enableDivisions", "enableEnhancedLookup",
    "enableFeeds", "enableHistory", "enableLicensing", "enableReports", "enableSearch", "enableSharing",
    "enableStreamingApi", "externalSharingModel", "fieldSets", "fields", "indexes", "label", "listViews",
    "nameField", "pluralLabel", "profileSearchLayouts", "recordTypeTrackFeedHistory", "recordTypeTrackHistory",
    "recordTypes", "searchLayouts", "sharingModel", "sharingReasons", "sharingRecalculations", "startsWith",
    "validationRules", "visibility", "webLinks"}
_CUSTOM_FIELD = {
    "fullName", "businessOwnerGroup", "businessOwnerUser", "businessStatus", "caseSensitive", "complianceGroup",
    "customDataType", "defaultValue", "deleteConstraint", "deprecated", "description", "displayFormat",
    "encryptionScheme", "escapeMarkup", "externalDeveloperName", "externalId", "fieldManageability", "formula",
    "formulaTreatBlanksAs", "inlineHelpText", "isAIPredictionField", "isConvertLeadDisabled",
    "isFilteringDisabled", "isNameField", "isSortingDisabled", "label", "length", "lookupFilter", "maskChar",
    "maskType", "populateExistingRows", "precision", "referenceTargetField", "referenceTo", "relationshipLabel",
    "relationshipName", "relationshipOrder", "reparentableMasterDetail", "required", "restrictedAdminField",
    "scale", "securityClassification", "startingNumber", "stripMarkup", "summarizedField", "summaryFilterItems",
    "summaryForeignKey", "summaryOperation", "trackFeedHistory", "trackHistory", "trackTrending", "translateData",
    "type", "unique", "valueSet", "visibleLines", "writeRequiresMasterRead"}
_PERMISSION_SET = {
    "fullName", "applicationVisibilities", "classAccesses", "customMetadataTypeAccesses", "customPermissions",
    "customSettingAccesses", "description", "externalDataSourceAccesses", "fieldPermissions", "flowAccesses",
    "hasActivationRequired", "label", "license", "objectPermissions", "pageAccesses", "recordTypeVisibilities",
    "tabSettings", "userPermissions"}
_PACKAGE = {"fullName", "apiAccessLevel", "description", "namespacePrefix", "objectPermissions", "packageType",
            "postInstallClass", "setupWeblink", "types", "uninstallClass", "version"}
_REPEATED = {"fields", "types", "members", "objectPermissions", "fieldPermissions", "userPermissions",
             "applicationVisibilities", "classAccesses", "customMetadataTypeAccesses", "customPermissions",
             "customSettingAccesses", "externalDataSourceAccesses", "flowAccesses", "pageAccesses",
             "recordTypeVisibilities", "tabSettings", "actionOverrides", "businessProcesses", "compactLayouts",
             "fieldSets", "indexes", "listViews", "recordTypes", "sharingReasons", "sharingRecalculations",
             "validationRules", "webLinks", "value", "searchLayouts", "profileSearchLayouts"}
_KNOWN_TYPES = {"CustomObject", "CustomField", "PermissionSet"}
# Other package.xml types Salesforce knows, refused by the emulator rather than called unknown (a sample).
_OTHER_TYPES = {"ApexClass", "ApexTrigger", "ApexPage", "Layout", "Profile", "CustomTab", "CustomApplication",
                "ListView", "ValidationRule", "RecordType", "StaticResource", "Flow", "CustomMetadata",
                "CustomLabels", "PermissionSetGroup", "LightningComponentBundle", "AuraDefinitionBundle"}

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _now() -> str:
    moment = datetime.now(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- field-level security ----------------------------------------------------------------------------


@dataclass
class PermissionSetDef:
    """A deployed permission set: what it grants (lower-cased keys)."""

    name: str
    label: str
    objects: dict[str, set[str]] = field(default_factory=dict)  # object -> allowRead, allowCreate, ...
    fields: dict[str, tuple[bool, bool]] = field(default_factory=dict)  # "object.field" -> (readable, editable)


@dataclass
class Grants:
    objects: dict[str, set[str]]
    fields: dict[str, tuple[bool, bool]]


def effective_grants(emu: SalesforceEmulator) -> Grants:
    """What the permission sets assigned to the connecting user grant, together."""
    objects: dict[str, set[str]] = {}
    fields: dict[str, tuple[bool, bool]] = {}
    records = emu._data["PermissionSet"]
    for assignment in emu._data["PermissionSetAssignment"].values():
        if assignment.get("AssigneeId") != emu.user_id:
            continue
        record = records.get(assignment.get("PermissionSetId") or "")
        pset = emu.permission_sets.get(str(record.get("Name", "")).lower()) if record else None
        if pset is None:  # e.g. one inserted through REST: it grants nothing here
            continue
        for obj, perms in pset.objects.items():
            objects.setdefault(obj, set()).update(perms)
        for key, (readable, editable) in pset.fields.items():
            was = fields.get(key, (False, False))
            fields[key] = (was[0] or readable, was[1] or editable)
    return Grants(objects, fields)


def check_assignment(emu: SalesforceEmulator, values: dict[str, Any], record_id: str | None) -> None:
    """A second assignment of the same set to the same user is refused ([U]), naming no field."""
    wanted = (values.get("AssigneeId"), values.get("PermissionSetId"))
    for other in emu._data["PermissionSetAssignment"].values():
        if other["Id"] != record_id and (other.get("AssigneeId"), other.get("PermissionSetId")) == wanted:
            raise RecordError("DUPLICATE_VALUE", DUPLICATE_ASSIGNMENT)


# --- the connecting user ---------------------------------------------------------------------------------


def userinfo(emu: SalesforceEmulator, request: Request) -> Reply:
    """OpenID Connect userinfo: who the token belongs to. A bad token is a 403 here, not the REST API's
    401 (Salesforce Help, "UserInfo Endpoint"; forcedotcom/SalesforceMobileSDK-Android#2430)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or token not in emu.tokens:
        return Reply(403, "Bad_OAuth_Token")
    user = emu._data["User"][emu.user_id]
    return Reply(200, {
        "sub": f"{emu.url}/id/{ORG_ID}/{emu.user_id}", "user_id": emu.user_id, "organization_id": ORG_ID,
        "preferred_username": user["Username"], "nickname": user["Username"].split("@")[0],
        "name": f"{user['FirstName']} {user['LastName']}", "given_name": user["FirstName"],
        "family_name": user["LastName"], "email": user["Email"], "email_verified": True,
        "active": bool(user["IsActive"]), "user_type": "STANDARD", "language": "en_US", "locale": "en_US",
        "zoneinfo": "GMT", "utcOffset": 0, "updated_at": user["LastModifiedDate"],
        "urls": {"rest": f"{emu.url}/services/data/v{{version}}/",
                 "metadata": f"{emu.url}/services/Soap/m/{{version}}/{ORG_ID[:15]}"},
    })


# --- FieldDefinition: every field, whatever the user may see --------------------------------------------


def data_type(fdef: FieldDef) -> str:
    """FieldDefinition.DataType, as Setup shows a field's type: Text(64), Number(2, 0), Lookup(Contact)."""
    kind = fdef.type
    if kind == "string":
        return f"Text({fdef.length})"
    if kind == "textarea":
        return f"Long Text Area({fdef.length})" if fdef.length > 255 else f"Text Area({fdef.length})"
    if kind == "double":
        return f"Number({fdef.precision or 18}, {fdef.scale or 0})"
    if kind in ("reference", "id"):
        return f"Lookup({','.join(fdef.reference_to)})"
    return {"boolean": "Checkbox", "date": "Date", "datetime": "Date/Time", "email": "Email",
            "picklist": "Picklist", "phone": "Phone", "url": "URL"}.get(kind, kind)


FIELD_DEFINITION = SObjectDef("FieldDefinition", "")  # queried through /query only (not stored)
for _name in ("QualifiedApiName", "DeveloperName", "Label", "DataType", "DurableId", "EntityDefinitionId",
              "EntityDefinition.QualifiedApiName"):
    FIELD_DEFINITION.add(FieldDef(_name, writable=False))
for _name in ("Length", "Precision", "Scale"):
    FIELD_DEFINITION.add(FieldDef(_name, "double", writable=False))
# IsNillable: false for a required field, as describe's `nillable` (and for a Checkbox, which is never null)
# (https://developer.salesforce.com/docs/atlas.en-us.api_tooling.meta/api_tooling/tooling_api_objects_fielddefinition.htm).
FIELD_DEFINITION.add(FieldDef("IsNillable", "boolean", writable=False))


def field_definition_rows(emu: SalesforceEmulator) -> list[dict[str, Any]]:
    rows = []
    for obj in emu.schema.values():
        for fdef in obj.fields.values():
            rows.append({
                "QualifiedApiName": fdef.name, "DeveloperName": fdef.name.removesuffix("__c"), "Label": fdef.label,
                "DataType": data_type(fdef), "DurableId": f"{obj.name}.{fdef.name}", "EntityDefinitionId": obj.name,
                "EntityDefinition.QualifiedApiName": obj.name,
                "Length": fdef.length if fdef.type in ("string", "textarea", "email", "picklist") else 0,
                "Precision": (fdef.precision or 18) if fdef.type == "double" else 0,
                "Scale": (fdef.scale or 0) if fdef.type == "double" else 0,
                "IsNillable": fdef.describe()["nillable"]})
    return rows


def require_entity_filter(where: Any) -> None:
    def names(node: Any) -> bool:
        if node is None:
            return False
        if node[0] in ("and", "or"):
            return names(node[1]) or names(node[2])
        if node[0] == "not":
            return names(node[1])
        return node[1].name in ("EntityDefinition.QualifiedApiName", "EntityDefinitionId")
    if not names(where):  # Salesforce refuses an unfiltered FieldDefinition query (emulator's wording)
        raise ApiError(400, "MALFORMED_QUERY", "FieldDefinition can be queried only with a filter on "
                                               "EntityDefinition.QualifiedApiName or EntityDefinitionId")


def render_field_definition(version: str, row: dict[str, Any], names: list[str]) -> dict[str, Any]:
    base = f"/services/data/v{version}/sobjects"
    out: dict[str, Any] = {"attributes": {"type": "FieldDefinition",
                                          "url": f"{base}/FieldDefinition/{row['DurableId']}"}}
    for name in names:
        if "." in name:  # a parent's field comes back nested, as relationship fields do
            parent, _, child = name.partition(".")
            nested = out.setdefault(parent, {"attributes": {
                "type": "EntityDefinition", "url": f"{base}/EntityDefinition/{row['EntityDefinitionId']}"}})
            nested[child] = row[name]
        else:
            out[name] = row[name]
    return out


# --- SOAP -----------------------------------------------------------------------------------------------


class SoapFault(Exception):
    def __init__(self, code: str, message: str, *, client: bool = False):
        super().__init__(message)
        self.code, self.message, self.client = code, message, client

    def reply(self) -> Reply:
        code = "soapenv:Client" if self.client else f"sf:{self.code}"
        return Reply(500, '<?xml version="1.0" encoding="UTF-8"?>'
                          f'<soapenv:Envelope xmlns:soapenv="{ENV}" xmlns:sf="{MD}"><soapenv:Body><soapenv:Fault>'
                          f"<faultcode>{code}</faultcode><faultstring>{escape(self.message)}</faultstring>"
                          "</soapenv:Fault></soapenv:Body></soapenv:Envelope>", dict(XML_TYPE))


def _envelope(body: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{ENV}" xmlns="{MD}">'
            f"<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>")


def _xml(tag: str, value: Any) -> str:
    text = ("true" if value else "false") if isinstance(value, bool) else escape(str(value))
    return f"<{tag}>{text}</{tag}>"


def _soap_bool(text: str | None, name: str, default: bool = False) -> bool:
    # simple-salesforce formats Python booleans ("True"/"False"); Salesforce reads them case-insensitively.
    value = (text or "").strip().lower()
    if not value:
        return default
    if value in ("true", "1", "false", "0"):
        return value in ("true", "1")
    raise SoapFault("Client", f"Unable to parse {name}: '{text}' is not a boolean", client=True)  # emulator's


@dataclass
class _Outcome:
    """One componentSuccesses or componentFailures entry."""

    type: str
    full_name: str
    file_name: str
    problem: str | None = None
    created: bool = False
    changed: bool = False
    id: str = ""


@dataclass
class _Result:
    status: str  # Succeeded or Failed
    outcomes: list[_Outcome]
    completed: str
    error_message: str | None = None
    error_code: str | None = None


@dataclass
class _Job:
    id: str
    check_only: bool
    rollback_on_error: bool
    single_package: bool
    ignore_warnings: bool
    data: bytes
    created: str
    log: dict[str, Any]
    polls: int = 0
    result: _Result | None = None


class MetadataApi:
    """Serves /services/Soap/m/{version}[/deployRequest[/{id}]]: deploy and checkDeployStatus."""

    def __init__(self, emu: SalesforceEmulator):
        self.emu = emu
        self.jobs: dict[str, _Job] = {}

    def reset(self) -> None:
        self.jobs = {}

    def handle(self, request: Request) -> Reply:
        try:
            operation, element = self._read(request)
            if operation == "deploy":
                return self._deploy(element)
            if operation == "checkDeployStatus":
                return self._check(element)
            raise SoapFault("Client", f"No operation available for request {{{MD}}}{operation}", client=True)
        except SoapFault as fault:
            return fault.reply()

    def _read(self, request: Request) -> tuple[str, ET.Element]:
        try:
            root = ET.fromstring(request.body)
        except ET.ParseError as error:  # emulator's wording
            raise SoapFault("Client", f"Unable to parse the SOAP request: {error}", client=True) from None
        body = root.find(_E + "Body") if root.tag == _E + "Envelope" else None
        if body is None or len(body) != 1:
            raise SoapFault("Client", "Expected a SOAP 1.1 Envelope with one operation in its Body", client=True)
        session = root.findtext(f"{_E}Header/{_M}SessionHeader/{_M}sessionId")
        if session is None or session.strip() not in self.emu.tokens:
            raise SoapFault(*INVALID_SESSION)
        if not self.emu.can_modify_metadata:
            raise SoapFault(*NO_METADATA_ACCESS)
        operation = body[0]
        if not operation.tag.startswith(_M):
            raise SoapFault("Client", f"No operation available for request {operation.tag}", client=True)
        return operation.tag[len(_M):], operation

    def _deploy(self, element: ET.Element) -> Reply:
        self.emu.api_used += 1  # deploy() counts against the daily allocation; checkDeployStatus() does not [D]
        if self.emu.api_used > self.emu.api_limit:
            raise SoapFault(*LIMIT_EXCEEDED)
        encoded = element.findtext(_M + "ZipFile")
        if not encoded or not encoded.strip():
            raise SoapFault("Client", "deploy: ZipFile is required", client=True)  # emulator's wording
        try:
            data = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError):  # not base64Binary: the request does not parse (emulator's wording)
            raise SoapFault("Client", "Unable to parse ZipFile: not valid base64Binary", client=True) from None
        options = element.find(_M + "DeployOptions")

        def option(name: str, default: bool = False) -> bool:
            return _soap_bool(options.findtext(_M + name) if options is not None else None, name, default)

        job = _Job(self.emu._new_id("0Af"), option("checkOnly"), option("rollbackOnError", True),
                   option("singlePackage"), option("ignoreWarnings"), data, _now(), {})
        job.log.update(id=job.id, check_only=job.check_only, status="Queued", components=[], failures=[])
        self.jobs[job.id] = job
        self.emu.deploys.append(job.log)
        return Reply(200, _envelope(f"<deployResponse><result>{_xml('done', False)}{_xml('id', job.id)}"
                                    f"{_xml('state', 'Queued')}</result></deployResponse>"), dict(XML_TYPE))

    def _check(self, element: ET.Element) -> Reply:
        raw = (element.findtext(_M + "asyncProcessId") or "").strip()
        include = _soap_bool(element.findtext(_M + "includeDetails"), "includeDetails")
        job = self.jobs.get(to18(raw) or raw)
        if job is None:
            raise SoapFault(*UNKNOWN_DEPLOY)
        job.polls += 1
        if job.result is None and job.polls > self.emu.deploy_polls_in_progress:
            job.result = _Deployment(self.emu, job).run()
            outcomes = [o for o in job.result.outcomes if o.full_name != "package.xml" or o.problem]
            job.log.update(status=job.result.status, components=[(o.type, o.full_name) for o in outcomes],
                           failures=[(o.type, o.full_name, o.problem) for o in outcomes if o.problem])
        return Reply(200, _envelope(f"<checkDeployStatusResponse><result>{self._status(job, include)}"
                                    "</result></checkDeployStatusResponse>"), dict(XML_TYPE))

    def _status(self, job: _Job, include: bool) -> str:
        result = job.result
        user = self.emu._data["User"][self.emu.user_id]
        counted = [o for o in result.outcomes if o.full_name != "package.xml" or o.problem] if result else []
        failures = [o for o in counted if o.problem]
        parts = [_xml("checkOnly", job.check_only)]
        if result:
            parts.append(_xml("completedDate", result.completed))
        parts += [_xml("createdBy", self.emu.user_id[:15]), _xml("createdByName", f"{user['FirstName']} "
                                                                                 f"{user['LastName']}"),
                  _xml("createdDate", job.created)]
        if include:
            details = "".join(self._component(o, job.created) for o in (result.outcomes if result else []))
            parts.append(f"<details>{details}<runTestResult><numFailures>0</numFailures><numTestsRun>0"
                         "</numTestsRun><totalTime>0.0</totalTime></runTestResult></details>")
        parts.append(_xml("done", result is not None))
        if result and result.error_message:
            parts += [_xml("errorMessage", result.error_message), _xml("errorStatusCode", result.error_code)]
        parts += [_xml("id", job.id), _xml("ignoreWarnings", job.ignore_warnings),
                  _xml("lastModifiedDate", result.completed if result else job.created),
                  _xml("numberComponentErrors", len(failures)),
                  _xml("numberComponentsDeployed", len(counted) - len(failures)),
                  _xml("numberComponentsTotal", len(counted)), _xml("numberTestErrors", 0),
                  _xml("numberTestsCompleted", 0), _xml("numberTestsTotal", 0),
                  _xml("rollbackOnError", job.rollback_on_error), _xml("runTestsEnabled", False),
                  _xml("startDate", job.created)]
        if result is None:
            parts.append(_xml("stateDetail", "Processing Type: CustomObject"))
        parts += [_xml("status", result.status if result else "InProgress"),
                  _xml("success", bool(result and result.status == "Succeeded"))]
        return "".join(parts)

    @staticmethod
    def _component(o: _Outcome, created: str) -> str:
        tag = "componentFailures" if o.problem else "componentSuccesses"
        inner = [_xml("changed", o.changed), _xml("componentType", o.type), _xml("created", o.created),
                 _xml("createdDate", created), _xml("deleted", False), _xml("fileName", o.file_name),
                 _xml("fullName", o.full_name)]
        if o.id:
            inner.append(_xml("id", o.id))
        if o.problem:
            inner += [_xml("problem", o.problem), _xml("problemType", "Error")]
        inner.append(_xml("success", not o.problem))
        return f"<{tag}>{''.join(inner)}</{tag}>"


# --- one deploy: read the zip, check every component, apply all or nothing -------------------------------


class _Problem(Exception):
    """A component's failure: its `problem` in the DeployResult."""


def _children(element: ET.Element, allowed: set[str], type_name: str) -> dict[str, list[ET.Element]]:
    """The element's children by local name; an unknown or repeated one is refused as Salesforce does [X]."""
    found: dict[str, list[ET.Element]] = {}
    for child in element:
        if not isinstance(child.tag, str):
            continue  # a comment
        local = child.tag[len(_M):] if child.tag.startswith(_M) else None
        if local is None or local not in allowed or (local in found and local not in _REPEATED):
            raise _Problem(f"Error parsing file: Element {child.tag} invalid at this location in type {type_name}")
        found.setdefault(local, []).append(child)
    return found


def _text(found: dict[str, list[ET.Element]], name: str) -> str | None:
    items = found.get(name)
    return (items[0].text or "").strip() if items else None


def _bool(found: dict[str, list[ET.Element]], name: str, default: bool = False) -> bool:
    value = _text(found, name)
    if value is None or value == "":
        return default
    if value not in ("true", "false", "1", "0"):  # xsd:boolean; emulator's wording
        raise _Problem(f"Error parsing file: '{value}' is not a valid value for the type boolean ({name})")
    return value in ("true", "1")


def _int(found: dict[str, list[ET.Element]], name: str) -> int | None:
    value = _text(found, name)
    if value is None:
        return None
    if not re.fullmatch(r"-?\d+", value):  # xsd:int; emulator's wording
        raise _Problem(f"Error parsing file: '{value}' is not a valid value for the type int ({name})")
    return int(value)


def _custom_name_problem(name: str, what: str) -> str | None:
    """A custom field's or object's name: letters, digits and single underscores, 40 characters before __c."""
    base = name.removesuffix("__c")
    if not _NAME.fullmatch(base) or "__" in base or base.endswith("_"):
        # Salesforce Setup's wording for the same rule
        return (f"The {what} Name field can only contain underscores and alphanumeric characters. It must be "
                "unique, begin with a letter, not include spaces, not end with an underscore, and not contain "
                f"two consecutive underscores. ({name})")
    if len(base) > 40:  # emulator's wording
        return f"The {what} Name {name} is {len(base)} characters long before __c; at most 40 are allowed"
    return None


@dataclass
class _ObjectFile:
    name: str
    path: str
    found: dict[str, list[ET.Element]]
    fields: list[tuple[str, dict[str, list[ET.Element]]]]  # (fullName, children) in file order
    problem: str | None = None


@dataclass
class _PermissionSetFile:
    name: str
    path: str
    found: dict[str, list[ET.Element]] | None
    problem: str | None = None


class _Deployment:
    def __init__(self, emu: SalesforceEmulator, job: _Job):
        self.emu, self.job = emu, job
        self.outcomes: list[_Outcome] = []
        self.apply: list[Any] = []  # steps run once every component passed (and not checkOnly)
        self.new_objects: dict[str, _ObjectFile] = {}  # custom objects this deploy creates (lower-cased names)
        self.new_fields: dict[str, dict[str, list[ET.Element]]] = {}  # "object.field" -> its children
        self.relationships: dict[tuple[str, str], tuple[str, str]] = {}  # planned lookups: -> (target, name)
        self._current_object = ""  # the object whose field _field_def reads

    def fail(self, type_name: str, full_name: str, file_name: str, problem: str) -> None:
        self.outcomes.append(_Outcome(type_name, full_name, file_name, problem))

    def run(self) -> _Result:
        try:
            archive = zipfile.ZipFile(io.BytesIO(self.job.data))
            names = [n for n in archive.namelist() if not n.endswith("/")]
        except zipfile.BadZipFile as error:  # the deploy fails as a whole (emulator's wording)
            return _Result("Failed", [], _now(), f"The ZipFile is not a valid zip file: {error}", "UNKNOWN_EXCEPTION")
        root = ""
        if not self.job.single_package:  # a package is a folder of the zip (singlePackage=false)
            root = next((n[:-len("package.xml")] for n in names if n.endswith("/package.xml")), "")
        files = {n[len(root):]: archive.read(n) for n in names if n.startswith(root)}
        if "package.xml" not in files:
            self.fail("", "package.xml", "package.xml", "No package.xml found")  # [P]
            return self._finish()
        try:
            listed = self._package(files.pop("package.xml"))
        except _Problem as problem:
            self.fail("", "package.xml", "package.xml", str(problem))
            return self._finish()
        objects: dict[str, _ObjectFile] = {}
        psets: dict[str, _PermissionSetFile] = {}
        for path, content in files.items():
            folder, _, rest = path.partition("/")
            if folder == "objects" and rest.endswith(".object") and "/" not in rest:
                parsed = self._object_file(rest[:-len(".object")], path, content)
                objects[parsed.name.lower()] = parsed
            elif folder == "permissionsets" and rest.endswith(".permissionset") and "/" not in rest:
                name = rest[:-len(".permissionset")]
                psets[name.lower()] = self._permission_set_file(name, path, content)
            else:  # emulator's wording: it deploys nothing else
                self.fail("", path, path, "The emulator deploys objects/*.object and permissionsets/*.permissionset "
                                          "files only")
        self._check_package(listed, objects, psets)
        return self._finish()

    def _finish(self) -> _Result:
        failed = any(o.problem for o in self.outcomes)
        package_row = _Outcome("", "package.xml", "package.xml", changed=True)
        if not any(o.full_name == "package.xml" for o in self.outcomes):
            self.outcomes.insert(0, package_row)
        if not failed and not self.job.check_only:
            for step in self.apply:
                step()
        return _Result("Failed" if failed else "Succeeded", self.outcomes, _now())

    # --- package.xml --------------------------------------------------------------------------------

    def _package(self, content: bytes) -> dict[str, list[str]]:
        root = self._parse(content, "Package")
        found = _children(root, _PACKAGE, "Package")
        listed: dict[str, list[str]] = {kind: [] for kind in _KNOWN_TYPES}
        for types in found.get("types", []):
            parts = _children(types, {"members", "name"}, "PackageTypeMembers")
            kind = _text(parts, "name") or ""
            if kind in _OTHER_TYPES:  # emulator's wording
                raise _Problem(f"The emulator deploys CustomObject, CustomField and PermissionSet only, not {kind}")
            if kind not in _KNOWN_TYPES:
                raise _Problem(f"Unknown type name '{kind}' specified in package.xml")  # [P]
            listed[kind] += [(m.text or "").strip() for m in parts.get("members", [])]
        version = _text(found, "version")
        if version is not None and not re.fullmatch(r"\d+\.\d", version):  # emulator's wording
            raise _Problem(f"Invalid version specified: {version}")
        return listed

    @staticmethod
    def _parse(content: bytes, type_name: str) -> ET.Element:
        try:
            root = ET.fromstring(content)
        except ET.ParseError as error:  # emulator's wording after Salesforce's "Error parsing file:"
            raise _Problem(f"Error parsing file: {error}") from None
        if root.tag != _M + type_name:
            raise _Problem(f"Error parsing file: Element {root.tag} invalid at this location in type {type_name}")
        return root

    def _check_package(self, listed: dict[str, list[str]], objects: dict[str, _ObjectFile],
                       psets: dict[str, _PermissionSetFile]) -> None:
        """package.xml and the files must agree [P]; then each component is checked and planned."""
        def expand(kind: str, known: list[str]) -> set[str]:
            members = listed[kind]
            return {k.lower() for k in known} if "*" in members else {m.lower() for m in members}

        object_members = expand("CustomObject", [o.name for o in objects.values()])
        field_members = expand("CustomField", [f"{o.name}.{name}" for o in objects.values() for name, _ in o.fields])
        pset_members = expand("PermissionSet", [p.name for p in psets.values()])
        missing = "An object '{}' of type {} was named in package.xml, but was not found in zipped directory"
        for member in listed["CustomObject"]:
            if member != "*" and member.lower() not in objects:
                self.fail("CustomObject", member, "package.xml", missing.format(member, "CustomObject"))
        for member in listed["CustomField"]:
            obj_name, _, field_name = member.partition(".")
            ofile = objects.get(obj_name.lower())
            if member != "*" and (ofile is None or all(n.lower() != field_name.lower() for n, _ in ofile.fields)):
                self.fail("CustomField", member, "package.xml", missing.format(member, "CustomField"))
        for member in listed["PermissionSet"]:
            if member != "*" and member.lower() not in psets:
                self.fail("PermissionSet", member, "package.xml", missing.format(member, "PermissionSet"))

        deploying = [o for o in objects.values() if o.name.lower() in object_members]
        self.new_objects = {o.name.lower(): o for o in deploying if o.name.endswith("__c")
                            and o.name.lower() not in self.emu.schema}
        for ofile in objects.values():
            if ofile.problem:
                self.fail("CustomObject", ofile.name, ofile.path, ofile.problem)
                continue
            whole = ofile.name.lower() in object_members
            if whole:
                self._custom_object(ofile)
            for name, found in ofile.fields:
                full = f"{ofile.name}.{name}"
                if whole or full.lower() in field_members:
                    self.new_fields[full.lower()] = found
            if not whole and not any(f"{ofile.name}.{n}".lower() in field_members for n, _ in ofile.fields):
                self.fail("CustomObject", ofile.name, ofile.path, "Not in package.xml")  # [P]
        for ofile in objects.values():
            if ofile.problem:
                continue
            whole = ofile.name.lower() in object_members
            seen: set[str] = set()
            for name, found in ofile.fields:
                full = f"{ofile.name}.{name}"
                if not whole and full.lower() not in field_members:
                    self.fail("CustomField", full, ofile.path, "Not in package.xml")  # [P]
                elif name.lower() in seen:  # emulator's wording
                    self.fail("CustomField", full, ofile.path, f"{full} is defined more than once in {ofile.path}")
                else:
                    self._custom_field(ofile, name, found)
                seen.add(name.lower())
        for pfile in psets.values():
            if pfile.name.lower() not in pset_members:
                self.fail("PermissionSet", pfile.name, pfile.path, "Not in package.xml")  # [P]
            elif pfile.problem:
                self.fail("PermissionSet", pfile.name, pfile.path, pfile.problem)
            else:
                self._permission_set(pfile)

    # --- objects and fields ---------------------------------------------------------------------------

    def _object_file(self, name: str, path: str, content: bytes) -> _ObjectFile:
        ofile = _ObjectFile(name, path, {}, [])
        try:
            ofile.found = _children(self._parse(content, "CustomObject"), _CUSTOM_OBJECT, "CustomObject")
            for element in ofile.found.get("fields", []):
                found = _children(element, _CUSTOM_FIELD, "CustomField")
                ofile.fields.append((_text(found, "fullName") or "", found))
        except _Problem as problem:
            ofile.problem = str(problem)
        return ofile

    def _known_object(self, name: str) -> bool:
        return name.lower() in self.emu.schema or name.lower() in self.new_objects

    def _custom_object(self, ofile: _ObjectFile) -> None:
        try:
            existing = self.emu.schema.get(ofile.name.lower())
            if not ofile.name.endswith("__c"):
                if existing is None:  # a standard object this org lacks ([R]'s wording for it)
                    raise _Problem(f"The Entity '{ofile.name}' is not found.")
                self.outcomes.append(_Outcome("CustomObject", ofile.name, ofile.path))
                return
            problem = _custom_name_problem(ofile.name, "Object")
            if problem:
                raise _Problem(problem)
            found = ofile.found
            label, plural = _text(found, "label"), _text(found, "pluralLabel")
            if not label:
                raise _Problem("Must specify a non-empty label for the CustomObject")  # [X]
            if not plural:
                raise _Problem("Must specify a non-empty plural label for the CustomObject")  # after [X]
            name_field = found.get("nameField")
            if not name_field:
                raise _Problem("Must specify a nameField for the CustomObject")  # after [X]
            name_found = _children(name_field[0], _CUSTOM_FIELD, "CustomField")
            name_label = _text(name_found, "label")
            if not name_label:
                raise _Problem("Must specify a non-empty label for the nameField of the CustomObject")
            if _text(name_found, "type") != "Text":  # emulator's limit: AutoNumber names are not emulated
                raise _Problem(f"The emulator supports a Text nameField only, not {_text(name_found, 'type')}")
            for element, allowed in (("deploymentStatus", {"Deployed", "InDevelopment"}),
                                     ("sharingModel", SHARING_MODELS)):
                value = _text(found, element)
                if value is not None and value not in allowed:  # emulator's wording
                    raise _Problem(f"Error parsing file: '{value}' is not a valid value for the enum '{element}'")
        except _Problem as problem:
            self.fail("CustomObject", ofile.name, ofile.path, str(problem))
            return
        created = existing is None
        changed = not created and (existing.display_label != label or existing.plural_label != plural)
        self.outcomes.append(_Outcome("CustomObject", ofile.name, ofile.path, created=created,
                                      changed=changed or created))

        def apply() -> None:
            obj = self.emu.schema.get(ofile.name.lower())
            if obj is None:
                obj = self.emu.add_object(ofile.name, visible=False)
                obj.fields.pop("name", None)
                obj.add(FieldDef("Name", length=80, required=True, label=name_label))
            obj.display_label, obj.plural_label = label, plural
        self.apply.append(apply)

    def _custom_field(self, ofile: _ObjectFile, name: str, found: dict[str, list[ET.Element]]) -> None:
        full = f"{ofile.name}.{name}"
        obj = self.emu.schema.get(ofile.name.lower())
        try:
            if obj is None and ofile.name.lower() not in self.new_objects:
                raise _Problem(f"The Entity '{ofile.name}' is not found.")  # [R]'s wording
            self._current_object = ofile.name
            fdef = self._field_def(name, found)
            existing = obj.field(name) if obj is not None else None
            if existing is not None:
                self._check_change(obj, existing, fdef)
        except _Problem as problem:
            self.fail("CustomField", full, ofile.path, str(problem))
            return
        changed = existing is None or existing != fdef
        self.outcomes.append(_Outcome("CustomField", full, ofile.path, created=existing is None, changed=changed))
        if fdef.child_relationship:
            self.relationships[(ofile.name, name)] = (fdef.reference_to[0], fdef.child_relationship)

        def apply() -> None:
            target = self.emu.schema[ofile.name.lower()]
            hidden = existing is None or (target.name.lower(), fdef.name.lower()) in self.emu.hidden_fields
            was = target.field(name)
            if was is not None:
                fdef.name = was.name  # keep the spelling records use
            kwargs = {k: getattr(fdef, k) for k in ("id_lookup", "picklist", "label", "precision", "scale", "default",
                                                     "restricted", "visible_lines", "child_relationship")}
            self.emu.add_field(target.name, fdef.name, fdef.type, fdef.length, fdef.external_id, fdef.unique,
                               fdef.required, fdef.reference_to, visible=not hidden, **kwargs)
        self.apply.append(apply)

    def _field_def(self, name: str, found: dict[str, list[ET.Element]]) -> FieldDef:
        """The field a <fields> entry describes, or the problem Salesforce reports for it."""
        if not name.endswith("__c"):
            if "__" in name:
                raise _Problem("fullName must end with: __c or __kav or __x or __b or __e or __p or __mdt or __dll "
                               "or __dlm")  # [X]
            raise _Problem("Could not resolve standard field's name.")  # [X] (the emulator changes no standard field)
        problem = _custom_name_problem(name, "Field")
        if problem:
            raise _Problem(problem)
        kind = _text(found, "type")
        if not kind:
            raise _Problem("Must specify a type for the CustomField")  # emulator's wording
        if kind not in FIELD_TYPES:
            if kind in OTHER_FIELD_TYPES:  # emulator's limit
                raise _Problem(f"The emulator does not support fields of type {kind}")
            raise _Problem(f"Error parsing file: '{kind}' is not a valid value for the enum 'FieldType'")
        if "formula" in found:
            raise _Problem("The emulator does not support formula fields")
        label = _text(found, "label")
        if not label:
            raise _Problem("Must specify a non-empty label for the CustomField")  # after [X]
        # What applies to which type ("Can not specify ..." / "Must specify ..." follow Salesforce's wording
        # for a Checkbox's defaultValue; the ranges' wording is the emulator's).
        applies = {"length": set(_LENGTHS), "visibleLines": {"LongTextArea"}, "precision": {"Number"},
                   "scale": {"Number"}, "referenceTo": {"Lookup"}, "relationshipName": {"Lookup"},
                   "relationshipLabel": {"Lookup"}, "deleteConstraint": {"Lookup"}, "valueSet": {"Picklist"}}
        for attribute, kinds in applies.items():
            if attribute in found and kind not in kinds:
                raise _Problem(f"Can not specify '{attribute}' for a CustomField of type {kind}")
        for attribute in ("externalId", "unique"):
            if _bool(found, attribute) and kind not in _KEY_TYPES:
                raise _Problem(f"Can not specify '{attribute}' for a CustomField of type {kind}")
        required = _bool(found, "required")
        fdef = FieldDef(name, FIELD_TYPES[kind], external_id=_bool(found, "externalId"), unique=_bool(found, "unique"),
                        required=required, label=label)
        if kind in _LENGTHS:
            low, high = _LENGTHS[kind]
            length = _int(found, "length")
            if length is None:
                raise _Problem(f"Must specify 'length' for a CustomField of type {kind}")
            if not low <= length <= high:
                raise _Problem(f"The length of a {kind} field must be from {low} to {high:,}: {length} given")
            fdef.length = length
            if kind == "LongTextArea":
                lines = _int(found, "visibleLines")
                if lines is None:
                    raise _Problem("Must specify 'visibleLines' for a CustomField of type LongTextArea")
                if not 2 <= lines <= 50:
                    raise _Problem(f"The visible lines of a LongTextArea field must be from 2 to 50: {lines} given")
                fdef.visible_lines = lines
        elif kind == "Number":
            precision, scale = _int(found, "precision"), _int(found, "scale")
            if precision is None:
                raise _Problem("Must specify 'precision' for a CustomField of type Number")
            if not 1 <= precision <= 18:
                raise _Problem(f"The precision of a Number field must be from 1 to 18: {precision} given")
            if scale is None:
                raise _Problem("Must specify 'scale' for a CustomField of type Number")
            if not 0 <= scale <= precision:
                raise _Problem(f"The scale of a Number field must be from 0 to its precision ({precision}): "
                               f"{scale} given")
            fdef.precision, fdef.scale = precision, scale
        elif kind == "Checkbox":
            if "defaultValue" not in found:
                raise _Problem("Must specify 'defaultValue' for a CustomField of type Checkbox")
            if required:
                raise _Problem("Can not specify 'required' for a CustomField of type Checkbox")
            fdef.default = _bool(found, "defaultValue")
        elif kind == "Email":
            fdef.length = 80
        elif kind == "Picklist":
            fdef.length = 255
            fdef.picklist, fdef.restricted = self._picklist(found)
        elif kind == "Lookup":
            target = _text(found, "referenceTo") or ""
            if not target:
                raise _Problem("Must specify 'referenceTo' for a CustomField of type Lookup")
            if not self._known_object(target) or target.lower() in ("permissionset", "permissionsetassignment"):
                raise _Problem(f"referenceTo value of '{target}' does not resolve to a valid sObject type")  # [R]
            relationship = _text(found, "relationshipName")
            if not relationship:
                raise _Problem("Must specify 'relationshipName' for a CustomField of type Lookup")
            if not _NAME.fullmatch(relationship) or "__" in relationship or relationship.endswith("_"):
                raise _Problem(f"Invalid relationshipName: {relationship}")  # emulator's wording
            owner = self._relationship_owner(target, relationship, (self._current_object, name))
            if owner:
                raise _Problem(f'The relationship name "{relationship}__r" is already used by custom field '
                               f"{owner}. Please rename existing relationship name.")  # [L]
            constraint = _text(found, "deleteConstraint")
            if constraint is not None and constraint not in ("SetNull", "Restrict", "Cascade"):
                raise _Problem(f"Error parsing file: '{constraint}' is not a valid value for the enum "
                               "'DeleteConstraint'")
            if required and constraint in (None, "SetNull"):  # emulator's wording
                raise _Problem("A required Lookup field needs a deleteConstraint of Restrict or Cascade")
            known = self.emu.schema.get(target.lower())
            fdef.reference_to = (known.name if known else self.new_objects[target.lower()].name,)
            fdef.length, fdef.child_relationship = 18, relationship
        return fdef

    def _relationship_owner(self, target: str, relationship: str, this: tuple[str, str]) -> str | None:
        """The other lookup to `target` whose child relationship is already named `relationship` (a parent's
        related lists are named once each), in the org or earlier in this deploy; None when there is none."""
        wanted, me = relationship.lower(), (this[0].lower(), this[1].lower())
        for obj in self.emu.schema.values():
            for fdef in obj.fields.values():
                if (obj.name.lower(), fdef.name.lower()) != me and (fdef.child_relationship or "").lower() == wanted \
                        and target.lower() in {r.lower() for r in fdef.reference_to}:
                    return f"{obj.name}.{fdef.name}"
        for (obj_name, field_name), (other_target, other) in self.relationships.items():
            if (obj_name.lower(), field_name.lower()) != me and other.lower() == wanted \
                    and other_target.lower() == target.lower():
                return f"{obj_name}.{field_name}"
        return None

    @staticmethod
    def _picklist(found: dict[str, list[ET.Element]]) -> tuple[tuple[str, ...], bool]:
        value_set = found.get("valueSet")
        if not value_set:
            raise _Problem("Must specify 'valueSet' for a CustomField of type Picklist")
        parts = _children(value_set[0], {"controllingField", "restricted", "valueSetDefinition", "valueSetName",
                                         "valueSettings"}, "ValueSet")
        definition = parts.get("valueSetDefinition")
        values: list[str] = []
        if definition:
            inner = _children(definition[0], {"sorted", "value"}, "ValueSetValuesDefinition")
            for value in inner.get("value", []):
                item = _children(value, {"fullName", "default", "label", "color", "description", "isActive"},
                                 "CustomValue")
                full_name = _text(item, "fullName")
                if not full_name:
                    raise _Problem("Must specify a fullName for each picklist value")  # emulator's wording
                if full_name in values:
                    raise _Problem(f"Duplicate picklist value: {full_name}")  # emulator's wording
                values.append(full_name)
        if not values:
            raise _Problem("A Picklist field needs at least one value in valueSet/valueSetDefinition")
        return tuple(values), _bool(parts, "restricted")

    def _check_change(self, obj: SObjectDef, existing: FieldDef, new: FieldDef) -> None:
        old_kind = _METADATA_TYPE.get(existing.type, existing.type)
        new_kind = _METADATA_TYPE[new.type]
        if old_kind != new_kind:
            if self.emu._data.get(obj.name):
                raise _Problem("Cannot change type due to existing data")  # [R]
            # Salesforce allows some changes of an empty field; the emulator refuses every one (its wording)
            raise _Problem(f"Cannot change the type of {obj.name}.{existing.name} from {old_kind} to {new_kind}")
        targets = [{r.lower() for r in f.reference_to} for f in (existing, new)]
        if new.type == "reference" and targets[0] != targets[1]:
            raise _Problem("Cannot change which object a relationship field references")  # emulator's wording

    # --- permission sets ----------------------------------------------------------------------------------

    def _permission_set_file(self, name: str, path: str, content: bytes) -> _PermissionSetFile:
        try:
            return _PermissionSetFile(name, path, _children(self._parse(content, "PermissionSet"), _PERMISSION_SET,
                                                            "PermissionSet"))
        except _Problem as problem:
            return _PermissionSetFile(name, path, None, str(problem))

    def _field_after(self, obj_name: str, field_name: str) -> FieldDef | dict[str, list[ET.Element]] | None:
        """A field as the org will have it after this deploy: its FieldDef, or a deployed field's children."""
        deployed = self.new_fields.get(f"{obj_name}.{field_name}".lower())
        if deployed is not None:
            return deployed
        obj = self.emu.schema.get(obj_name.lower())
        return obj.field(field_name) if obj is not None else None

    def _permission_set(self, pfile: _PermissionSetFile) -> None:
        found = pfile.found
        assert found is not None
        try:
            if not _NAME.fullmatch(pfile.name) or "__" in pfile.name or pfile.name.endswith("_") or \
                    len(pfile.name) > 80:  # emulator's wording
                raise _Problem(f"Invalid permission set name: {pfile.name} (a letter, then letters, digits and "
                               "single underscores, at most 80 characters)")
            label = _text(found, "label")
            if not label:
                raise _Problem("Must specify a non-empty label for the PermissionSet")  # after [X]
            objects: dict[str, set[str]] = {}
            for element in found.get("objectPermissions", []):
                parts = _children(element, set(OBJECT_PERMISSIONS) | {"object"}, "ObjectPermissions")
                obj_name = _text(parts, "object") or ""
                if not self._known_object(obj_name):
                    raise _Problem(f"In field: object - no CustomObject named {obj_name} found")  # after [A]
                if obj_name.lower() in objects:  # emulator's wording
                    raise _Problem(f"objectPermissions for {obj_name} appear more than once")
                granted = {p for p in OBJECT_PERMISSIONS if _bool(parts, p)}
                for permission in sorted(granted):
                    lacking = [n for n in _NEEDS.get(permission, ()) if n not in granted]
                    if lacking:
                        plural = self._plural(obj_name)
                        needed = ", ".join(f"{_PERMISSION_WORDS[n]} {plural}" for n in lacking)
                        raise _Problem(f"Permission {_PERMISSION_WORDS[permission]} {plural} depends on "
                                       f"permission(s): {needed}")
                objects[obj_name.lower()] = granted
            fields: dict[str, tuple[bool, bool]] = {}
            for element in found.get("fieldPermissions", []):
                parts = _children(element, {"editable", "field", "readable"}, "FieldPermissions")
                reference = _text(parts, "field") or ""
                obj_name, _, field_name = reference.partition(".")
                target = self._field_after(obj_name, field_name) if self._known_object(obj_name) else None
                if target is None or field_name.lower() in SYSTEM_FIELDS:
                    raise _Problem(f"In field: field - no CustomField named {reference} found")  # [A]
                required = (target.required if isinstance(target, FieldDef) else _bool(target, "required")) or (
                    field_name.lower() == "name" and obj_name.endswith("__c"))
                if required:
                    raise _Problem(f"You cannot deploy to a required field: {reference}")  # [A]
                readable, editable = _bool(parts, "readable"), _bool(parts, "editable")
                if editable and not readable:  # emulator's wording
                    raise _Problem(f"Field permission for {reference}: editable needs readable")
                fields[reference.lower()] = (readable, editable)
        except _Problem as problem:
            self.fail("PermissionSet", pfile.name, pfile.path, str(problem))
            return
        record = next((r for r in self.emu._data["PermissionSet"].values()
                       if str(r.get("Name", "")).lower() == pfile.name.lower()), None)
        self.outcomes.append(_Outcome("PermissionSet", pfile.name, pfile.path, created=record is None,
                                      changed=True, id=record["Id"] if record else ""))

        def apply() -> None:
            pset = self.emu.permission_sets.setdefault(pfile.name.lower(), PermissionSetDef(pfile.name, label))
            pset.label = label
            for obj, perms in objects.items():
                pset.objects[obj] = set(perms)
            pset.fields.update(fields)
            ps_object = self.emu.schema["permissionset"]
            found_record = next((r for r in self.emu._data["PermissionSet"].values()
                                 if str(r.get("Name", "")).lower() == pfile.name.lower()), None)
            if found_record is None:
                self.emu._store(ps_object, {"Name": pfile.name, "Label": label})
            else:
                found_record["Label"] = label
            self.emu._grant_cache = None
        self.apply.append(apply)

    def _plural(self, obj_name: str) -> str:
        obj = self.emu.schema.get(obj_name.lower())
        if obj is not None:
            return obj.plural_label or obj.label + "s"
        new = self.new_objects.get(obj_name.lower())
        return (_text(new.found, "pluralLabel") if new else None) or obj_name
