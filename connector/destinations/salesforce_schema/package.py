"""The declaration as a Metadata API package: package.xml, objects/*.object and a permission set.

The file-based deploy takes a zip in the metadata format
(https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/file_based.htm): a
`package.xml` manifest listing every component by type, one `objects/<Object>.object` per object
(a CustomObject with its `<fields>`; for a standard object only the new fields), and
`permissionsets/<Name>.permissionset`. The same files, written to a folder, deploy with
`sf project deploy start --metadata-dir DIR`.

Fields created through the Metadata API are visible to no profile until someone is granted them
(field-level security, https://help.salesforce.com/s/articleView?id=sf.admin_fls.htm): the package
always carries the `Okendo_Connector` permission set with read and edit on every object and field
it declares, which `connector setup salesforce` assigns to the connecting user. Except on a field the
org already has as required (a master-detail field is one): Salesforce refuses a permission set with
field permissions on it, and the whole deploy with it ("You cannot deploy to a required field:
Object.Field"), while every user who may use the object reads and edits it anyway
(https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/meta_permissionset.htm, fieldPermissions).
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from connector.destinations.salesforce_schema.declaration import FieldSpec, ObjectSpec, SalesforceSchema

METADATA_NS = "http://soap.sforce.com/2006/04/metadata"
PERMISSION_SET = "Okendo_Connector"
PERMISSION_SET_LABEL = "Okendo Connector"
# Standard objects the connector writes: create, read and edit (it never deletes a Contact).
STANDARD_ACCESS = {"allowCreate": True, "allowRead": True, "allowEdit": True, "allowDelete": False}
# Its own records it also deletes, when Okendo deletes what they mirror.
CUSTOM_ACCESS = {"allowCreate": True, "allowRead": True, "allowEdit": True, "allowDelete": True}


# What an export writes: the files an earlier export may have left behind.
_PACKAGE_FILE = re.compile(r"^(package\.xml|objects/[^/]+\.object|permissionsets/[^/]+\.permissionset)$")


class ExportError(Exception):
    """The folder cannot take the package; the message says why and what to do."""


@dataclass(frozen=True)
class Package:
    """What one deploy holds: the objects (with the fields to create) and the permission set."""

    objects: dict[str, ObjectSpec]  # only the fields to deploy, by object
    schema: SalesforceSchema  # everything declared: what the permission set grants
    api_version: str
    create_objects: frozenset[str]  # custom objects that do not exist yet (deployed whole)
    required: frozenset[str] = frozenset()  # "Object.Field" required in the org: granted without fieldPermissions

    def components(self) -> list[tuple[str, str]]:
        """(type, fullName) of every component, as package.xml lists them."""
        # A custom object that exists already is not a member: its file carries only the new fields, and
        # a CustomObject member without its label, pluralLabel and nameField is refused
        # (https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/customobject.htm).
        # A standard object's file with only new fields deploys as a CustomObject member.
        found: list[tuple[str, str]] = []
        for name in self.objects:
            if name in self.create_objects or not name.endswith("__c"):
                found.append(("CustomObject", name))
        for name, spec in self.objects.items():
            found += [("CustomField", f"{name}.{field}") for field in spec.fields]
        found.append(("PermissionSet", PERMISSION_SET))
        return found

    def files(self) -> dict[str, bytes]:
        files = {"package.xml": self._manifest().encode()}
        for name, spec in self.objects.items():
            files[f"objects/{name}.object"] = self._object(name, spec).encode()
        files[f"permissionsets/{PERMISSION_SET}.permissionset"] = self._permission_set().encode()
        return files

    def zip_bytes(self) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path, content in self.files().items():
                archive.writestr(path, content)
        return buffer.getvalue()

    def write(self, folder: Path) -> tuple[list[Path], list[Path]]:
        """The package as a metadata-format folder: (files written, stale files removed). A package file
        an earlier export left that this one lacks is removed (sf would deploy it, or refuse it as not
        in package.xml); any other file is refused, untouched."""
        files = self.files()
        stale = []
        if folder.is_dir():
            for path in sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink()):
                relative = path.relative_to(folder).as_posix()
                if relative in files:
                    continue
                if not _PACKAGE_FILE.match(relative):
                    raise ExportError(f"{folder} holds {relative}, which is not part of a metadata package: "
                                      "export into an empty or new directory")
                stale.append(path)
        for path in stale:
            path.unlink()
        written = []
        for relative, content in files.items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            written.append(path)
        return written, stale

    # --- the XML -------------------------------------------------------------------------------

    def _manifest(self) -> str:
        by_type: dict[str, list[str]] = {}
        for kind, full_name in self.components():
            by_type.setdefault(kind, []).append(full_name)
        types = "".join(
            "    <types>\n" + "".join(f"        <members>{escape(m)}</members>\n" for m in sorted(members))
            + f"        <name>{kind}</name>\n    </types>\n"
            for kind, members in sorted(by_type.items()))
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Package xmlns="{METADATA_NS}">\n{types}'
                f"    <version>{escape(self.api_version)}</version>\n</Package>\n")

    def _object(self, name: str, spec: ObjectSpec) -> str:
        parts = []
        if name in self.create_objects:
            assert spec.label and spec.plural_label and spec.name_field
            parts += [_tag("label", spec.label), _tag("pluralLabel", spec.plural_label),
                      "    <nameField>\n" + _tag("label", spec.name_field.label, 8) + _tag("type", "Text", 8)
                      + "    </nameField>\n",
                      _tag("deploymentStatus", "Deployed"), _tag("sharingModel", "ReadWrite")]
        parts += [self._field(field_name, field) for field_name, field in spec.fields.items()]
        return f'<?xml version="1.0" encoding="UTF-8"?>\n<CustomObject xmlns="{METADATA_NS}">\n{"".join(parts)}</CustomObject>\n'

    def _field(self, name: str, field: FieldSpec) -> str:
        inner = [_tag("fullName", name, 8), _tag("label", self.schema.field_label(name, field), 8)]
        if field.description:
            inner.append(_tag("description", field.description, 8))
        inner.append(_tag("type", field.type, 8))
        if field.type in ("Text", "LongTextArea"):
            inner.append(_tag("length", str(field.length), 8))
        if field.type == "LongTextArea":
            inner.append(_tag("visibleLines", str(field.visible_lines or 5), 8))
        if field.type == "Number":
            inner += [_tag("precision", str(field.precision), 8), _tag("scale", str(field.scale), 8)]
        if field.type == "Checkbox":
            inner.append(_tag("defaultValue", "false", 8))
        if field.type == "Picklist":
            values = "".join(f"                <value>\n{_tag('fullName', v, 20)}{_tag('default', 'false', 20)}"
                             f"{_tag('label', v, 20)}                </value>\n" for v in field.values or [])
            inner.append("        <valueSet>\n" + _tag("restricted", "true", 12)
                         + "            <valueSetDefinition>\n" + _tag("sorted", "false", 16) + values
                         + "            </valueSetDefinition>\n        </valueSet>\n")
        if field.type == "Lookup":
            relationship = field.relationship_name or name.removesuffix("__c") + "s"
            inner += [_tag("referenceTo", field.to or "", 8), _tag("relationshipName", relationship, 8),
                      _tag("relationshipLabel", relationship.replace("_", " "), 8),
                      _tag("deleteConstraint", "SetNull", 8)]
        if field.external_id:
            inner.append(_tag("externalId", "true", 8))
        if field.unique:
            inner.append(_tag("unique", "true", 8))
            if field.type == "Text":  # case sensitivity is a unique Text field's choice only
                inner.append(_tag("caseSensitive", "false", 8))
        return "    <fields>\n" + "".join(inner) + "    </fields>\n"

    def _permission_set(self) -> str:
        parts = [_tag("label", PERMISSION_SET_LABEL),
                 _tag("description", "Lets okendo-crm-connector read and write what its mappings write "
                                     "(created by connector setup salesforce)."),
                 _tag("hasActivationRequired", "false")]
        for name in sorted(self.schema.objects):
            access = CUSTOM_ACCESS if name.endswith("__c") else STANDARD_ACCESS
            parts.append("    <objectPermissions>\n"
                         + "".join(_tag(key, "true" if value else "false", 8) for key, value in access.items())
                         + _tag("modifyAllRecords", "false", 8) + _tag("object", name, 8)
                         + _tag("viewAllRecords", "false", 8) + "    </objectPermissions>\n")
        for object_name in sorted(self.schema.objects):
            for field_name in sorted(self.schema.objects[object_name].fields):
                if f"{object_name}.{field_name}" in self.required:
                    continue
                parts.append("    <fieldPermissions>\n" + _tag("editable", "true", 8)
                             + _tag("field", f"{object_name}.{field_name}", 8) + _tag("readable", "true", 8)
                             + "    </fieldPermissions>\n")
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<PermissionSet xmlns="{METADATA_NS}">\n'
                f'{"".join(parts)}</PermissionSet>\n')


def _tag(name: str, value: str, indent: int = 4) -> str:
    return f"{' ' * indent}<{name}>{escape(value)}</{name}>\n"


def build_package(schema: SalesforceSchema, *, api_version: str, missing: dict[str, list[str]] | None = None,
                  create_objects: set[str] | frozenset[str] | None = None,
                  required: dict[str, list[str]] | None = None) -> Package:
    """The package for `missing` fields by object (every declared one when None), custom objects in
    `create_objects` deployed whole (every declared custom object when None). `required`: the declared
    fields, by object, that the org has as required, left out of the permission set's fieldPermissions.

    The whole package (`--export`, which cannot see the org) has no `required`: it declares every field
    itself, and none as required, so each takes field permissions as the permission set gives them."""
    if missing is None:
        missing = {name: list(spec.fields) for name, spec in schema.objects.items()}
    if create_objects is None:
        create_objects = {name for name in schema.objects if name.endswith("__c")}
    objects = {}
    for name, spec in schema.objects.items():
        wanted = missing.get(name, [])
        if not wanted and name not in create_objects:
            continue
        objects[name] = spec.model_copy(update={"fields": {f: spec.fields[f] for f in spec.fields if f in wanted}})
    return Package(objects, schema, api_version, frozenset(create_objects),
                   frozenset(f"{name}.{field}" for name, fields in (required or {}).items() for field in fields))
