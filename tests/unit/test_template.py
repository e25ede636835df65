"""template.yaml itself: the role each region deploys, and the rules every resource keeps."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from sandbox.deploy import TemplateRuleError
from tests.support import cfn

# The default topology: `sam deploy --region <region>` deploys the role the region plays.
DEFAULTS = cfn.defaults()
PRIMARY, SECONDARY, SERVICE = (DEFAULTS[p] for p in ("PrimaryRegion", "SecondaryRegion", "ServiceRegion"))
ROLES = {PRIMARY: "primary", SECONDARY: "secondary", SERVICE: "service"}
APP_REGIONS = [PRIMARY, SECONDARY]
OUTSIDE = "eu-west-1"
APP_FUNCTIONS = {
    "ItemsApiFunction",
    "HealthFunction",
    "AppStateFunction",
    "FailoverStepsFunction",
    "LeaseRenewerFunction",
    "ConflictResolverFunction",
    "PhotosApiFunction",
    "TextDetectionFunction",
    "TextNoticesFunction",
    "PhotoReplicationFunction",
    "PhotoRecoveryFunction",
    "PreSignUpFunction",
    "PreAuthenticationFunction",
    "PreTokenGenerationFunction",
}
GLOBAL_TABLES = {"GlobalTable", "ResidencyRegistryTable"}
DOMAIN = {
    "DomainName": "api.example.com",
    "HostedZoneId": "Z0000000EXAMPLE",
    "PrimaryCertificateArn": f"arn:aws:acm:{PRIMARY}:123456789012:certificate/abc",
    "SecondaryCertificateArn": f"arn:aws:acm:{SECONDARY}:123456789012:certificate/def",
}
CUSTOM_DOMAIN_RESOURCES = {"ApiDomain", "ApiDomainMapping", "ApiHealthCheck", "ApiLatencyRecord"}


def of_type(resources: dict[str, Any], kind: str) -> set[str]:
    return {name for name, r in resources.items() if r["Type"] == kind}


def test_the_topology_defaults_to_three_different_regions() -> None:
    assert (PRIMARY, SECONDARY, SERVICE) == ("ca-central-1", "us-west-2", "us-east-2")
    assert "RegionRole" not in cfn.template()["Parameters"], "the region decides the role"


def test_primary_creates_the_global_table_with_a_replica_in_each_app_region() -> None:
    resources = cfn.resources_for(PRIMARY)

    assert of_type(resources, "AWS::DynamoDB::GlobalTable") == GLOBAL_TABLES
    props = resources["GlobalTable"]["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert props["SSESpecification"]["SSEEnabled"] is True
    replicas = props["Replicas"]
    assert [r["Region"] for r in replicas] == [{"Ref": "PrimaryRegion"}, {"Ref": "SecondaryRegion"}]
    assert all(r["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] for r in replicas)
    assert resources["GlobalTable"]["DeletionPolicy"] == "Retain"


@pytest.mark.parametrize("region", APP_REGIONS)
def test_app_regions_get_the_api_and_functions(region: str) -> None:
    resources = cfn.resources_for(region)

    assert of_type(resources, "AWS::Lambda::Function") == APP_FUNCTIONS
    assert of_type(resources, "AWS::ApiGateway::RestApi") == {"Api"}
    assert not CUSTOM_DOMAIN_RESOURCES & set(resources)


def test_secondary_references_the_table_and_does_not_create_it() -> None:
    resources = cfn.resources_for(SECONDARY)

    assert not of_type(resources, "AWS::DynamoDB::GlobalTable")
    env = resources["ItemsApiFunction"]["Properties"]["Environment"]["Variables"]
    assert env["TABLE_NAME"] == {"Ref": "TableName"}


def test_service_region_deploys_a_valid_stack_without_app_resources() -> None:
    resources = cfn.resources_for(SERVICE)

    assert resources, "a stack needs at least one resource"
    assert not of_type(resources, "AWS::Lambda::Function")
    assert not of_type(resources, "AWS::DynamoDB::GlobalTable")
    assert not of_type(resources, "AWS::ApiGateway::RestApi")


# What each role creates: (global tables, functions, REST APIs).
ROLE_RESOURCES = {
    "primary": (GLOBAL_TABLES, APP_FUNCTIONS, {"Api"}),
    "secondary": (set(), APP_FUNCTIONS, {"Api"}),
    "service": (set(), set(), set()),
}


@pytest.mark.parametrize("region", list(ROLES))
def test_each_region_deploys_the_resources_of_its_role_with_no_role_given(region: str) -> None:
    resources = cfn.resources_for(region)

    tables, functions, apis = ROLE_RESOURCES[ROLES[region]]
    assert of_type(resources, "AWS::DynamoDB::GlobalTable") == tables
    assert of_type(resources, "AWS::Lambda::Function") == functions
    assert of_type(resources, "AWS::ApiGateway::RestApi") == apis
    assert "RegionConfigParameter" in resources
    # Every region keeps its own permits, lease grant and journal (the service region: its
    # vote); each app region its own photos table.
    photos = set() if ROLES[region] == "service" else {"PhotosTable"}
    assert of_type(resources, "AWS::DynamoDB::Table") == {"ControlTable", *photos}


@pytest.mark.parametrize("region", list(ROLES))
def test_functions_configuration_and_outputs_name_the_role_the_region_plays(region: str) -> None:
    role = ROLES[region]
    template = cfn.transformed()
    resources = cfn.resources_for(region)

    assert cfn.resolve(template["Outputs"]["RegionRole"]["Value"], region) == role
    config = json.loads(cfn.resolve(resources["RegionConfigParameter"]["Properties"]["Value"], region))
    assert (config["role"], config["region"]) == (role, region)
    for name in of_type(resources, "AWS::Lambda::Function"):
        variables = resources[name]["Properties"]["Environment"]["Variables"]
        assert cfn.resolve(variables["REGION_ROLE"], region) == role, name


def test_a_region_outside_the_topology_is_refused_before_anything_is_created() -> None:
    assert all(cfn.rule_failures(region) == [] for region in ROLES)

    (failure,) = cfn.rule_failures(OUTSIDE)
    assert failure.startswith("RegionInTopology:")
    for named in (PRIMARY, SECONDARY, SERVICE, "PrimaryRegion", "SecondaryRegion", "ServiceRegion"):
        assert named in failure
    with pytest.raises(TemplateRuleError, match=f"{OUTSIDE}: .*RegionInTopology"):
        cfn.resources_for(OUTSIDE)


def test_the_topology_is_its_three_region_parameters() -> None:
    moved = {"PrimaryRegion": OUTSIDE}

    assert of_type(cfn.resources_for(OUTSIDE, **moved), "AWS::DynamoDB::GlobalTable") == GLOBAL_TABLES
    assert cfn.resolve(cfn.transformed()["Outputs"]["RegionRole"]["Value"], OUTSIDE, **moved) == "primary"
    with pytest.raises(TemplateRuleError, match="RegionInTopology"):
        cfn.resources_for(PRIMARY, **moved)


def test_a_topology_that_names_a_region_twice_is_refused() -> None:
    (failure,) = cfn.rule_failures(PRIMARY, ServiceRegion=PRIMARY)

    assert failure.startswith("DistinctRegions:")


@pytest.mark.parametrize("region", APP_REGIONS)
def test_custom_domain_adds_health_check_and_latency_record(region: str) -> None:
    resources = cfn.resources_for(region, **DOMAIN)

    assert set(resources) >= CUSTOM_DOMAIN_RESOURCES
    check = resources["ApiHealthCheck"]["Properties"]["HealthCheckConfig"]
    assert check["ResourcePath"] == "/v1/health"
    assert (check["RequestInterval"], check["FailureThreshold"]) == (10, 3)
    record = resources["ApiLatencyRecord"]["Properties"]
    assert record["Region"] == {"Ref": "AWS::Region"}
    assert record["HealthCheckId"] == {"Ref": "ApiHealthCheck"}
    certificate = cfn.resolve(
        resources["ApiDomain"]["Properties"]["RegionalCertificateArn"], region, **DOMAIN
    )
    assert certificate.startswith(f"arn:aws:acm:{region}:"), "each region uses its own certificate"


def test_custom_domain_needs_every_input_and_an_app_region() -> None:
    partial = {**DOMAIN, "PrimaryCertificateArn": ""}
    assert not CUSTOM_DOMAIN_RESOURCES & set(cfn.resources_for(PRIMARY, **partial))
    assert set(cfn.resources_for(SECONDARY, **partial)) >= CUSTOM_DOMAIN_RESOURCES
    assert not CUSTOM_DOMAIN_RESOURCES & set(cfn.resources_for(SECONDARY, **{**DOMAIN, "HostedZoneId": ""}))
    assert not CUSTOM_DOMAIN_RESOURCES & set(cfn.resources_for(SERVICE, **DOMAIN))


def test_functions_run_python313_on_arm64_with_tracing_and_retained_logs() -> None:
    resources = cfn.resources_for(PRIMARY)
    log_groups = {
        json.dumps(r["Properties"].get("LogGroupName")): r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Logs::LogGroup"
    }
    for name in APP_FUNCTIONS:
        props = resources[name]["Properties"]
        assert props["Runtime"] == "python3.13"
        assert props["Architectures"] == ["arm64"]
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["Handler"] == "app.lambda_handler"
        assert len(props["Layers"]) == 1
        group = json.dumps({"Fn::Sub": f"/aws/lambda/${{{name}}}"})
        assert log_groups[group]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def _statements(resources: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, resource in resources.items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            found += [(name, s) for s in policy["PolicyDocument"]["Statement"]]
    return found


# Actions AWS offers no resource-level permission for: "*" is their only form.
NO_RESOURCE_LEVEL = {
    "cloudwatch:GetMetricStatistics",
    "cloudwatch:PutMetricData",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    # Rekognition's text detection acts on S3 objects, not on a Rekognition resource.
    "rekognition:DetectText",
    "rekognition:StartTextDetection",
    "rekognition:GetTextDetection",
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("region", list(ROLES))
def test_no_iam_statement_grants_every_resource_where_an_arn_exists(region: str) -> None:
    statements = _statements(cfn.resources_for(region))
    for role_name, statement in statements:
        actions = _as_list(statement["Action"])
        if "*" in _as_list(statement["Resource"]):
            assert set(actions) <= NO_RESOURCE_LEVEL, (role_name, statement)
        assert not any(a == "*" or a.endswith(":*") for a in actions), (role_name, statement)
        assert statement["Effect"] == "Allow"
    for name, resource in cfn.resources_for(region).items():
        if resource["Type"] == "AWS::IAM::Role":
            managed = resource["Properties"].get("ManagedPolicyArns", [])
            assert not any("FullAccess" in json.dumps(arn) for arn in managed), name


def test_every_api_route_has_sample_events_and_every_event_matches_a_route() -> None:
    resources = cfn.template()["Resources"]
    routes = set()
    for name, resource in resources.items():
        if resource["Type"] == "AWS::Serverless::Function":
            for event in resource["Properties"].get("Events", {}).values():
                if event["Type"] == "Api":
                    routes.add((name, event["Properties"]["Method"].upper(), event["Properties"]["Path"]))

    folders = {
        "ItemsApiFunction": "items_api",
        "HealthFunction": "health",
        "AppStateFunction": "app_state",
        "PhotosApiFunction": "photos_api",
    }
    covered = set()
    for function, folder in folders.items():
        for path in sorted((cfn.EVENTS / folder).glob("*.json")):
            event = json.loads(path.read_text())
            route = (function, event["httpMethod"], event["resource"])
            if path.stem.startswith("unknown-"):
                assert route not in routes, path
                continue
            assert route in routes, path
            covered.add(route)
    assert covered == routes


def _referenced(value: Any) -> set[str]:
    """The logical ids a template value names through Ref, Fn::GetAtt or Fn::Sub."""
    if isinstance(value, list):
        return set().union(*(_referenced(v) for v in value)) if value else set()
    if not isinstance(value, dict):
        return set()
    found: set[str] = set()
    if isinstance(value.get("Ref"), str):
        found.add(value["Ref"])
    if "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        found.add(target[0] if isinstance(target, list) else target.split(".")[0])
    if "Fn::Sub" in value:
        text = value["Fn::Sub"][0] if isinstance(value["Fn::Sub"], list) else value["Fn::Sub"]
        found |= {name.split(".")[0] for name in re.findall(r"\$\{([\w:.]+)\}", text)}
    return found | set().union(*(_referenced(v) for v in value.values()))


def _waits_for(resources: dict[str, Any], name: str, region: str, **overrides: str) -> set[str]:
    """Every resource CloudFormation creates before `name`: DependsOn and references
    (anywhere in the resource, Metadata included), conditions resolved, transitively."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        resource = cfn.resolve(resources[todo.pop()], region, **overrides)
        depends = resource.get("DependsOn", [])
        for found in (_referenced(resource) | set(_as_list(depends))) & set(resources):
            if found not in seen:
                seen.add(found)
                todo.append(found)
    return seen


@pytest.mark.parametrize("choice", ["create", "existing"])
@pytest.mark.parametrize("region", list(ROLES))
def test_access_logging_is_only_deployed_with_a_cloudwatch_role_setting(region: str, choice: str) -> None:
    # API Gateway refuses a stage with access logging unless the region's account
    # settings name a CloudWatch Logs role: with `create` the stack sets one first.
    resources = cfn.resources_for(region, ApiGatewayCloudWatchRole=choice)
    logging_stages = {
        name
        for name in of_type(resources, "AWS::ApiGateway::Stage")
        if "AccessLogSetting" in resources[name]["Properties"]
    }
    accounts = of_type(resources, "AWS::ApiGateway::Account")

    if ROLES[region] == "service":
        assert not logging_stages and not accounts and "ApiGatewayLoggingRole" not in resources
        return
    assert logging_stages
    if choice == "existing":
        assert not accounts and "ApiGatewayLoggingRole" not in resources
        return
    assert accounts == {"ApiGatewayAccount"}
    assert resources["ApiGatewayAccount"]["Condition"] == "CreatesApiGatewayCloudWatchRole"
    for name in [*logging_stages, "Api"]:
        assert "ApiGatewayAccount" in _waits_for(resources, name, region, ApiGatewayCloudWatchRole=choice), (
            name
        )
    role_arn = resources["ApiGatewayAccount"]["Properties"]["CloudWatchRoleArn"]
    assert role_arn == {"Fn::GetAtt": ["ApiGatewayLoggingRole", "Arn"]}
    role = resources["ApiGatewayLoggingRole"]
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "apigateway.amazonaws.com"}
    assert role["Properties"]["ManagedPolicyArns"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"}
    ]
    # Every REST API in the region logs through the setting: deleting the stack keeps it.
    assert {resources[n].get("DeletionPolicy") for n in ("ApiGatewayLoggingRole", "ApiGatewayAccount")} == {
        "Retain"
    }


def test_a_fresh_region_gets_the_cloudwatch_role_by_default() -> None:
    parameter = cfn.template()["Parameters"]["ApiGatewayCloudWatchRole"]

    assert parameter["Default"] == "create"
    assert parameter["AllowedValues"] == ["create", "existing"]


@pytest.mark.parametrize(
    ("overrides", "service_has", "app_has"),
    [
        # The default: both capabilities in the service region, through the bridge.
        ({}, {"StagingBucket", "TextNoticeTopic", "RekognitionNoticeRole", "UndeliveredNoticeQueue"}, set()),
        # Videos at home: the app region gets its own topic and role; images still staged.
        (
            {"VideoTextDetection": "home"},
            {"StagingBucket"},
            {"HomeTextNoticeTopic", "HomeRekognitionNoticeRole", "HomeTextNoticeSubscription"},
        ),
        # Both at home: nothing of the bridge in the service region.
        (
            {"VideoTextDetection": "home", "ImageTextDetection": "home"},
            set(),
            {"HomeTextNoticeTopic", "HomeRekognitionNoticeRole", "HomeTextNoticeSubscription"},
        ),
    ],
)
def test_where_text_detection_runs_is_configuration(
    overrides: dict[str, str], service_has: set[str], app_has: set[str]
) -> None:
    bridge = {
        "StagingBucket",
        "TextNoticeTopic",
        "RekognitionNoticeRole",
        "UndeliveredNoticeQueue",
        "PrimaryTextNoticeSubscription",
        "HomeTextNoticeTopic",
        "HomeRekognitionNoticeRole",
        "HomeTextNoticeSubscription",
    }
    defaults = cfn.defaults()
    service = set(cfn.resources_for(defaults["ServiceRegion"], **overrides)) & bridge
    app = set(cfn.resources_for(defaults["PrimaryRegion"], **overrides)) & bridge
    assert service_has <= service and not (service - service_has - {"PrimaryTextNoticeSubscription"})
    assert app == app_has
    function = cfn.resources_for(defaults["PrimaryRegion"], **overrides)["TextDetectionFunction"]
    variables = cfn.resolve(
        function["Properties"]["Environment"]["Variables"], defaults["PrimaryRegion"], **overrides
    )
    topic_region = (
        defaults["PrimaryRegion"]
        if overrides.get("VideoTextDetection") == "home"
        else defaults["ServiceRegion"]
    )
    assert f":sns:{topic_region}:" in variables["NOTICE_TOPIC_ARN"]
    assert variables["IMAGE_TEXT_AT"] == overrides.get("ImageTextDetection", "service")


# Sign-in and residency -----------------------------------------------------------------


@pytest.mark.parametrize("region", APP_REGIONS)
def test_the_user_pool_calls_the_three_triggers_and_no_one_can_write_their_region(region: str) -> None:
    resources = cfn.resources_for(region)
    pool = resources["UserPool"]["Properties"]
    client = resources["UserPoolClient"]["Properties"]

    assert pool["LambdaConfig"] == {
        "PreSignUp": {"Fn::GetAtt": ["PreSignUpFunction", "Arn"]},
        "PreAuthentication": {"Fn::GetAtt": ["PreAuthenticationFunction", "Arn"]},
        "PreTokenGeneration": {"Fn::GetAtt": ["PreTokenGenerationFunction", "Arn"]},
    }
    schema = {a["Name"]: a for a in pool["Schema"]}
    assert schema["region"]["Mutable"] is False and schema["country"]["Mutable"] is False
    assert "custom:region" not in client["WriteAttributes"]
    assert "custom:country" in client["WriteAttributes"]  # declared once, at sign-up
    assert pool["UsernameConfiguration"] == {"CaseSensitive": False}  # the registry keys lower case
    for trigger in ("PreSignUp", "PreAuthentication", "PreTokenGeneration"):
        permission = resources[f"{trigger}FunctionPermission"]["Properties"]
        assert permission["Principal"] == "cognito-idp.amazonaws.com"
        assert permission["SourceArn"] == {"Fn::GetAtt": ["UserPool", "Arn"]}
        assert resources[f"{trigger}Function"]["Properties"]["Timeout"] <= 5  # Cognito waits 5 s


def test_every_data_route_takes_the_pools_id_token_and_health_and_state_are_open() -> None:
    body = cfn.resolve(cfn.resources_for(PRIMARY)["Api"]["Properties"]["Body"], PRIMARY)
    schemes = body["components"]["securitySchemes"]
    assert schemes["UserPoolAuthorizer"]["x-amazon-apigateway-authtype"] == "cognito_user_pools"
    open_paths, guarded_paths = set(), set()
    for path, methods in body["paths"].items():
        for method, operation in methods.items():
            if not isinstance(operation, dict):
                continue
            security = operation.get("security")
            if security != [{"NONE": []}]:  # SAM's spelling of `Authorizer: NONE`
                assert security == [{"UserPoolAuthorizer": []}], (path, method)  # no scopes: ID tokens
                guarded_paths.add(f"{method.upper()} {path}")
            else:
                open_paths.add(f"{method.upper()} {path}")
    assert open_paths == {"GET /health", "GET /state"}
    assert {"POST /items", "GET /items/{id}", "POST /photos", "GET /photos"} <= guarded_paths


def test_the_default_residency_policy_pins_ca_and_lets_us_fail_over() -> None:
    from multiregion import residency

    env = cfn.resources_for(PRIMARY)["ItemsApiFunction"]["Properties"]["Environment"]["Variables"]
    policy = residency.parse(cfn.resolve(env["RESIDENCY_POLICY"], PRIMARY))
    assert policy.named("CA").regions == (PRIMARY,) and policy.named("CA").bridge is False
    assert policy.named("US").regions == (SECONDARY, PRIMARY) and policy.named("US").bridge is True
    assert policy.for_country("FR").name == "US"
    mine = '{"jurisdictions": [{"name": "X", "regions": ["eu-west-1"]}]}'
    custom = cfn.resources_for(PRIMARY, ResidencyPolicy=mine)["ItemsApiFunction"]["Properties"]
    given = cfn.resolve(custom["Environment"]["Variables"]["RESIDENCY_POLICY"], PRIMARY, ResidencyPolicy=mine)
    assert residency.parse(given).named("X").home == "eu-west-1"


def test_bucket_replication_copies_uploads_and_never_resident_objects() -> None:
    """Objects of a jurisdiction that may not be in the other app region are put under
    resident/ (multiregion.photos.uploads): the replication rule and its role see uploads/ only."""
    resources = cfn.resources_for(PRIMARY)
    config = cfn.resolve(resources["PhotosBucket"]["Properties"]["ReplicationConfiguration"], PRIMARY)
    assert [rule["Filter"] for rule in config["Rules"]] == [{"Prefix": "uploads/"}]
    role = json.dumps(cfn.resolve(resources["PhotosReplicationRole"]["Properties"], PRIMARY))
    assert "uploads/" in role and "resident" not in role


GEO = {
    **DOMAIN,
    "GeoDomainName": "home.api.example.com",
    "PrimaryGeoCountry": "CA",
    "SecondaryGeoCountry": "US",
}


@pytest.mark.parametrize(("region", "country"), [(PRIMARY, "CA"), (SECONDARY, "US")])
def test_geolocation_records_send_each_regions_country_home_beside_the_latency_records(
    region: str, country: str
) -> None:
    resources = cfn.resources_for(region, **GEO)
    record = cfn.resolve(resources["ApiGeoRecord"]["Properties"], region, **GEO)

    assert set(resources) >= CUSTOM_DOMAIN_RESOURCES  # the latency records stay
    assert record["Name"] == "home.api.example.com"
    assert record["GeoLocation"] == {"CountryCode": country}
    assert record["HealthCheckId"] == {"Ref": "ApiHealthCheck"}  # an unhealthy home falls back
    assert record["AliasTarget"]["DNSName"] == {"Fn::GetAtt": ["ApiGeoDomain", "RegionalDomainName"]}
    defaults = [
        n
        for n, r in resources.items()
        if r["Type"] == "AWS::Route53::RecordSet" and n == "ApiGeoDefaultRecord"
    ]
    assert bool(defaults) is (region == PRIMARY)  # one default per name
    if defaults:
        default = cfn.resolve(resources["ApiGeoDefaultRecord"]["Properties"], region, **GEO)
        assert default["GeoLocation"] == {"CountryCode": "*"}
        assert default["AliasTarget"]["DNSName"] == "api.example.com"  # the latency records


def test_without_a_geo_name_or_country_there_is_no_geolocation_record() -> None:
    assert "ApiGeoRecord" not in cfn.resources_for(PRIMARY, **DOMAIN)
    assert "ApiGeoRecord" not in cfn.resources_for(PRIMARY, **{**GEO, "PrimaryGeoCountry": ""})
    assert "ApiGeoDomain" not in cfn.resources_for(
        PRIMARY, **{k: v for k, v in GEO.items() if k != "HostedZoneId"}
    )
