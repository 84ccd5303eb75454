"""`connector setup salesforce` (issue 17) against the Salesforce emulator's REST and Metadata APIs,
through the real simple-salesforce over HTTPS: an org with none of the connector's schema is set up
in one command and then takes the whole backlog; a complete org is left alone; a field of another
type is reported, never changed; fields the user cannot see are found and granted."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import yaml
from simple_salesforce import Salesforce

from connector.cli import main
from connector.destinations.salesforce_schema import load_schema
from connector.destinations.salesforce_schema.package import PERMISSION_SET, build_package
from connector.ledger import create_ledger_engine
from connector.ledger.migrate import upgrade
from tests.crm import PROJECT_ROOT, STORY, crm_emulators
from tests.test_worker import drain, ingest, make_settings


@pytest.fixture
def bare(tmp_path, monkeypatch):
    """Both CRMs, Salesforce without any of the connector's objects and fields."""
    with crm_emulators(tmp_path, salesforce_okendo_schema=False) as emulators:
        for name, value in emulators.environ.items():
            monkeypatch.setenv(name, value)
        yield emulators


def config_for(tmp_path, crms, **mappings) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "database": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        "destinations": crms.destinations(),
        "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                               str(PROJECT_ROOT / "mappings" / "salesforce.yaml")], **mappings},
    }))
    return str(path)


def salesforce_deliveries(engine) -> list[tuple[str, str, str]]:
    """(mapping, resource id, state) of every delivery to Salesforce."""
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(
            "SELECT mapping, resource_id, state FROM deliveries WHERE destination = 'salesforce'"))]


def setup(runner, config: str, *args: str):
    return runner.invoke(main, ["--config", config, "setup", "salesforce", *args])


def test_an_empty_org_is_set_up_in_one_command_and_takes_the_whole_backlog(runner, tmp_path, bare):
    config = config_for(tmp_path, bare)
    salesforce = bare.salesforce
    assert runner.invoke(main, ["--config", config, "check", "--remote"]).exit_code == 1

    result = setup(runner, config, "--yes")
    assert result.exit_code == 0, result.output
    for sobject in ("Okendo_Review__c", "Okendo_Loyalty_Transaction__c", "Okendo_Survey_Response__c"):
        assert f"salesforce: missing object {sobject}" in result.output
    assert "salesforce: Contact is missing Okendo_Customer_Id__c, Okendo_Loyalty_Customer_Id__c" in result.output
    assert "salesforce: deployed: CustomField Okendo_Review__c.Okendo_Review_Id__c" in result.output
    assert f"salesforce: assigned {PERMISSION_SET} to {salesforce.username}" in result.output
    assert f"salesforce: done: every declared object and field exists and {salesforce.username} can use it" \
        in result.output
    [deploy] = salesforce.deploys
    assert deploy["status"] == "Succeeded" and not deploy["check_only"]

    checked = runner.invoke(main, ["--config", config, "check", "--remote"])
    assert checked.exit_code == 0, checked.output
    assert "remote salesforce: OK, every object and field the mappings write exists" in checked.output

    # The story's creates and updates (its deletes would leave the other deliveries of each resource
    # stale and the new objects empty): every Salesforce delivery must land, in all three new objects.
    settings = make_settings(f"sqlite:///{tmp_path / 'backlog.db'}", bare)
    engine = create_ledger_engine(settings)
    upgrade(engine)
    for sample in STORY:
        if not sample.endswith(".delete"):
            ingest(engine, sample)
    drain(settings, engine)
    deliveries = salesforce_deliveries(engine)
    engine.dispose()
    # each resource's newest event delivered, through every Salesforce mapping; an older one only
    # superseded by it (stale), never dead, retrying or skipped
    assert {state for _, _, state in deliveries} <= {"delivered", "stale"}, deliveries
    delivered = {(mapping, resource) for mapping, resource, state in deliveries if state == "delivered"}
    assert delivered == {(mapping, resource) for mapping, resource, _ in deliveries}
    assert {mapping for mapping, _ in delivered} >= {"salesforce_review", "salesforce_loyalty_transaction",
                                                      "salesforce_survey_response"}
    [review] = salesforce.records("Okendo_Review__c")
    assert review["Okendo_Review_Id__c"] == "30087cea-f3ab-40c4-9bf9-dd72e8285b6d"
    assert review["Body__c"].startswith("Warm without being bulky") and review["Contact__c"]
    transactions = {r["Okendo_Transaction_Id__c"]: r for r in salesforce.records("Okendo_Loyalty_Transaction__c")}
    assert {r["Type__c"] for r in transactions.values()} == {"Earning", "Redemption", "Adjustment"}
    assert transactions["fccbcf37-cbe0-4741-a177-6e8c3b97724a"]["Points__c"] == 120
    [survey] = salesforce.records("Okendo_Survey_Response__c")
    assert survey["Survey_Name__c"] == "Post-purchase attribution"
    [harriet] = salesforce.find("Contact", Email="harriet.quill@example.com")
    assert harriet["Okendo_Loyalty_Customer_Id__c"] == "a824f9e1-543f-4355-b0c2-f9cbca993795"
    assert harriet["Okendo_Birthday__c"] == "06-18"  # the update's birthday, in a field the deploy created
    assert review["Contact__c"] == harriet["Id"]

    again = setup(runner, config, "--yes")
    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.output
    assert len(salesforce.deploys) == 1


def test_the_exported_package_is_what_the_deploy_sent(runner, tmp_path, bare):
    config = config_for(tmp_path, bare)
    out = tmp_path / "package"
    exported = setup(runner, config, "--export", str(out))
    assert exported.exit_code == 0, exported.output
    assert setup(runner, config, "--yes").exit_code == 0
    [deploy] = bare.salesforce.deploys
    package = build_package(load_schema(), api_version="62.0")
    assert sorted(deploy["components"]) == sorted(package.components())
    files = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert files == package.files()


def test_check_only_validates_and_commits_nothing(runner, tmp_path, bare):
    config = config_for(tmp_path, bare)
    result = setup(runner, config, "--yes", "--check-only")
    assert result.exit_code == 0, result.output
    assert "validation passed; nothing was committed" in result.output
    assert bare.salesforce.deploys[-1]["check_only"]
    assert runner.invoke(main, ["--config", config, "check", "--remote"]).exit_code == 1
    again = setup(runner, config, "--yes")
    assert "salesforce: missing object Okendo_Review__c" in again.output  # still missing: nothing was applied


def test_without_yes_it_asks_and_a_no_changes_nothing(runner, tmp_path, bare):
    config = config_for(tmp_path, bare)
    result = runner.invoke(main, ["--config", config, "setup", "salesforce"], input="n\n")
    assert result.exit_code == 1 and "nothing changed" in result.output
    assert "Deploy 47 components to salesforce?" in result.output
    assert bare.salesforce.deploys == []


def test_a_field_of_another_type_is_reported_and_left_alone(runner, tmp_path, crms):
    salesforce = crms.salesforce
    salesforce.remove_field("Contact", "Okendo_VIP_Tier__c")
    salesforce.add_field("Contact", "Okendo_VIP_Tier__c", type="double", precision=18, scale=0)
    config = config_for(tmp_path, crms)
    result = setup(runner, config, "--yes")
    assert result.exit_code == 1
    assert ("salesforce: left alone: Contact.Okendo_VIP_Tier__c is double in Salesforce, declared Text(80)"
            in result.output)
    assert "nothing to do" in result.output
    assert "1 field differs from the declaration" in result.output
    assert salesforce.deploys == []
    described = [f for f in salesforce._object("Contact").fields.values() if f.name == "Okendo_VIP_Tier__c"]
    assert described[0].type == "double"


def test_fields_the_user_cannot_see_are_reported_apart_and_granted(runner, tmp_path, crms):
    salesforce = crms.salesforce
    for name in ("Okendo_VIP_Tier__c", "Okendo_Birthday__c"):
        salesforce.remove_field("Contact", name)
        salesforce.add_field("Contact", name, length=80 if name == "Okendo_VIP_Tier__c" else 5, visible=False)
    config = config_for(tmp_path, crms)
    checked = runner.invoke(main, ["--config", config, "check", "--remote"])
    assert checked.exit_code == 1
    assert ("salesforce: Contact: fields Okendo_Birthday__c, Okendo_VIP_Tier__c exist but are invisible to the "
            "integration user (field-level security)") in checked.output
    assert "is missing field" not in checked.output

    result = setup(runner, config, "--yes")
    assert result.exit_code == 0, result.output
    assert "Okendo_VIP_Tier__c, Okendo_Birthday__c exist but are invisible to" in result.output
    [deploy] = salesforce.deploys
    assert deploy["components"] == [("PermissionSet", PERMISSION_SET)]  # nothing created, only granted
    assert runner.invoke(main, ["--config", config, "check", "--remote"]).exit_code == 0


def test_a_refused_deploy_names_the_component_and_changes_nothing(runner, tmp_path, bare):
    # The admin's own object already names Contact's related list as the declaration's Okendo_Review__c.Contact__c
    # does: nothing the declaration can know, so Salesforce refuses it.
    salesforce = bare.salesforce
    salesforce.add_object("Product_Review__c", {"Contact__c": {"type": "reference", "reference_to": ["Contact"],
                                                               "child_relationship": "Okendo_Reviews"}})
    config = config_for(tmp_path, bare)
    result = setup(runner, config, "--yes")
    assert result.exit_code == 1
    assert ('salesforce: refused: CustomField Okendo_Review__c.Contact__c: The relationship name "Okendo_Reviews__r" '
            "is already used by custom field Product_Review__c.Contact__c. Please rename existing relationship name."
            in result.output)
    assert result.output.count("refused:") == 1
    assert "nothing was changed (Salesforce rolls a failed deploy back)" in result.output
    assert salesforce.deploys[-1]["status"] == "Failed" and "okendo_review__c" not in salesforce.schema
    assert runner.invoke(main, ["--config", config, "check", "--remote"]).exit_code == 1


def test_what_was_deployed_is_salesforces_list(runner, tmp_path, crms):
    salesforce = crms.salesforce
    salesforce.remove_field("Contact", "Okendo_VIP_Tier__c")
    result = setup(runner, config_for(tmp_path, crms), "--yes")
    assert result.exit_code == 0, result.output
    deployed = [line for line in result.output.splitlines() if ": deployed: " in line]
    assert deployed == ["salesforce: deployed: CustomObject Contact (unchanged)",
                        "salesforce: deployed: CustomField Contact.Okendo_VIP_Tier__c (created)",
                        f"salesforce: deployed: PermissionSet {PERMISSION_SET} (created)"]


def test_a_users_lookup_to_lead_deploys(runner, tmp_path, bare):
    mine = tmp_path / "mine.schema.yaml"
    mine.write_text("objects:\n  Contact:\n    fields:\n      Lead_Source_Ref__c: {type: Lookup, to: Lead}\n")
    result = setup(runner, config_for(tmp_path, bare, salesforce_schema=[str(mine)]), "--yes")
    assert result.exit_code == 0, result.output
    assert "salesforce: deployed: CustomField Contact.Lead_Source_Ref__c (created)" in result.output
    assert bare.salesforce._object("Contact").field("Lead_Source_Ref__c").reference_to == ("Lead",)


def test_a_deploy_still_running_when_the_wait_ends_is_not_called_failed(runner, tmp_path, bare):
    bare.salesforce.deploy_polls_in_progress = 1000
    config = config_for(tmp_path, bare)
    result = setup(runner, config, "--yes", "--wait", "0")
    assert result.exit_code == 1
    [deploy] = bare.salesforce.deploys
    assert (f"salesforce: the deploy {deploy['id']} is still InProgress after 0 s and may yet finish: follow it in "
            "Setup > Deployment Status, then run `connector setup salesforce` again") in result.output
    assert "refused" not in result.output and "nothing was changed" not in result.output
    assert f"assigned {PERMISSION_SET}" not in result.output
    assert setup(runner, config, "--wait", "-1").exit_code == 2


def test_a_user_who_may_not_deploy_is_pointed_at_the_export(runner, tmp_path, bare):
    bare.salesforce.can_modify_metadata = False
    result = setup(runner, config_for(tmp_path, bare), "--yes")
    assert result.exit_code == 1
    assert "Modify Metadata Through Metadata API Functions" in result.output
    assert "connector setup salesforce --export DIR" in result.output


def test_no_credentials_and_two_destinations_say_what_to_do(runner, tmp_path, bare, monkeypatch):
    monkeypatch.delenv("SALESFORCE_ACCESS_TOKEN")
    result = setup(runner, config_for(tmp_path, bare), "--yes")
    assert result.exit_code == 1 and "no Salesforce credentials" in result.output and "--export DIR" in result.output


def test_a_field_of_another_type_hidden_from_the_user_is_reported_too(runner, tmp_path, crms):
    salesforce = crms.salesforce
    salesforce.remove_field("Contact", "Okendo_VIP_Tier__c")
    salesforce.add_field("Contact", "Okendo_VIP_Tier__c", type="double", precision=18, scale=0, visible=False)
    config = config_for(tmp_path, crms)
    result = setup(runner, config, "--yes")
    assert result.exit_code == 1, result.output
    assert ("salesforce: left alone: Contact.Okendo_VIP_Tier__c is Number(18, 0) in Salesforce, declared Text(80)"
            in result.output)
    assert (f"salesforce: Contact: Okendo_VIP_Tier__c exists but is invisible to {salesforce.username} "
            "(field-level security)") in result.output
    assert "done" not in result.output
    assert salesforce._object("Contact").field("Okendo_VIP_Tier__c").type == "double"
    again = setup(runner, config, "--yes")  # granted now, so describe shows it: the same difference
    assert again.exit_code == 1
    assert "salesforce: left alone: Contact.Okendo_VIP_Tier__c is double in Salesforce, declared Text(80)" \
        in again.output


def test_an_object_the_user_cannot_read_gets_its_missing_fields_and_the_grant(runner, tmp_path, crms):
    salesforce = crms.salesforce
    salesforce.remove_object("Okendo_Review__c")
    salesforce.add_object("Okendo_Review__c", {
        "Okendo_Review_Id__c": {"type": "string", "length": 64, "external_id": True, "unique": True},
        "Rating__c": {"type": "double", "precision": 1, "scale": 0}}, visible=False)
    config = config_for(tmp_path, crms)
    result = setup(runner, config, "--yes")
    assert result.exit_code == 0, result.output
    assert f"salesforce: object Okendo_Review__c exists but {salesforce.username} cannot read it" in result.output
    assert "salesforce: Okendo_Review__c is missing Contact__c, Title__c," in result.output
    [deploy] = salesforce.deploys
    deployed = {name for kind, name in deploy["components"] if kind == "CustomField"}
    assert "Okendo_Review__c.Body__c" in deployed and "Okendo_Review__c.Rating__c" not in deployed
    assert ("CustomObject", "Okendo_Review__c") not in deploy["components"]  # the admin's object, left as it is
    assert len(deployed) == 13
    assert runner.invoke(main, ["--config", config, "check", "--remote"]).exit_code == 0


def test_a_custom_object_the_user_sees_gets_its_missing_field_alone(runner, tmp_path, crms):
    salesforce = crms.salesforce
    salesforce.remove_field("Okendo_Review__c", "Reply__c")
    config = config_for(tmp_path, crms)
    result = setup(runner, config, "--yes")
    assert result.exit_code == 0, result.output
    assert "salesforce: Okendo_Review__c is missing Reply__c" in result.output
    [deploy] = salesforce.deploys
    assert sorted(deploy["components"]) == [("CustomField", "Okendo_Review__c.Reply__c"),
                                            ("PermissionSet", PERMISSION_SET)]
    assert salesforce._object("Okendo_Review__c").field("Reply__c").type == "textarea"


def test_when_salesforce_does_not_name_the_user_nothing_is_deployed(runner, tmp_path, bare):
    bare.salesforce.fail(path="^/services/oauth2/userinfo$", status=200, times=5,
                         body={"preferred_username": bare.salesforce.username})
    result = setup(runner, config_for(tmp_path, bare), "--yes")
    assert result.exit_code == 1 and not isinstance(result.exception, RuntimeError), result.output
    assert "Traceback" not in result.output
    assert ("salesforce: Salesforce's userinfo did not say who the connecting user is (no user_id), so the "
            "Okendo_Connector permission set could not be assigned") in result.output
    assert bare.salesforce.deploys == []


def test_missing_picklist_values_and_a_key_that_is_not_unique_are_reported(runner, tmp_path, crms):
    salesforce = crms.salesforce
    salesforce.add_field("Okendo_Loyalty_Transaction__c", "Type__c", type="picklist", length=40,
                         picklist=["Earning", "Redemption"])
    salesforce.add_field("Okendo_Review__c", "Okendo_Review_Id__c", length=64, external_id=True)
    result = setup(runner, config_for(tmp_path, crms), "--yes")
    assert result.exit_code == 1
    assert ("salesforce: left alone: Okendo_Loyalty_Transaction__c.Type__c lacks the picklist value Adjustment: "
            "Salesforce refuses records with it") in result.output
    assert ("salesforce: left alone: Okendo_Review__c.Okendo_Review_Id__c is not Unique: two records could share "
            "one key") in result.output
    assert "2 fields differ from the declaration" in result.output
    assert salesforce.deploys == []


def test_check_only_with_export_is_a_usage_error(runner, tmp_path, bare):
    out = tmp_path / "package"
    result = setup(runner, config_for(tmp_path, bare), "--export", str(out), "--check-only")
    assert result.exit_code == 2
    assert "--check-only validates a deploy to Salesforce; --export deploys nothing" in result.output
    assert "sf project deploy start --dry-run --metadata-dir" in result.output
    assert not out.exists()


def test_exporting_again_leaves_no_stale_component_and_spares_other_files(runner, tmp_path, bare):
    mine = tmp_path / "mine.schema.yaml"
    mine.write_text("objects:\n  Okendo_Quiz__c:\n    label: Okendo Quiz\n    plural_label: Okendo Quizzes\n"
                    "    name_field: {label: Quiz}\n    fields:\n      Score__c: {type: Number, precision: 3, scale: 0}\n")
    out = tmp_path / "package"
    assert setup(runner, config_for(tmp_path, bare, salesforce_schema=[str(mine)]), "--export", str(out)).exit_code == 0
    assert (out / "objects" / "Okendo_Quiz__c.object").is_file()
    again = setup(runner, config_for(tmp_path, bare), "--export", str(out))
    assert again.exit_code == 0, again.output
    assert f"removed {out / 'objects' / 'Okendo_Quiz__c.object'}: no longer in the package" in again.output
    files = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert files == build_package(load_schema(), api_version="62.0").files()
    (out / "notes.txt").write_text("mine")
    refused = setup(runner, config_for(tmp_path, bare), "--export", str(out))
    assert refused.exit_code == 1
    assert f"{out} holds notes.txt, which is not part of a metadata package: export into an empty or new directory" \
        in refused.output
    assert (out / "notes.txt").read_text() == "mine"


def test_a_required_field_in_the_org_is_left_out_of_the_permission_set_and_stays_writable(runner, tmp_path, bare):
    # An admin made Contact.Okendo_VIP_Tier__c before the connector, as a required field. Salesforce refuses
    # fieldPermissions on a required field ("You cannot deploy to a required field") and the whole deploy
    # with them; every user with access to the object reads and edits it anyway. visible=False: no
    # permission set names it, yet the user sees and writes it, as in Salesforce.
    salesforce = bare.salesforce
    salesforce.add_field("Contact", "Okendo_VIP_Tier__c", length=80, required=True, visible=False)
    config = config_for(tmp_path, bare)
    result = setup(runner, config, "--yes")
    assert result.exit_code == 0, result.output
    assert "refused:" not in result.output
    assert (f"salesforce: Contact.Okendo_VIP_Tier__c is required in Salesforce: every user who may edit Contact "
            f"can read and edit it, so the {PERMISSION_SET} permission set leaves it out (Salesforce refuses field "
            "permissions on a required field)") in result.output
    assert "salesforce: done: every declared object and field exists" in result.output
    [deploy] = salesforce.deploys
    assert deploy["status"] == "Succeeded"
    assert ("CustomField", "Contact.Okendo_VIP_Tier__c") not in deploy["components"]  # there already
    granted = salesforce.permission_sets[PERMISSION_SET.lower()].fields
    assert "contact.okendo_vip_tier__c" not in granted and "contact.okendo_birthday__c" in granted

    # the connecting user writes it through the client, with a field the permission set granted
    sf = Salesforce(session_id=bare.environ["SALESFORCE_ACCESS_TOKEN"], instance_url=salesforce.url, version="62.0")
    created = sf.Contact.create({"LastName": "Quill", "Okendo_VIP_Tier__c": "Gold", "Okendo_Birthday__c": "06-18"})
    assert created["success"]
    [quill] = salesforce.find("Contact", LastName="Quill")
    assert quill["Okendo_VIP_Tier__c"] == "Gold" and quill["Okendo_Birthday__c"] == "06-18"
    described = {f["name"]: f for f in sf.Contact.describe()["fields"]}
    assert described["Okendo_VIP_Tier__c"]["nillable"] is False

    again = setup(runner, config, "--yes")
    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.output and len(salesforce.deploys) == 1


def test_a_required_field_of_an_object_the_user_cannot_read_is_known_by_field_definition(runner, tmp_path, crms):
    # describe answers 404 for the object, so only FieldDefinition.IsNillable says the key field is required.
    salesforce = crms.salesforce
    salesforce.remove_object("Okendo_Review__c")
    salesforce.add_object("Okendo_Review__c", {
        "Okendo_Review_Id__c": {"type": "string", "length": 64, "external_id": True, "unique": True, "required": True},
        "Rating__c": {"type": "double", "precision": 1, "scale": 0}}, visible=False)
    config = config_for(tmp_path, crms)
    result = setup(runner, config, "--yes")
    assert result.exit_code == 0, result.output
    assert "salesforce: Okendo_Review__c.Okendo_Review_Id__c is required in Salesforce" in result.output
    assert "Okendo_Review_Id__c exists but is invisible" not in result.output
    granted = salesforce.permission_sets[PERMISSION_SET.lower()].fields
    assert "okendo_review__c.okendo_review_id__c" not in granted and "okendo_review__c.rating__c" in granted
    assert runner.invoke(main, ["--config", config, "check", "--remote"]).exit_code == 0
    sf = Salesforce(session_id=crms.environ["SALESFORCE_ACCESS_TOKEN"], instance_url=salesforce.url, version="62.0")
    assert sf.Okendo_Review__c.upsert("Okendo_Review_Id__c/r-1", {"Rating__c": 5}) == 201
    [review] = salesforce.records("Okendo_Review__c")
    assert review["Okendo_Review_Id__c"] == "r-1" and review["Rating__c"] == 5
