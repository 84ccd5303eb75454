"""What HubSpot must hold for the mappings: the properties they write, checked (`connector check
--remote`, the doctor) and created in the Okendo property group (`connector setup hubspot`)."""

from __future__ import annotations

from connector.destinations.errors import DeliveryError, ErrorClass
from connector.destinations.hubspot_calls import HubSpotCalls
from connector.destinations.hubspot_values import property_type
from connector.mapping.engine import MappingSet


class HubSpotSetup(HubSpotCalls):
    def written_properties(self, mappings: MappingSet) -> dict[str, set[str]]:
        """Every property the mappings write, by object type, plus the source-key property where records are
        known only through the link table."""
        wanted = mappings.written_fields(self.name)
        for mapping in mappings.mappings:
            spec = mapping.spec
            if spec.destination == self.name and spec.key is None and spec.operation in ("upsert", "create") \
                    and self.config.source_key_property:
                wanted[spec.object].add(self.config.source_key_property)
        return wanted

    def missing_properties(self, mappings: MappingSet) -> dict[str, list[str]]:
        missing: dict[str, list[str]] = {}
        for crm_object, names in self.written_properties(mappings).items():
            response = self._call(self._properties.get_all_with_http_info, crm_object)
            existing = {prop.name for prop in getattr(response, "results", None) or []}
            absent = sorted(names - existing)
            if absent:
                missing[crm_object] = absent
        return missing

    def check_remote(self, mappings: MappingSet) -> list[str]:
        try:
            missing = self.missing_properties(mappings)
        except DeliveryError as error:
            if error.error_class == ErrorClass.REAUTHENTICATE:
                return [f"{self.name}: HubSpot refused the access token ({error.message}); check HUBSPOT_ACCESS_TOKEN"]
            return [f"{self.name}: cannot reach HubSpot at {self.config.base_url}: {error}"]
        return [f"{self.name}: {crm_object} is missing propert{'y' if len(names) == 1 else 'ies'} "
                f"{', '.join(names)} (create them with `connector setup hubspot`)"
                for crm_object, names in missing.items()]

    def create_missing_properties(self, mappings: MappingSet) -> list[str]:
        """Create every missing property as text in the Okendo property group; returns what was created."""
        created = []
        group = self.config.property_group
        for crm_object, names in self.missing_properties(mappings).items():
            response = self._call(self._groups.get_all_with_http_info, crm_object)
            if group not in {g.name for g in getattr(response, "results", None) or []}:
                self._call(self._groups.create_with_http_info, crm_object,
                           {"name": group, "label": "Okendo", "displayOrder": -1})
            for name in names:
                kind, field_type = property_type(name)
                self._call(self._properties.create_with_http_info, crm_object, {
                    "name": name, "label": name.replace("_", " ").capitalize(), "type": kind,
                    "fieldType": field_type, "groupName": group,
                })
                created.append(f"{crm_object}.{name}")
        return created
