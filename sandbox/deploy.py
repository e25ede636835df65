"""Deploy template.yaml into the sandbox's regions, the way `sam deploy --region` would.

For each region of the topology (primary, then secondary, then service), with the
parameters of samconfig.toml's default environment: check the template's Rules, package
the code into the region's artifact bucket, transform SAM to CloudFormation with
aws-sam-translator, create the stack with moto's CloudFormation. The template decides the
region's role from the region; no role is passed. Where moto falls short, a named adapter
below closes the gap; each says what AWS does that moto doesn't.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import re
import secrets
import shlex
import time
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from sandbox import cognito
from sandbox.authorizer import CognitoAuthorizer, route_authorizers
from sandbox.cloud import ACCOUNT_ID, Cloud
from sandbox.functions import FunctionSpec, Runtime
from sandbox.replication import ReplicationRule
from sandbox.schedules import ScheduledRule, ScheduleError, scheduled_rule

logger = logging.getLogger(__name__)

# Which template parameter names the region of each role (template.yaml's topology).
TOPOLOGY = {"primary": "PrimaryRegion", "secondary": "SecondaryRegion", "service": "ServiceRegion"}
API_RESOURCE_TYPES = {
    "AWS::ApiGateway::RestApi",
    "AWS::ApiGateway::Deployment",
    "AWS::ApiGateway::Stage",
    "AWS::ApiGateway::DomainName",
    "AWS::ApiGateway::BasePathMapping",
    "AWS::ApiGateway::Account",  # applied through the API (`_set_account_settings`)
}
ACCESS_LOGGING_REFUSED = "CloudWatch Logs role ARN must be set in account settings to enable logging"


@dataclass
class Environment:
    """One region's deploy: the role its region plays in the topology, and the parameters
    it deploys with (the same in every region)."""

    role: str
    region: str
    stack_name: str
    parameters: dict[str, str]


@dataclass
class Route:
    method: str
    path: str  # API Gateway path template, e.g. /items/{id}
    logical_id: str
    # The method's COGNITO_USER_POOLS authorizer, from the OpenAPI body (sandbox.authorizer).
    authorizer: CognitoAuthorizer | None = None


@dataclass
class Deployment:
    environment: Environment
    outputs: dict[str, str] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    seconds: float = 0.0
    schedules: list[ScheduledRule] = field(default_factory=list)  # fired by sandbox.schedules
    user_pools: dict[str, cognito.UserPool] = field(default_factory=dict)  # by logical id (sandbox.cognito)
    global_tables: list[str] = field(default_factory=list)  # created by this deploy (the primary's)

    @property
    def is_app_region(self) -> bool:
        return self.environment.role in ("primary", "secondary")


def parse_parameter_overrides(raw: str | list[str]) -> dict[str, str]:
    """samconfig.toml's `parameter_overrides`: `Key=Value` pairs, in one string (split as
    a shell would, so values may be quoted) or a list."""
    parameters = {}
    for pair in raw if isinstance(raw, list) else shlex.split(raw):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"parameter_overrides: expected Key=Value, got {pair!r}")
        parameters[key] = value
    return parameters


def template_defaults(template: Path) -> dict[str, str]:
    parameters = yaml_parse(template.read_text()).get("Parameters", {})
    return {name: str(p["Default"]) for name, p in parameters.items() if "Default" in p}


def read_samconfig(
    path: Path, overrides: dict[str, str] | None = None, template: Path | None = None
) -> list[Environment]:
    """What `sam deploy --region <region>` deploys in each region of the topology: the
    default environment's stack and parameters, `overrides` on top, and the region each
    role's parameter names (PrimaryRegion...; the template's default when none is given)."""
    config = tomllib.loads(path.read_text()).get("default", {})
    deploy = config.get("deploy", {}).get("parameters", {})
    stack = deploy.get("stack_name") or config.get("global", {}).get("parameters", {}).get("stack_name")
    if not stack:
        raise ValueError(f"{path}: the default environment has no stack_name")
    parameters = {**parse_parameter_overrides(deploy.get("parameter_overrides", "")), **(overrides or {})}
    defaults = template_defaults(template or path.with_name("template.yaml"))
    return [
        Environment(role, parameters.get(name) or defaults[name], stack, dict(parameters))
        for role, name in TOPOLOGY.items()
    ]


def _zip_dir(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(folder))
    return buffer.getvalue()


def _references(value: Any, names: set[str]) -> bool:
    text = json.dumps(value)
    return any(
        re.search(rf'"{re.escape(n)}(\.[A-Za-z]+)?"|\$\{{{re.escape(n)}(\.[A-Za-z]+)?\}}', text)
        for n in names
    )


class Deployer:
    def __init__(self, root: Path, cloud: Cloud, runtime: Runtime):
        self.root = root
        self.cloud = cloud
        self.runtime = runtime
        self.sam = yaml_parse((root / "template.yaml").read_text())
        self._residency_key = secrets.token_urlsafe(48)  # one per topology: see _put_residency_key
        self._packaged: dict[str, dict[str, Any]] = {}  # region -> the template as packaged there

    # --- SAM → CloudFormation ----------------------------------------------------------

    def _package(self, env: Environment) -> dict[str, Any]:
        """Code into the region's artifact bucket, as `sam package` does (moto stores it)."""
        sam = copy.deepcopy(self.sam)
        s3 = self.cloud.client("s3", env.region)
        bucket = f"sandbox-artifacts-{env.region}"
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": env.region})
        for name, resource in sam["Resources"].items():
            props = resource.get("Properties", {})
            for field_name in ("CodeUri", "ContentUri"):
                if isinstance(props.get(field_name), str):
                    s3.put_object(
                        Bucket=bucket, Key=f"{name}.zip", Body=_zip_dir(self.root / props[field_name])
                    )
                    props[field_name] = f"s3://{bucket}/{name}.zip"
            if isinstance(props.get("DefinitionUri"), str):
                props["Definition"] = json.loads((self.root / props.pop("DefinitionUri")).read_text())
        return sam

    def _transform(self, sam: dict[str, Any], env: Environment) -> dict[str, Any]:
        class NoManagedPolicies:
            def load(self) -> dict[str, str]:
                return {}

        os.environ.setdefault("AWS_DEFAULT_REGION", env.region)
        # As CloudFormation runs the transform: with the stack's parameter values (SAM
        # resolves some Refs itself, e.g. in an authorizer's UserPoolArn).
        return transform(sam, {**env.parameters, "AWS::Region": env.region}, NoManagedPolicies())

    # --- Adapters: what moto's CloudFormation does not do ------------------------------------

    def _create_global_table(self, cfn: dict[str, Any], env: Environment) -> list[str]:
        """AWS::DynamoDB::GlobalTable: moto skips the type. Create a table with the same
        definition in every replica region; sandbox.replication replicates between them.
        Returns the names of the global tables created."""
        created = []
        for name, resource in cfn["Resources"].items():
            if resource["Type"] != "AWS::DynamoDB::GlobalTable" or not self._condition_holds(resource, env):
                continue
            props = resource["Properties"]
            table = self._evaluate(props["TableName"], env)  # a Ref, or a Fn::Sub of one
            for replica in props["Replicas"]:
                region = self._resolve(replica["Region"], env)
                self.cloud.client("dynamodb", region).create_table(**replica_table_definition(props, table))
                logger.info("global table %s: replica in %s (%s)", table, region, name)
            created.append(table)
        return created

    def _put_residency_key(self, cfn: dict[str, Any], env: Environment) -> None:
        """What the operator does before the first deploy (CloudFormation cannot create a
        SecureString): put the residency registry's HMAC key in each app region, the same
        value everywhere. The sandbox draws one random key per deploy of the topology."""
        app_region = env.role in ("primary", "secondary")
        if "ResidencyKeyParameter" not in cfn.get("Parameters", {}) or not app_region:
            return
        name = self._resolve({"Ref": "ResidencyKeyParameter"}, env)
        self.cloud.client("ssm", env.region).put_parameter(
            Name=name, Type="SecureString", Value=self._residency_key, Overwrite=True
        )

    def _check_access_logging(self, cfn: dict[str, Any], env: Environment) -> None:
        """API Gateway refuses to create a stage with access logging in a region whose
        account settings name no CloudWatch Logs role. The sandbox serves the stages
        itself, so it refuses such a deploy here, before the stack is created."""
        holding = [(n, r) for n, r in cfn["Resources"].items() if self._condition_holds(r, env)]
        logging_stages = sorted(
            n
            for n, r in holding
            if r["Type"] == "AWS::ApiGateway::Stage" and "AccessLogSetting" in r.get("Properties", {})
        )
        if not logging_stages or any(r["Type"] == "AWS::ApiGateway::Account" for _, r in holding):
            return
        if not self.cloud.client("apigateway", env.region).get_account().get("cloudwatchRoleArn"):
            raise AccessLoggingError(
                f"stack {env.stack_name} in {env.region}: {', '.join(logging_stages)}: "
                f"{ACCESS_LOGGING_REFUSED}"
            )

    def _set_account_settings(
        self, cfn: dict[str, Any], env: Environment, resources: dict[str, dict[str, str]]
    ) -> None:
        """AWS::ApiGateway::Account: moto's CloudFormation skips the type. Set the region's
        CloudWatch Logs role through the API, with the role the stack created."""
        for resource in cfn["Resources"].values():
            if resource["Type"] != "AWS::ApiGateway::Account" or not self._condition_holds(resource, env):
                continue
            role = self._value(resource["Properties"]["CloudWatchRoleArn"], env, resources)
            self.cloud.client("apigateway", env.region).update_account(
                patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": role}]
            )

    def _create_user_pools(self, cfn: dict[str, Any], env: Environment) -> dict[str, cognito.UserPool]:
        """AWS::Cognito::UserPool and UserPoolClient: moto's CloudFormation skips them.
        Create them through the API before the stack (sandbox.cognito); their triggers are
        set once the functions exist (`cognito.set_triggers`)."""
        return cognito.create_pools(
            cfn["Resources"],
            env.region,
            lambda resource: self._condition_holds(resource, env),
            lambda value: self._evaluate(value, env),
            self.cloud.client("cognito-idp", env.region),
        )

    def _resolve(self, value: Any, env: Environment) -> str:
        if isinstance(value, dict) and "Ref" in value:
            ref = value["Ref"]
            if ref == "AWS::Region":
                return env.region
            return env.parameters.get(ref) or str(self.sam["Parameters"][ref].get("Default", ""))
        return str(value)

    def _strip(self, cfn: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Take out what the sandbox provides itself, with everything that refers to it:
        - API Gateway: served by sandbox.apigateway from the functions' Api events (moto
          ignores the OpenAPI body SAM generates, so its REST API would have no methods);
        - state machines: moto's CloudFormation puts them where its interpreter cannot run
          them and ignores DefinitionSubstitutions; they are created through the API;
        - the global table (created by `_create_global_table`);
        - Cognito pools and clients (created by `_create_user_pools`, references swapped)."""
        cfn = copy.deepcopy(cfn)
        removed = {
            name
            for name, r in cfn["Resources"].items()
            if r["Type"] in API_RESOURCE_TYPES
            or r["Type"] in ("AWS::StepFunctions::StateMachine", "AWS::DynamoDB::GlobalTable")
            or r["Type"] in cognito.COGNITO_TYPES
        }
        machines = {
            n: cfn["Resources"][n] for n in removed if cfn["Resources"][n]["Type"].endswith("StateMachine")
        }
        changed = True
        while changed:  # whatever refers to a removed resource goes too (permissions, mappings)
            changed = False
            for name, resource in list(cfn["Resources"].items()):
                if (
                    name not in removed
                    and _references(resource, removed)
                    and resource["Type"]
                    not in (
                        "AWS::Lambda::Function",
                        "AWS::IAM::Role",
                    )
                ):
                    removed.add(name)
                    changed = True
        # EventBridge rules that start a state machine are made once the machine exists.
        self._machine_rules = {
            n: cfn["Resources"][n] for n in removed if cfn["Resources"][n]["Type"] == "AWS::Events::Rule"
        }
        for name in removed:
            cfn["Resources"].pop(name, None)
        cfn["Outputs"] = {k: v for k, v in cfn.get("Outputs", {}).items() if not _references(v, removed)}
        return cfn, machines

    def _name_machines(
        self, cfn: dict[str, Any], machines: dict[str, dict[str, Any]], env: Environment
    ) -> dict[str, Any]:
        """A kept resource (a function's role) that refers to a state machine gets the ARN
        the machine will have: it is created through the API after the stack."""
        arns = {}
        for name, machine in machines.items():
            if self._condition_holds(machine, env):
                machine_name = self._value(machine["Properties"].get("StateMachineName", name), env, {})
                arns[name] = f"arn:aws:states:{env.region}:{ACCOUNT_ID}:stateMachine:{machine_name}"

        def swap(value: Any) -> Any:
            if isinstance(value, list):
                return [swap(v) for v in value]
            if isinstance(value, dict):
                if set(value) == {"Ref"} and value["Ref"] in arns:
                    return arns[value["Ref"]]
                return {k: swap(v) for k, v in value.items()}
            return value

        return swap(cfn)

    def _create_state_machines(
        self, machines: dict[str, dict[str, Any]], env: Environment, stack: str
    ) -> dict:
        """Create each state machine through the Step Functions API, substitutions applied,
        with the role CloudFormation made for it."""
        resources = self._stack_resources(env, stack)
        outputs = {}
        sfn = self.cloud.client("stepfunctions", env.region)
        for name, resource in machines.items():
            if not self._condition_holds(resource, env):
                continue
            props = resource["Properties"]
            definition = (self.root / self.sam["Resources"][name]["Properties"]["DefinitionUri"]).read_text()
            for key, value in (props.get("DefinitionSubstitutions") or {}).items():
                definition = definition.replace("${" + key + "}", self._value(value, env, resources))
            role = self._value(props["RoleArn"], env, resources)
            machine_name = self._value(props.get("StateMachineName", name), env, resources)
            arn = sfn.create_state_machine(name=machine_name, definition=definition, roleArn=role)[
                "stateMachineArn"
            ]
            outputs[f"{name}Arn"] = arn
            resources[name] = {"PhysicalResourceId": arn, "ResourceType": "AWS::StepFunctions::StateMachine"}
        self._create_machine_rules(env, resources)
        return outputs

    def _create_machine_rules(self, env: Environment, resources: dict[str, dict[str, str]]) -> None:
        """The EventBridge rules whose target is a state machine (SAM's EventBridgeRule
        events), through the EventBridge API, now that the machines exist."""
        events = self.cloud.client("events", env.region)
        for name, rule in self._machine_rules.items():
            if not self._condition_holds(rule, env):
                continue
            props = rule["Properties"]
            pattern = self._evaluate(props["EventPattern"], env)
            events.put_rule(
                Name=f"{env.stack_name}-{name}"[:64],
                EventPattern=json.dumps(pattern),
                State=props.get("State", "ENABLED"),
                EventBusName=props.get("EventBusName", "default"),
            )
            targets = []
            for target in props["Targets"]:
                entry = {"Id": target["Id"], "Arn": self._value(target["Arn"], env, resources)}
                if "RoleArn" in target:
                    entry["RoleArn"] = self._value(target["RoleArn"], env, resources)
                if "Input" in target:
                    entry["Input"] = target["Input"]
                targets.append(entry)
            events.put_targets(Rule=f"{env.stack_name}-{name}"[:64], Targets=targets)

    def _condition_holds(self, resource: dict[str, Any], env: Environment) -> bool:
        condition = resource.get("Condition")
        if not condition:
            return True
        return evaluate_condition(
            {"Condition": condition}, self._conditions, lambda ref: self._resolve({"Ref": ref}, env)
        )

    def _value(self, value: Any, env: Environment, resources: dict[str, dict[str, str]]) -> str:
        """Ref / GetAtt / Sub of the values state machines use, against the created stack."""
        if isinstance(value, str):
            return value
        if "Ref" in value:
            ref = value["Ref"]
            if ref == "AWS::Partition":
                return "aws"
            if ref == "AWS::Region":
                return env.region
            if ref == "AWS::StackName":
                return env.stack_name
            if ref == "AWS::AccountId":
                return ACCOUNT_ID
            if ref in resources:
                return resources[ref]["PhysicalResourceId"]
            return self._resolve(value, env)
        if "Fn::GetAtt" in value:
            logical, attribute = value["Fn::GetAtt"]
            physical = resources[logical]["PhysicalResourceId"]
            kind = resources[logical]["ResourceType"]
            if kind == "AWS::Lambda::Function" and attribute == "Arn":
                return f"arn:aws:lambda:{env.region}:{ACCOUNT_ID}:function:{physical}"
            if kind == "AWS::IAM::Role" and attribute == "Arn":
                return f"arn:aws:iam::{ACCOUNT_ID}:role/{physical}"
            if kind == "AWS::SQS::Queue" and attribute == "Arn":
                return f"arn:aws:sqs:{env.region}:{ACCOUNT_ID}:{physical.rsplit('/', 1)[-1]}"
            if kind == "AWS::S3::Bucket" and attribute == "Arn":
                return f"arn:aws:s3:::{physical}"
            raise ValueError(f"sandbox cannot resolve GetAtt {logical}.{attribute}")
        if "Fn::Sub" in value:
            text = value["Fn::Sub"]
            return re.sub(
                r"\$\{([\w:.]+)\}", lambda m: self._value({"Ref": m.group(1)}, env, resources), text
            )
        raise ValueError(f"sandbox cannot resolve {value!r}")

    def _stack_resources(self, env: Environment, stack: str) -> dict[str, dict[str, str]]:
        cfn = self.cloud.client("cloudformation", env.region)
        listed = cfn.describe_stack_resources(StackName=stack)["StackResources"]
        # moto lists some resources it created without a logical id; nothing here needs them.
        return {r["LogicalResourceId"]: r for r in listed if "LogicalResourceId" in r}

    def _configure_buckets(self, env: Environment, resources: dict[str, dict[str, str]]) -> None:
        """AWS::S3::Bucket: moto's CloudFormation applies only BucketEncryption and Tags.
        Apply the rest of what the template asks through the S3 API, as CloudFormation
        would: versioning, the public access block, ownership, lifecycle, EventBridge
        notifications (replication: `replication_rules`, run by S3Replicator)."""
        for name, resource in self.sam["Resources"].items():
            if resource["Type"] != "AWS::S3::Bucket" or not self._condition_holds(resource, env):
                continue
            # Replication is S3Replicator's (`replication_rules`); the rest is applied here.
            applied = {k: v for k, v in resource["Properties"].items() if k != "ReplicationConfiguration"}
            props = self._evaluate(applied, env, resources)
            bucket = resources[name]["PhysicalResourceId"]
            s3 = self.cloud.client("s3", env.region)
            if "VersioningConfiguration" in props:
                s3.put_bucket_versioning(
                    Bucket=bucket,
                    VersioningConfiguration={"Status": props["VersioningConfiguration"]["Status"]},
                )
            if "PublicAccessBlockConfiguration" in props:
                s3.put_public_access_block(
                    Bucket=bucket, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
                )
            if "OwnershipControls" in props:
                s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=props["OwnershipControls"])
            if "LifecycleConfiguration" in props:
                s3.put_bucket_lifecycle_configuration(
                    Bucket=bucket, LifecycleConfiguration=_lifecycle(props["LifecycleConfiguration"])
                )
            notifications = props.get("NotificationConfiguration") or {}
            if (notifications.get("EventBridgeConfiguration") or {}).get("EventBridgeEnabled"):
                s3.put_bucket_notification_configuration(
                    Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
                )

    def _subscribe_and_set_queue_policies(
        self, env: Environment, resources: dict[str, dict[str, str]]
    ) -> None:
        """AWS::SNS::Subscription and AWS::SQS::QueuePolicy: moto's CloudFormation skips
        both. Make them through the SNS and SQS APIs, as CloudFormation would."""
        for name, resource in self.sam["Resources"].items():
            if not self._condition_holds(resource, env):
                continue
            if resource["Type"] == "AWS::SQS::QueuePolicy":
                props = self._evaluate(resource["Properties"], env, resources)
                sqs = self.cloud.client("sqs", env.region)
                for queue_url in props["Queues"]:
                    sqs.set_queue_attributes(
                        QueueUrl=queue_url, Attributes={"Policy": json.dumps(props["PolicyDocument"])}
                    )
            elif resource["Type"] == "AWS::SNS::Subscription":
                props = self._evaluate(resource["Properties"], env, resources)
                attributes = {}
                if props.get("RawMessageDelivery") in (True, "true"):
                    attributes["RawMessageDelivery"] = "true"
                if "RedrivePolicy" in props:
                    attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
                if "FilterPolicy" in props:
                    attributes["FilterPolicy"] = json.dumps(props["FilterPolicy"])
                    attributes["FilterPolicyScope"] = props.get("FilterPolicyScope", "MessageAttributes")
                topic_region = props["TopicArn"].split(":")[3]
                self.cloud.client("sns", topic_region).subscribe(
                    TopicArn=props["TopicArn"],
                    Protocol=props["Protocol"],
                    Endpoint=props["Endpoint"],
                    Attributes=attributes,
                    ReturnSubscriptionArn=True,
                )
                logger.info("subscribed %s to %s (%s)", props["Endpoint"], props["TopicArn"], name)

    # --- S3 replication: moto stores ReplicationConfiguration and does nothing with it ------

    def replication_rules(self, env: Environment) -> list[ReplicationRule]:
        """The template's bucket replication rules in `env`'s region, for
        sandbox.replication.S3Replicator. As S3 does when it takes the configuration, a
        rule whose destination bucket does not exist or is not versioned is refused."""
        rules = []
        for name, resource in self.sam["Resources"].items():
            if resource["Type"] != "AWS::S3::Bucket" or not self._condition_holds(resource, env):
                continue
            props = resource["Properties"]
            chosen = self._evaluate_if(props.get("ReplicationConfiguration"), env)
            # The role is S3's to assume; the primary's (made by its second deploy) is not
            # in the sandbox's stack, which is never updated.
            config = self._evaluate({k: v for k, v in (chosen or {}).items() if k != "Role"}, env)
            if not config:
                continue
            source = self._evaluate(props["BucketName"], env)
            for rule in config["Rules"]:
                if rule.get("Status") != "Enabled":
                    continue
                bucket = self._evaluate(rule["Destination"]["Bucket"], env).split(":::", 1)[1]
                region = self._bucket_region(bucket, env.region)
                if region is None:
                    raise ReplicationConfigError(
                        f"{name} in {env.region}: destination bucket {bucket} does not exist; "
                        "deploy the other app region first (PhotoReplication=pending until then)"
                    )
                versioning = self.cloud.client("s3", region).get_bucket_versioning(Bucket=bucket)
                if versioning.get("Status") != "Enabled":
                    raise ReplicationConfigError(
                        f"{name} in {env.region}: destination bucket {bucket} must have versioning enabled"
                    )
                prefix = (rule.get("Filter") or {}).get("Prefix", rule.get("Prefix", ""))
                rules.append(ReplicationRule(env.region, source, region, bucket, prefix))
        return rules

    def _bucket_region(self, bucket: str, asking_from: str) -> str | None:
        s3 = self.cloud.client("s3", asking_from)
        try:
            location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint")
        except s3.exceptions.ClientError:
            return None
        return location or "us-east-1"

    def _evaluate_if(self, value: Any, env: Environment) -> Any:
        """The branch an Fn::If picks (the value itself when it is not one)."""
        while isinstance(value, dict) and set(value) == {"Fn::If"}:
            condition, yes, no = value["Fn::If"]
            holds = evaluate_condition(
                {"Condition": condition}, self._conditions, lambda ref: self._resolve({"Ref": ref}, env)
            )
            value = yes if holds else no
        if isinstance(value, dict) and value.get("Ref") == "AWS::NoValue":
            return None
        return value

    def _evaluate(
        self, value: Any, env: Environment, resources: dict[str, dict[str, str]] | None = None
    ) -> Any:
        """Fn::If, Fn::Sub (both forms), Ref and Fn::GetAtt in a resource's properties."""
        resources = resources or {}
        if isinstance(value, list):
            return [self._evaluate(v, env, resources) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Fn::If":
                condition, yes, no = arg
                holds = evaluate_condition(
                    {"Condition": condition}, self._conditions, lambda ref: self._resolve({"Ref": ref}, env)
                )
                return self._evaluate(yes if holds else no, env, resources)
            if key == "Ref":
                if arg == "AWS::NoValue":
                    return None
                return self._value({"Ref": arg}, env, resources)
            if key == "Fn::GetAtt":
                return self._value({"Fn::GetAtt": arg}, env, resources)
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg
                names = {k: self._evaluate(v, env, resources) for k, v in variables.items()}

                def name(found: re.Match[str]) -> str:
                    ref = found.group(1)
                    if ref in names:
                        return str(names[ref])
                    if "." in ref:
                        return self._value({"Fn::GetAtt": ref.split(".", 1)}, env, resources)
                    return self._value({"Ref": ref}, env, resources)

                return re.sub(r"\$\{([\w:.]+)\}", name, text)
        return {k: self._evaluate(v, env, resources) for k, v in value.items()}

    # --- Functions and routes ---------------------------------------------------------------

    def _register_functions(self, env: Environment, resources: dict[str, dict[str, str]]) -> None:
        lam = self.cloud.client("lambda", env.region)
        for logical, resource in resources.items():
            if resource["ResourceType"] != "AWS::Lambda::Function":
                continue
            config = lam.get_function_configuration(FunctionName=resource["PhysicalResourceId"])
            code_uri = self.sam["Resources"][logical]["Properties"]["CodeUri"]
            self.runtime.register(
                FunctionSpec(
                    region=env.region,
                    logical_id=logical,
                    name=config["FunctionName"],
                    arn=config["FunctionArn"],
                    code_dir=self.root / code_uri,
                    handler=config["Handler"],
                    # Lambda's variables are strings; moto hands Number parameters back as ints.
                    environment={
                        k: str(v) for k, v in config.get("Environment", {}).get("Variables", {}).items()
                    },
                    timeout=int(config.get("Timeout", 3)),
                    memory=int(config.get("MemorySize", 128)),
                    reserved_concurrency=self._reserved_concurrency(logical, env),
                )
            )

    def _reserved_concurrency(self, logical: str, env: Environment) -> int | None:
        """ReservedConcurrentExecutions as the template gives it (a number or a parameter)."""
        value = self.sam["Resources"][logical]["Properties"].get("ReservedConcurrentExecutions")
        if value is None:
            return None
        return int(self._resolve(value, env))

    def _routes(
        self, env: Environment, resources: dict[str, dict[str, str]], cfn: dict[str, Any] | None = None
    ) -> list[Route]:
        routes = []
        authorizers: dict[str, dict] = {}  # REST API logical id -> (METHOD, path) -> authorizer
        for logical, resource in self.sam["Resources"].items():
            if resource["Type"] != "AWS::Serverless::Function" or logical not in resources:
                continue
            for event in resource["Properties"].get("Events", {}).values():
                if event["Type"] != "Api":
                    continue
                props = event["Properties"]
                method, path = props["Method"].upper(), props["Path"]
                api = (props.get("RestApiId") or {}).get("Ref", "ServerlessRestApi")
                if api not in authorizers:
                    authorizers[api] = self._api_authorizers(cfn, api, env)
                routes.append(Route(method, path, logical, authorizers[api].get((method, path))))
        return routes

    def _api_authorizers(self, cfn: dict[str, Any] | None, api: str, env: Environment) -> dict:
        """Each method's authorizer, read from the transformed REST API's OpenAPI body
        (moto drops `security` on import; the sandbox's API front door applies it)."""
        body = ((cfn or {}).get("Resources", {}).get(api, {}).get("Properties") or {}).get("Body")
        if not isinstance(body, dict):
            return {}
        return route_authorizers(body, lambda value: self._evaluate_if(value, env))

    def _schedules(self, env: Environment, resources: dict[str, dict[str, str]]) -> list[ScheduledRule]:
        """The enabled `Schedule` events of the functions deployed here, as EventBridge keeps
        them (SAM names each rule `<function><event>`). A cron() one is refused."""
        events = self.cloud.client("events", env.region)
        rules = []
        for logical, resource in self.sam["Resources"].items():
            if resource["Type"] != "AWS::Serverless::Function" or logical not in resources:
                continue
            for name, event in (resource["Properties"].get("Events") or {}).items():
                if event["Type"] != "Schedule":
                    continue
                rule_name = resources[f"{logical}{name}"]["PhysicalResourceId"]
                rule = events.describe_rule(Name=rule_name)
                if rule.get("State", "ENABLED") != "ENABLED":
                    continue
                targets = events.list_targets_by_rule(Rule=rule_name)["Targets"]
                try:
                    rules.append(scheduled_rule(env.region, logical, rule, targets))
                except ScheduleError as error:
                    raise ScheduleError(f"{logical} event {name} in {env.region}: {error}") from None
        return rules

    # --- The whole deploy ---------------------------------------------------------------------

    def update_routes(self, env: Environment, deployment: Deployment) -> None:
        """A second deploy of a region whose new parameters change only its API's routes (the
        other app region's user pool ARN in the authorizer): transform again with them and
        recompute the routes. The stack's resources stay as they are."""
        cfn = self._transform(copy.deepcopy(self._packaged[env.region]), env)
        self._conditions = cfn.get("Conditions", {})
        cfn = cognito.swap_references(cfn, deployment.user_pools)
        deployment.routes = self._routes(env, self._stack_resources(env, env.stack_name), cfn)

    def deploy(self, env: Environment) -> Deployment:
        started = time.monotonic()
        # CloudFormation checks Rules before the change set: a refused region creates nothing.
        check_rules(
            self.sam.get("Rules", {}),
            lambda ref: self._resolve({"Ref": ref}, env),
            f"stack {env.stack_name} in {env.region}",
        )
        self._packaged[env.region] = self._package(env)
        cfn = self._transform(copy.deepcopy(self._packaged[env.region]), env)  # it edits its input
        self._conditions = cfn.get("Conditions", {})
        self._check_access_logging(cfn, env)
        global_tables = self._create_global_table(cfn, env)
        self._put_residency_key(cfn, env)
        pools = self._create_user_pools(cfn, env)
        cfn = cognito.swap_references(cfn, pools)
        stripped, machines = self._strip(cfn)
        stripped = self._name_machines(stripped, machines, env)
        client = self.cloud.client("cloudformation", env.region)
        parameters = [
            {"ParameterKey": k, "ParameterValue": v}
            for k, v in env.parameters.items()
            if k in cfn.get("Parameters", {})
        ]
        client.create_stack(
            StackName=env.stack_name,
            TemplateBody=json.dumps(stripped),
            Parameters=parameters,
            Capabilities=["CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
        described = client.describe_stacks(StackName=env.stack_name)["Stacks"][0]
        if described["StackStatus"] != "CREATE_COMPLETE":
            raise RuntimeError(f"stack {env.stack_name} in {env.region}: {described['StackStatus']}")
        outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
        if outputs.get("RegionRole") != env.role:
            raise RuntimeError(
                f"{env.region} deployed as {outputs.get('RegionRole')!r}, expected {env.role!r}: "
                "the sandbox's topology and the template's disagree"
            )
        resources = self._stack_resources(env, env.stack_name)
        self._set_account_settings(cfn, env, resources)
        self._configure_buckets(env, resources)
        self._subscribe_and_set_queue_policies(env, resources)
        outputs.update(self._create_state_machines(machines, env, env.stack_name))
        cognito.set_triggers(
            pools,
            lambda value: self._evaluate(value, env, resources),
            self.cloud.client("cognito-idp", env.region),
        )
        self._register_functions(env, resources)
        schedules = self._schedules(env, resources)
        deployment = Deployment(
            env,
            outputs,
            self._routes(env, resources, cfn),
            time.monotonic() - started,
            schedules,
            pools,
            global_tables,
        )
        logger.info("deployed %s (%s) in %.2f s", env.region, env.role, deployment.seconds)
        return deployment


def _lifecycle(config: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation's LifecycleConfiguration in the S3 API's shape (the fields used here)."""
    rules = []
    for rule in config["Rules"]:
        api: dict[str, Any] = {
            "ID": rule["Id"],
            "Status": rule["Status"],
            "Filter": {"Prefix": rule.get("Prefix", "")},
        }
        if "ExpirationInDays" in rule:
            api["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
        if "NoncurrentVersionExpiration" in rule:
            api["NoncurrentVersionExpiration"] = {
                "NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
            }
        if "AbortIncompleteMultipartUpload" in rule:
            api["AbortIncompleteMultipartUpload"] = {
                "DaysAfterInitiation": int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
            }
        rules.append(api)
    return {"Rules": rules}


def replica_table_definition(props: dict[str, Any], table_name: str) -> dict[str, Any]:
    """CreateTable arguments for one replica of an AWS::DynamoDB::GlobalTable."""
    kwargs: dict[str, Any] = {
        "TableName": table_name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        "StreamSpecification": {"StreamEnabled": True, **props["StreamSpecification"]},
    }
    if props.get("GlobalSecondaryIndexes"):
        kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    return kwargs


class TemplateRuleError(ValueError):
    """A `Rules` assertion failed: CloudFormation refuses the change set, nothing is created."""


class ReplicationConfigError(RuntimeError):
    """S3 refuses a replication rule whose destination bucket is missing or unversioned."""


class AccessLoggingError(RuntimeError):
    """A stage with access logging, and no CloudWatch Logs role in the region's API Gateway
    account settings: CloudFormation fails to create the stage."""


def failed_rules(rules: dict[str, Any], ref: Callable[[str], Any]) -> list[str]:
    """`Rule: AssertDescription` of every assertion of the template's `Rules` that fails,
    with `ref` answering for parameters and pseudo parameters (`AWS::Region`)."""
    failed = []
    for name, rule in rules.items():
        condition = rule.get("RuleCondition")
        if condition is not None and not _rule_value(condition, ref):
            continue
        for assertion in rule["Assertions"]:
            if _rule_value(assertion["Assert"], ref) is not True:
                failed.append(f"{name}: {assertion.get('AssertDescription', 'assertion failed')}")
    return failed


def check_rules(rules: dict[str, Any], ref: Callable[[str], Any], where: str) -> None:
    failed = failed_rules(rules, ref)
    if failed:
        raise TemplateRuleError(f"{where}: the template's Rules refuse it: " + "; ".join(failed))


def _rule_value(expr: Any, ref: Callable[[str], Any]) -> Any:
    """A rule-specific intrinsic function. Strict, unlike `evaluate_condition`: a function
    the sandbox does not know must not pass an assertion by being a truthy dict."""
    if isinstance(expr, list):
        return [_rule_value(v, ref) for v in expr]
    if not isinstance(expr, dict):
        return expr
    if len(expr) != 1:
        raise ValueError(f"not a rule function: {expr!r}")
    ((key, value),) = expr.items()
    if key == "Ref":
        return ref(value)
    if key == "Fn::Equals":
        return str(_rule_value(value[0], ref)) == str(_rule_value(value[1], ref))
    if key == "Fn::Not":
        return not _rule_value(value[0], ref)
    if key == "Fn::Or":
        return any(_rule_value(v, ref) for v in value)
    if key == "Fn::And":
        return all(_rule_value(v, ref) for v in value)
    if key == "Fn::Contains":
        values, item = _rule_value(value, ref)
        return str(item) in [str(v) for v in values]
    raise ValueError(f"the sandbox does not evaluate {key} in Rules")


def evaluate_condition(expr: Any, conditions: dict[str, Any], ref: Callable[[str], Any]) -> Any:
    """A CloudFormation condition expression, with `ref` answering for parameters."""
    if isinstance(expr, dict) and len(expr) == 1:
        ((key, value),) = expr.items()
        if key == "Ref":
            return ref(value)
        if key == "Condition":
            return evaluate_condition(conditions[value], conditions, ref)
        if key == "Fn::Equals":
            return evaluate_condition(value[0], conditions, ref) == evaluate_condition(
                value[1], conditions, ref
            )
        if key == "Fn::Not":
            return not evaluate_condition(value[0], conditions, ref)
        if key == "Fn::Or":
            return any(evaluate_condition(v, conditions, ref) for v in value)
        if key == "Fn::And":
            return all(evaluate_condition(v, conditions, ref) for v in value)
    return expr
