"""The optional Event Grid topic for completion events (infra/modules/run-events-topic.bicep), read offline:
off by default, CloudEvents and Entra only, the app identity EventGrid Data Sender on that topic alone."""

from __future__ import annotations

from testkit.bicep import config, evaluate, parse
from tests.test_infra import private_endpoint_targets

EVENT_GRID_DATA_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"


def test_the_topic_is_off_by_default_and_the_app_sends_there_with_its_identity_when_on():
    main = parse("main.bicep")
    assert main["parameters"]["runEventsTopic"]["default"] is False
    assert {"type": "secure"} in main["parameters"]["runEventsWebhook"]["decorators"]  # a URL may carry a code
    module = main["modules"]["runEventsTopicModule"]
    assert module["detail"]["path"] == "modules/run-events-topic.bicep"
    assert module["config"]["condition"] == "runEventsTopic"
    assert module["config"]["config"]["params"]["principalId"]["operator"]["operands"]["operand_1"] == "identity"
    settings = main["modules"]["functionApp"]["config"]["params"]["appSettings"]
    webhook = settings["RUN_EVENTS_WEBHOOK"]["operator"]["operands"]
    assert webhook["condition"] == "runEventsTopic" and webhook["false_value"] == "runEventsWebhook"
    assert webhook["true_value"]["operator"]["operands"]["operand_1"] == "runEventsTopicModule"
    audience = settings["RUN_EVENTS_WEBHOOK_AUDIENCE"]["operator"]["operands"]
    assert (audience["true_value"], audience["false_value"]) == ("https://eventgrid.azure.net", "")


def test_the_topic_takes_cloudevents_and_entra_tokens_only_and_the_role_is_scoped_to_it():
    topic = config("modules/run-events-topic.bicep", "topic")["properties"]
    assert topic["inputSchema"] == "CloudEventSchemaV1_0" and topic["disableLocalAuth"] is True
    module = parse("modules/run-events-topic.bicep")
    assert module["variables"]["eventGridDataSender"]["value"] == EVENT_GRID_DATA_SENDER
    role = module["resources"]["senderRole"]["config"]
    assert role["scope"] == "topic" and role["properties"]["principalType"] == "ServicePrincipal"


def test_with_the_private_network_the_topic_is_reached_through_its_private_endpoint_only():
    topic = config("modules/run-events-topic.bicep", "topic")["properties"]
    assert evaluate(topic["publicNetworkAccess"], {"vnetEnabled": False}) == "Enabled"
    assert evaluate(topic["publicNetworkAccess"], {"vnetEnabled": True}) == "Disabled"
    assert topic["inboundIpRules"] == []
    main = parse("main.bicep")
    assert main["modules"]["runEventsTopicModule"]["config"]["config"]["params"]["vnetEnabled"] == "vnetEnabled"
    assert main["modules"]["runEventsTopicModule"]["config"]["config"]["params"]["name"] == "runEventsTopicName"
    # An endpoint on the topic's one sub-resource, under the name the module deploys it as, only with both on.
    for queue_accounts in (0, 2):
        targets = private_endpoint_targets(True, queue_accounts, topic=True)
        topic_endpoint = {"name": "runEventsTopicName", "type": "Microsoft.EventGrid/topics", "groupIds": ["topic"]}
        assert targets[-1] == topic_endpoint
        assert "runEventsTopicName" not in str(private_endpoint_targets(True, queue_accounts, topic=False))
    network = parse("modules/network.bicep")
    assert network["variables"]["zoneNames"]["value"]["topic"] == "privatelink.eventgrid.azure.net"
    assert "topic" in network["outputs"]["dnsZoneIds"]["value"]
