"""A Metadata API deploy's status with each component's result, read from Salesforce's own answer.

simple-salesforce's `checkDeployStatus` asks for the details but keeps, of each failure, only its type,
file, problemType and problem: not the component's fullName (so "refused: CustomField
objects/Contact.object" cannot say which field), and none of the successes. This module sends the same
documented SOAP call, `checkDeployStatus(asyncProcessId, includeDetails=true)`
(https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/meta_checkdeploystatus.htm),
with the client's own message template and `call_salesforce` (whose header changes the caller undoes,
salesforce_setup._keeping_headers), and reads the DeployResult with the standard library: `status`,
`stateDetail`, `errorMessage` and, under `details`, every `componentFailures` and `componentSuccesses`
DeployMessage (`componentType`, `fullName`, `fileName`, `problem`, `problemType`, `created`, `changed`;
https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/meta_deployresult.htm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from simple_salesforce.messages import CHECK_DEPLOY_STATUS_MSG
from simple_salesforce.util import call_salesforce

ENV = "http://schemas.xmlsoap.org/soap/envelope/"
MD = "http://soap.sforce.com/2006/04/metadata"
_M = "{" + MD + "}"
# DeployStatus values that mean the deploy is over
# (https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/meta_deployresult.htm).
DONE = frozenset({"Succeeded", "SucceededPartial", "Failed", "Canceled"})


@dataclass(frozen=True)
class ComponentResult:
    """One DeployMessage: a component Salesforce deployed (or would have) or refused."""

    type: str  # componentType: CustomObject, CustomField, PermissionSet; "" for package.xml
    full_name: str  # Contact.Okendo_VIP_Tier__c
    file_name: str  # objects/Contact.object
    success: bool
    problem: str | None = None  # Salesforce's words; on a success, a warning
    problem_type: str | None = None  # Error or Warning
    created: bool = False
    changed: bool = False

    def name(self) -> str:
        """`CustomField Contact.Okendo_VIP_Tier__c`, or the file when Salesforce names no component."""
        return " ".join(part for part in (self.type, self.full_name or self.file_name) if part)


@dataclass
class DeployStatus:
    async_id: str
    status: str  # Pending, InProgress, Succeeded, SucceededPartial, Failed, Canceling, Canceled
    done: bool
    state_detail: str | None = None
    error_message: str | None = None  # a failure of the deploy as a whole (a bad zip, ...)
    error_code: str | None = None
    components: list[ComponentResult] = field(default_factory=list)

    @property
    def failures(self) -> list[ComponentResult]:
        return [c for c in self.components if not c.success]

    @property
    def successes(self) -> list[ComponentResult]:
        """What was deployed, without package.xml's own line (Salesforce lists the manifest too)."""
        return [c for c in self.components if c.success and not (c.full_name == "package.xml" and not c.type)]


def check_deploy_status(sf: Any, async_id: str) -> DeployStatus:
    """checkDeployStatus with its details, sent as simple-salesforce sends it (its own message template
    and `call_salesforce`, through the client's session, session id and metadata URL), read here in
    full. An HTTP error (a SOAP fault is a 500) raises simple-salesforce's own exception for it."""
    body = CHECK_DEPLOY_STATUS_MSG.format(client="okendo_crm_connector", sessionId=escape(sf.session_id),
                                          asyncProcessId=escape(async_id), includeDetails="true")
    response = call_salesforce(url=f"{sf.metadata_url}deployRequest/{async_id}", method="POST", session=sf.session,
                               headers=sf.headers, data=body,
                               additional_headers={"Content-Type": "text/xml", "SOAPAction": "checkDeployStatus"})
    return parse_deploy_status(response.content, async_id)


def parse_deploy_status(content: bytes | str, async_id: str = "") -> DeployStatus:
    root = ElementTree.fromstring(content)
    result = root.find(f"{{{ENV}}}Body/{_M}checkDeployStatusResponse/{_M}result")
    if result is None:
        raise ValueError(f"Salesforce's checkDeployStatus answer has no result: {content[:300]!r}")

    def text(node: ElementTree.Element, name: str) -> str | None:
        value = node.findtext(_M + name)
        return value.strip() if value is not None and value.strip() else None

    def flag(node: ElementTree.Element, name: str) -> bool:
        return (text(node, name) or "").lower() == "true"

    components = []
    details = result.find(_M + "details")
    for node in details if details is not None else ():
        if node.tag not in (_M + "componentFailures", _M + "componentSuccesses"):
            continue  # runTestResult, retrieveResult
        failed = node.tag == _M + "componentFailures"
        components.append(ComponentResult(
            type=text(node, "componentType") or "", full_name=text(node, "fullName") or "",
            file_name=text(node, "fileName") or "", success=not failed, problem=text(node, "problem"),
            problem_type=text(node, "problemType"), created=flag(node, "created"), changed=flag(node, "changed")))
    return DeployStatus(async_id=text(result, "id") or async_id, status=text(result, "status") or "Unknown",
                        done=flag(result, "done"), state_detail=text(result, "stateDetail"),
                        error_message=text(result, "errorMessage"), error_code=text(result, "errorStatusCode"),
                        components=components)
