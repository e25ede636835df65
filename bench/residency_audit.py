"""Residency audit (issue #12): every user x every app region x every operation, checked
against the deployed residency policy, then every region's data listed.

    make residency-audit             # a fresh sandbox -> bench/results/residency.json
    python -m bench.residency_audit --help

The expected outcome of every cell is computed from the policy the functions were
deployed with (`RESIDENCY_POLICY` read back from a deployed function's environment) and
these rules, never written per cell:

- sign-up and sign-in: only in the user's home region (the first region of their
  jurisdiction); a sign-up elsewhere is refused with a message naming the home region;
- items: written, read and listed in every app region;
- photos: declared, uploaded, read and listed only where the policy lets the region
  `store`/`serve` the jurisdiction's data, elsewhere a 403 `ResidencyRestricted` naming
  the home region and its endpoint; a jurisdiction that may not be replicated to the
  other app region gets a `resident/` key (never replicated), any other an `uploads/` one;
- text detection ends DONE where the policy lets the detecting region `process` the
  jurisdiction's data (the service region needs the bridge), SKIPPED_RESIDENCY otherwise;
- a planned failover to the secondary and a failback to the primary succeed, and after
  each the reads give the same answers: residency beats availability.

Then every table of every region is scanned (a record carrying a `jurisdiction`, itself
or in a journal entry's image, must be in a region whose policy allows storing it), the
residency registry must hold no username in the clear, and every version of every object
in every bucket is listed (a photo's object, `uploads|resident|staged/<region>/<id>.<ext>`,
must be in a region its jurisdiction allows; the staging bucket must end empty).
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
from botocore.exceptions import ClientError

from multiregion import residency
from multiregion.residency import ResidencyError, ResidencyPolicy
from sandbox import users as sandbox_users
from tests.support.cfn import load_event
from tests.support.target import SandboxProcess, Target

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "residency.json"
COMMAND = "make residency-audit"
# The text-detection tests' sandbox (images are detected in the service region through
# the bridge), with the workflow timings of the statemachines tests so failover and
# failback take seconds (no hold-down between them).
SANDBOX_ARGS = ["--health-interval", "0.5", "--health-threshold", "2", "--replication-lag", "0.2"]
PARAMETERS = {
    "VideoTextWaitSeconds": "10",
    "StateCacheTtlSeconds": "1",
    "CatchUpDeadlineSeconds": "60",
    "CatchUpPollSeconds": "1",
    "HoldDownSeconds": "0",
}
COUNTRIES = ("CA", "US", "FR")  # FR: a country no jurisdiction lists (the policy's default)
TIMEOUT = 30  # one HTTP call
SETTLE_SECONDS = 60  # a read that may wait for replication
DETECTION_SECONDS = 120
WORKFLOW_SECONDS = 300
FINAL = ("DONE", "FAILED", "SKIPPED_RESIDENCY")
OBJECT_KEY = re.compile(
    r"^(?P<prefix>uploads|resident|staged)/(?P<region>[a-z0-9-]+)/(?P<id>[0-9a-f]{32})\.\w+$"
)
PHASES = ("initial", "after-failover", "after-failback")


# --- What is deployed ------------------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    """What the audit reads back from the deployed functions: the policy and the
    placement of text detection, never assumed."""

    raw_policy: str
    policy: ResidencyPolicy
    primary: str
    secondary: str
    service_region: str
    image_text_at: str
    endpoints: dict[str, str]  # app region -> API endpoint the functions name
    buckets: dict[str, str]  # app region -> photos bucket
    staging_bucket: str
    table_name: str

    @property
    def app_regions(self) -> tuple[str, str]:
        return (self.primary, self.secondary)

    def other(self, region: str) -> str:
        return self.secondary if region == self.primary else self.primary

    def detects_images_in(self, declared_in: str) -> str:
        return self.service_region if self.image_text_at == "service" else declared_in


def function_environment(target: Target, region: str, output: str) -> dict[str, str]:
    name = target.outputs[region][output]
    config = target.client("lambda", region).get_function_configuration(FunctionName=name)
    return {k: str(v) for k, v in config.get("Environment", {}).get("Variables", {}).items()}


def deployed(target: Target) -> Deployment:
    """The deployment as its functions see it; the policy must be the same in both app
    regions (a region deployed with another policy would make every answer suspect)."""
    envs = {r: function_environment(target, r, "TextDetectionFunctionName") for r in target.region_urls}
    policies = {env.get(residency.ENV_VAR, "") for env in envs.values()}
    if len(policies) != 1:
        raise RuntimeError(f"the app regions were deployed with different residency policies: {policies}")
    raw = policies.pop()
    env = envs[target.primary]
    service = next(r for r, o in target.outputs.items() if o.get("RegionRole") == "service")
    return Deployment(
        raw_policy=raw,
        policy=residency.parse(raw),
        primary=target.primary,
        secondary=target.secondary,
        service_region=service,
        image_text_at=env.get("IMAGE_TEXT_AT", "service") or "service",
        endpoints=dict(
            pair.split("=", 1) for pair in env.get("REGION_ENDPOINTS", "").split(",") if "=" in pair
        ),
        buckets={r: target.outputs[r]["PhotosBucketName"] for r in target.region_urls},
        staging_bucket=target.outputs[service]["StagingBucketName"],
        table_name=target.table_name,
    )


# --- Cells -----------------------------------------------------------------------------


@dataclass
class Cell:
    user: str  # the user's label (country and a number), never the username
    jurisdiction: str
    region: str
    operation: str
    phase: str
    expected: dict[str, Any]
    actual: dict[str, Any]
    passed: bool
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class User:
    label: str
    country: str
    jurisdiction: str | None  # None: the policy takes no users from this country
    home: str | None
    username: str
    password: str
    token: str = ""

    def session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = self.token
        return session


@dataclass
class Photo:
    id: str
    owner: str  # user label
    jurisdiction: str
    declared_in: str
    key: str
    text: str
    final: str = ""


@dataclass
class Item:
    id: str
    owner: str
    written_in: str


def refusal(deployment: Deployment, jurisdiction: str, home: str) -> dict[str, Any]:
    """What a photo route answers where the caller's jurisdiction may not be."""
    return {
        "status": 403,
        "code": "ResidencyRestricted",
        "homeRegion": home,
        "homeEndpoint": deployment.endpoints.get(home),
    }


def refusal_of(response: requests.Response) -> dict[str, Any]:
    body = _json(response)
    details = body.get("details") or {}
    return {
        "status": response.status_code,
        "code": body.get("code"),
        "homeRegion": details.get("homeRegion"),
        "homeEndpoint": details.get("homeEndpoint"),
    }


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def png(text: str) -> bytes:
    """An image the sandbox's Rekognition reads `text` from (lines split by |)."""
    return b"\x89PNG\r\n\x1a\n" + b"\x00" * 32 + f"sandbox-text:{text}\x00".encode() + b"\x00" * 16


def _poll(
    attempt: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], seconds: float
) -> dict[str, Any]:
    """`attempt()` until `done` says so or the time is up; the last answer either way."""
    deadline = time.monotonic() + seconds
    while True:
        answer = attempt()
        if done(answer) or time.monotonic() >= deadline:
            return answer
        time.sleep(0.3)


class Audit:
    """The matrix, run against one target; `cells` grows as it goes."""

    def __init__(self, target: Target, deployment: Deployment, log: Callable[[str], None] = print):
        self.target = target
        self.d = deployment
        self.log = log
        self.cells: list[Cell] = []
        self.users: list[User] = []
        self.photos: list[Photo] = []
        self.items: list[Item] = []
        self.workflows: dict[str, dict[str, Any]] = {}

    # --- recording ---------------------------------------------------------------------

    def record(
        self,
        user: User | None,
        region: str,
        operation: str,
        phase: str,
        expected: dict[str, Any],
        actual: dict[str, Any],
        **detail: Any,
    ) -> Cell:
        passed = all(actual.get(k) == v for k, v in expected.items())
        cell = Cell(
            user=user.label if user else "-",
            jurisdiction=(user.jurisdiction or "-") if user else "-",
            region=region,
            operation=operation,
            phase=phase,
            expected=expected,
            actual=actual,
            passed=passed,
            detail=detail,
        )
        self.cells.append(cell)
        if not passed:
            self.log(f"  FAIL {cell.user} {region} {operation} [{phase}]: expected {expected}, got {actual}")
        return cell

    def allows(self, action: residency.Action, jurisdiction: str, region: str) -> bool:
        try:
            return self.d.policy.allows(action, jurisdiction, region, self.d.service_region)
        except ResidencyError:
            return False

    # --- identity ----------------------------------------------------------------------

    def _cognito(self) -> dict[str, Any]:
        return {"aws": self.target.aws_endpoint, "cognito": self.target.cognito}

    def new_user(self, country: str, number: int) -> User:
        try:
            jurisdiction = self.d.policy.for_country(country)
            name, home = jurisdiction.name, jurisdiction.home
        except ResidencyError:
            name, home = None, None
        user = User(
            label=f"{country}-{number}",
            country=country,
            jurisdiction=name,
            home=home,
            username=f"audit-{country.lower()}-{uuid.uuid4().hex[:12]}",
            password=f"Aa1-{secrets.token_urlsafe(18)}",
        )
        self.users.append(user)
        return user

    def sign_up(self, user: User, region: str) -> bool:
        """SignUp in `region`'s pool, as an app does; True if the user was created."""
        if user.home is None:
            expected = {"outcome": "refused"}
        elif region == user.home:
            expected = {"outcome": "accepted"}
        else:
            expected = {"outcome": "refused", "namesHome": True}
        pool = sandbox_users.pool_of(self._cognito(), region)
        client = sandbox_users.cognito_client(self._cognito(), region)
        try:
            answer = client.sign_up(
                ClientId=pool["userPoolClientId"],
                Username=user.username,
                Password=user.password,
                UserAttributes=[{"Name": "custom:country", "Value": user.country}],
            )
        except ClientError as error:
            message = error.response.get("Error", {}).get("Message", "")
            actual = {
                "outcome": "refused",
                "namesHome": bool(user.home) and str(user.home) in message,
                "code": error.response.get("Error", {}).get("Code"),
            }
            self.record(user, region, "sign-up", "initial", expected, actual, message=message)
            return False
        if not answer.get("UserConfirmed"):
            client.admin_confirm_sign_up(UserPoolId=pool["userPoolId"], Username=user.username)
        self.record(user, region, "sign-up", "initial", expected, {"outcome": "accepted"})
        return True

    def sign_in(self, user: User, region: str, phase: str) -> None:
        expected = {"outcome": "accepted" if region == user.home else "refused"}
        try:
            tokens = sandbox_users.sign_in(self._cognito(), region, user.username, user.password)
        except ClientError as error:
            message = error.response.get("Error", {}).get("Message", "")
            code = error.response.get("Error", {}).get("Code")
            actual = {"outcome": "refused", "code": code}
            # A refusal by the trigger (the user exists there) must name the home region.
            if code == "UserLambdaValidationException":
                expected = {**expected, "namesHome": True}
                actual["namesHome"] = str(user.home) in message
            self.record(user, region, "sign-in", phase, expected, actual, message=message)
            return
        if region == user.home:
            user.token = tokens["idToken"]
        self.record(user, region, "sign-in", phase, expected, {"outcome": "accepted"})

    # --- items -------------------------------------------------------------------------

    def write_item(self, user: User, region: str) -> None:
        url = self.target.region_urls[region]
        response = user.session().post(
            f"{url}/items",
            json={"name": f"audit {user.label} in {region}", "tags": ["residency-audit"]},
            timeout=TIMEOUT,
        )
        item = _json(response).get("item") or {}
        if response.status_code == 201 and item.get("id"):
            self.items.append(Item(id=item["id"], owner=user.label, written_in=region))
        self.record(user, region, "item-write", "initial", {"status": 201}, {"status": response.status_code})

    def read_items(self, user: User, region: str, phase: str) -> None:
        """Each of the user's items readable here, and the list here holds them all (items
        are not residency-scoped: every app region serves them)."""
        url = self.target.region_urls[region]
        session = user.session()
        own = [i for i in self.items if i.owner == user.label]
        if phase == "initial":  # only what was written here so far; later, every region's
            own = [i for i in own if i.written_in == region]
        for item in own:

            def read(item: Item = item) -> dict[str, Any]:
                response = session.get(f"{url}/items/{item.id}", timeout=TIMEOUT)
                return {"status": response.status_code, "id": (_json(response).get("item") or {}).get("id")}

            expected = {"status": 200, "id": item.id}
            actual = _poll(read, lambda a, e=expected: a == e, SETTLE_SECONDS)
            self.record(user, region, "item-read", phase, expected, actual, writtenIn=item.written_in)
        wanted = {i.id for i in own}
        everything = {i.id for i in self.items if i.owner == user.label}

        def listed() -> dict[str, Any]:
            ids: list[str] = []
            cursor = None
            while True:
                params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
                response = session.get(f"{url}/items", params=params, timeout=TIMEOUT)
                body = _json(response)
                ids += [i["id"] for i in body.get("items", [])]
                cursor = body.get("nextCursor")
                if response.status_code != 200 or not cursor:
                    # The list holds the items expected here, and only the caller's.
                    return {
                        "status": response.status_code,
                        "holdsExpected": wanted <= set(ids),
                        "onlyOwn": set(ids) <= everything,
                        "listed": len(ids),
                    }

        expected = {"status": 200, "holdsExpected": True, "onlyOwn": True}
        actual = _poll(listed, lambda a: all(a[k] == v for k, v in expected.items()), SETTLE_SECONDS)
        self.record(user, region, "item-list", phase, expected, actual)

    # --- photos ------------------------------------------------------------------------

    def declare_and_upload(self, user: User, region: str) -> None:
        assert user.jurisdiction and user.home
        url = self.target.region_urls[region]
        text = f"AUDIT {user.label.upper()} {region.upper()}"
        body = png(text)
        response = user.session().post(
            f"{url}/photos", json={"contentType": "image/png", "size": len(body)}, timeout=TIMEOUT
        )
        declared = _json(response)
        if self.allows("store", user.jurisdiction, region):
            prefix = (
                "uploads" if self.allows("replicate", user.jurisdiction, self.d.other(region)) else "resident"
            )
            expected = {"status": 201, "keyPrefix": f"{prefix}/{region}/"}
            key = str((declared.get("photo") or {}).get("objectKey", ""))
            actual = {
                "status": response.status_code,
                "keyPrefix": key.rsplit("/", 1)[0] + "/" if key else None,
            }
        else:
            expected = refusal(self.d, user.jurisdiction, user.home)
            actual = refusal_of(response)
        self.record(user, region, "photo-declare", "initial", expected, actual)
        if response.status_code != 201:
            return
        photo = declared["photo"]
        self.photos.append(
            Photo(
                id=photo["id"],
                owner=user.label,
                jurisdiction=str(photo.get("jurisdiction") or user.jurisdiction),
                declared_in=region,
                key=photo["objectKey"],
                text=text,
            )
        )
        self.upload(user, region, declared["upload"], photo["objectKey"], body)

    def upload(self, user: User, region: str, post: dict[str, Any], key: str, body: bytes) -> None:
        """The browser's form POST straight to this region's bucket: no API token (S3 would
        read an Authorization header as a signature)."""
        bucket = self.d.buckets[region]
        prepared = requests.Request(
            "POST", post["url"], data=post["fields"], files={"file": ("photo.png", body, "image/png")}
        ).prepare()
        with requests.Session() as plain:
            response = plain.send(prepared, timeout=TIMEOUT)
        try:
            self.target.client("s3", region).head_object(Bucket=bucket, Key=key)
            stored = True
        except ClientError:
            stored = False
        expected = {"status": 204, "toRegionBucket": True, "authorization": False, "stored": True}
        actual = {
            "status": response.status_code,
            "toRegionBucket": bucket in post["url"] or post["fields"].get("bucket") == bucket,
            "authorization": "Authorization" in prepared.headers,
            "stored": stored,
        }
        self.record(user, region, "photo-upload", "initial", expected, actual)

    def _photo(self, session: requests.Session, region: str, photo_id: str) -> tuple[requests.Response, dict]:
        response = session.get(f"{self.target.region_urls[region]}/photos/{photo_id}", timeout=TIMEOUT)
        return response, _json(response).get("photo") or {}

    def await_detection(self, user: User, photo: Photo) -> None:
        """The photo's text detection, in the region it was declared in, ends as the policy
        says: DONE (with its text) where the detecting region may process it."""
        session = user.session()
        detector = self.d.detects_images_in(photo.declared_in)
        if self.allows("process", photo.jurisdiction, detector):
            expected: dict[str, Any] = {"status": "DONE", "text": [photo.text]}
        else:
            expected = {"status": "SKIPPED_RESIDENCY"}

        def state() -> dict[str, Any]:
            _, found = self._photo(session, photo.declared_in, photo.id)
            lines = [t.get("text") for t in found.get("text") or []]
            return {"status": found.get("status"), "text": lines, "reason": found.get("reason")}

        actual = _poll(state, lambda a: a["status"] in FINAL, DETECTION_SECONDS)
        photo.final = str(actual["status"])
        self.record(
            user,
            photo.declared_in,
            "text-detection",
            "initial",
            expected,
            actual,
            photo=photo.id,
            detectIn=detector,
        )

    def read_photos(self, user: User, region: str, phase: str) -> None:
        """Each of the user's photos read here, then the list here: served where the policy
        lets this region serve the jurisdiction (once replication brought it), refused with
        the home region everywhere else, whatever state the system is in."""
        assert user.jurisdiction and user.home
        session = user.session()
        own = [p for p in self.photos if p.owner == user.label]
        serves = self.allows("serve", user.jurisdiction, region)
        for photo in own:
            if serves:
                expected = {"status": 200, "id": photo.id, "photoStatus": photo.final}

                def read(photo: Photo = photo) -> dict[str, Any]:
                    response, found = self._photo(session, region, photo.id)
                    return {
                        "status": response.status_code,
                        "id": found.get("id"),
                        "photoStatus": found.get("status"),
                    }

                actual = _poll(read, lambda a, e=expected: a == e, SETTLE_SECONDS)
            else:
                expected = refusal(self.d, user.jurisdiction, user.home)
                actual = refusal_of(self._photo(session, region, photo.id)[0])
            self.record(
                user,
                region,
                "photo-read",
                phase,
                expected,
                actual,
                photo=photo.id,
                declaredIn=photo.declared_in,
            )
        url = self.target.region_urls[region]
        if serves:
            expected = {
                "status": 200,
                "ids": sorted(p.id for p in own if self.allows("store", p.jurisdiction, region)),
            }

            def listed() -> dict[str, Any]:
                response = session.get(f"{url}/photos", params={"limit": 100}, timeout=TIMEOUT)
                return {
                    "status": response.status_code,
                    "ids": sorted(p["id"] for p in _json(response).get("photos", [])),
                }

            actual = _poll(listed, lambda a: a == expected, SETTLE_SECONDS)
        else:
            expected = refusal(self.d, user.jurisdiction, user.home)
            actual = refusal_of(session.get(f"{url}/photos", timeout=TIMEOUT))
        self.record(user, region, "photo-list", phase, expected, actual)

    # --- workflows ---------------------------------------------------------------------

    def workflow(self, name: str, region: str, output: str, event: str) -> None:
        """Started and awaited as the drill does (the state machine's output, the input
        from events/statemachines/)."""
        sfn = self.target.client("stepfunctions", region)
        payload = {**load_event(f"statemachines/{event}"), "requestedBy": "bench/residency_audit.py"}
        started = time.monotonic()
        execution = sfn.start_execution(
            stateMachineArn=self.target.outputs[region][output], input=json.dumps(payload)
        )["executionArn"]
        described = _poll(
            lambda: sfn.describe_execution(executionArn=execution),
            lambda d: d["status"] != "RUNNING",
            WORKFLOW_SECONDS,
        )
        report = json.loads(described.get("output") or "{}")
        catch_up = report.get("catchUp") or {}
        summary = {
            "status": described["status"],
            "seconds": round(time.monotonic() - started, 2),
            "error": described.get("error"),
            "cause": (described.get("cause") or "")[:500] or None,
            "steps": report.get("steps"),
            "withheld": catch_up.get("withheld"),
            "withheldIds": catch_up.get("withheldIds"),
            "checked": catch_up.get("checked"),
        }
        self.workflows[name] = summary
        # Catch-up withholds (does not wait for) exactly the photos written in the region
        # being left whose jurisdiction may not be replicated here.
        left = self.d.other(region)
        withheld = sorted(
            p.id
            for p in self.photos
            if p.declared_in == left and not self.allows("replicate", p.jurisdiction, region)
        )
        self.record(
            None,
            region,
            name,
            name,
            {"status": "SUCCEEDED", "withheldIds": withheld},
            {"status": described["status"], "withheldIds": sorted(catch_up.get("withheldIds") or [])},
            **summary,
        )

    def settle(self) -> None:
        """Sandbox only: wait until stream functions and replication have caught up."""
        if self.target.admin_url:
            requests.post(f"{self.target.admin_url}/settle", json={"timeout": 60}, timeout=70)

    # --- the matrix --------------------------------------------------------------------

    def reads(self, phase: str) -> None:
        for user in self.users:
            if not user.token:
                continue
            for region in self.d.app_regions:
                self.sign_in(user, region, phase)
                self.read_items(user, region, phase)
                self.read_photos(user, region, phase)

    def run(self, countries: tuple[str, ...] = COUNTRIES) -> None:
        self.log(f"policy: {self.d.raw_policy}")
        for number, country in enumerate(countries, 1):
            user = self.new_user(country, number)
            self.log(f"user {user.label}: jurisdiction {user.jurisdiction}, home {user.home}")
            # Elsewhere first (refused before the registry is touched), then home, then
            # elsewhere again (refused although now registered).
            others = [r for r in self.d.app_regions if r != user.home]
            for region in [*others, *([user.home] if user.home else []), *others]:
                created = self.sign_up(user, region)
                if created and region != user.home:
                    break  # accepted outside home: recorded as a failure; do not go on
            if user.home is None:
                continue
            for region in self.d.app_regions:
                self.sign_in(user, region, "initial")
            if not user.token:
                continue
            for region in self.d.app_regions:
                self.write_item(user, region)
                self.read_items(user, region, "initial")
                self.declare_and_upload(user, region)
        for photo in self.photos:
            owner = next(u for u in self.users if u.label == photo.owner)
            self.await_detection(owner, photo)
        self.settle()
        self.reads("initial")
        self.log("planned failover to the secondary")
        self.workflow("failover", self.d.secondary, "FailoverStateMachineArn", "failover.json")
        self.reads("after-failover")
        self.settle()
        self.log("planned failback to the primary")
        self.workflow("failback", self.d.primary, "FailbackStateMachineArn", "failback.json")
        self.settle()
        self.reads("after-failback")


# --- Every region's data ---------------------------------------------------------------


def _scan(client: Any, table: str) -> Iterator[dict[str, Any]]:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        page = client.scan(**kwargs)
        for raw in page.get("Items", []):
            yield {k: deserializer.deserialize(v) for k, v in raw.items()}
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, (list, set, tuple)):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, (bytes, bytearray)):
        yield bytes(value).decode("latin-1")


def _jurisdiction_of(record: dict[str, Any]) -> str | None:
    if record.get("jurisdiction"):
        return str(record["jurisdiction"])
    image = record.get("image")
    if isinstance(image, dict) and image.get("jurisdiction"):
        return str(image["jurisdiction"])
    return None


def _allowed(d: Deployment, action: residency.Action, jurisdiction: str | None, region: str) -> bool:
    """As `residency.permits` for a stored record, but for an auditor: a jurisdiction the
    policy does not know is allowed nowhere."""
    if not jurisdiction:
        return False
    try:
        return d.policy.allows(action, jurisdiction, region, d.service_region)
    except ResidencyError:
        return False


def inventory(target: Target, d: Deployment, usernames: list[str]) -> dict[str, Any]:
    """Every table and every bucket of every region: what is where, and what is misplaced."""
    regions = list(target.outputs)
    misplaced: list[dict[str, Any]] = []
    tables: dict[str, dict[str, Any]] = {}
    photo_records: dict[str, dict[str, str]] = {}  # id -> region -> jurisdiction
    registry_leaks: list[dict[str, str]] = []
    registry_entries: dict[str, int] = {}
    lowered = [u.lower() for u in usernames]
    for region in regions:
        dynamodb = target.client("dynamodb", region)
        names = dynamodb.list_tables().get("TableNames", [])
        for name in names:
            counts = {"records": 0, "residencyScoped": 0, "items": 0, "photos": 0}
            for record in _scan(dynamodb, name):
                counts["records"] += 1
                pk = str(record.get("pk", ""))
                counts["items"] += pk.startswith("ITEM#")
                if name == f"{d.table_name}-residency":
                    registry_entries[region] = registry_entries.get(region, 0) + 1
                    text = " ".join(_strings(record)).lower()
                    for username in lowered:
                        if username in text:
                            registry_leaks.append({"region": region, "table": name, "pk": pk[:12]})
                jurisdiction = _jurisdiction_of(record)
                # The registry is identity, not residency-scoped data: a global table by
                # design (a sign-up anywhere must find who is registered), keyed by HMAC;
                # it is checked for usernames in the clear instead.
                if jurisdiction is None or name == f"{d.table_name}-residency":
                    continue
                counts["residencyScoped"] += 1
                if pk.startswith("PHOTO#") and record.get("jurisdiction"):
                    counts["photos"] += 1
                    photo_records.setdefault(pk.removeprefix("PHOTO#"), {})[region] = jurisdiction
                if not _allowed(d, "store", jurisdiction, region):
                    misplaced.append(
                        {
                            "kind": "record",
                            "region": region,
                            "table": name,
                            "pk": pk,
                            "sk": str(record.get("sk", "")),
                            "jurisdiction": jurisdiction,
                        }
                    )
            tables[f"{region}/{name}"] = counts
    jurisdiction_of = {pid: next(iter(found.values())) for pid, found in photo_records.items()}

    s3 = target.client("s3", d.primary)
    buckets: dict[str, dict[str, Any]] = {}
    objects: dict[str, dict[str, int]] = {}  # photo id -> bucket region -> versions
    staging_versions = 0
    for bucket in (b["Name"] for b in s3.list_buckets().get("Buckets", [])):
        location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
        client = target.client("s3", location)
        staging = bucket == d.staging_bucket
        counts = {"region": location, "versions": 0, "deleteMarkers": 0, "photoObjects": 0}
        kwargs: dict[str, Any] = {"Bucket": bucket}
        while True:
            page = client.list_object_versions(**kwargs)
            counts["deleteMarkers"] += len(page.get("DeleteMarkers", []))
            for version in page.get("Versions", []):
                counts["versions"] += 1
                staging_versions += staging
                found = OBJECT_KEY.match(version["Key"])
                if not found:
                    continue
                counts["photoObjects"] += 1
                photo_id = found["id"]
                if not staging:
                    per = objects.setdefault(photo_id, {})
                    per[location] = per.get(location, 0) + 1
                jurisdiction = jurisdiction_of.get(photo_id)
                # Staged copies are processing (the service region, with the bridge);
                # anything else is storage.
                action: residency.Action = "process" if staging else "store"
                if not _allowed(d, action, jurisdiction, location):
                    misplaced.append(
                        {
                            "kind": "object",
                            "region": location,
                            "bucket": bucket,
                            "key": version["Key"],
                            "versionId": version.get("VersionId"),
                            "jurisdiction": jurisdiction,
                        }
                    )
            if not page.get("IsTruncated"):
                break
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker")
        buckets[bucket] = counts
    return {
        "regions": regions,
        "tables": tables,
        "buckets": buckets,
        "photoRecords": photo_records,
        "photoObjects": objects,
        "registryEntries": registry_entries,
        "registryLeaks": registry_leaks,
        "stagingVersions": staging_versions,
        "misplaced": misplaced,
    }


def check_inventory(audit: Audit, found: dict[str, Any]) -> None:
    """The cells of the data listing: each photo record and object where (and only where)
    the policy says, the registry without usernames, the staging bucket empty."""
    d = audit.d
    for photo in audit.photos:
        owner = next(u for u in audit.users if u.label == photo.owner)
        where = sorted(
            {photo.declared_in}
            | {
                r
                for r in d.app_regions
                if r != photo.declared_in and audit.allows("replicate", photo.jurisdiction, r)
            }
        )
        records = sorted(found["photoRecords"].get(photo.id, {}))
        audit.record(
            owner,
            photo.declared_in,
            "record-placement",
            "inventory",
            {"regions": where},
            {"regions": records},
            photo=photo.id,
        )
        objects = sorted(found["photoObjects"].get(photo.id, {}))
        audit.record(
            owner,
            photo.declared_in,
            "object-placement",
            "inventory",
            {"regions": where},
            {"regions": objects},
            photo=photo.id,
        )
    registry = f"{d.table_name}-residency"
    for region in d.app_regions:
        leaks = [leak for leak in found["registryLeaks"] if leak["region"] == region]
        audit.record(
            None,
            region,
            "registry-no-usernames",
            "inventory",
            {"usernamesInClear": 0, "present": True},
            {"usernamesInClear": len(leaks), "present": f"{region}/{registry}" in found["tables"]},
            entries=found["registryEntries"].get(region, 0),
        )
    audit.record(
        None,
        d.service_region,
        "staging-empty",
        "inventory",
        {"versions": 0},
        {"versions": found["stagingVersions"]},
    )


# --- The run ---------------------------------------------------------------------------


def summary(audit: Audit, found: dict[str, Any], seconds: float, command: str = COMMAND) -> dict[str, Any]:
    failed = [c for c in audit.cells if not c.passed]
    by_operation: dict[str, dict[str, int]] = {}
    for cell in audit.cells:
        counts = by_operation.setdefault(cell.operation, {"cells": 0, "passed": 0, "failed": 0})
        counts["cells"] += 1
        counts["passed" if cell.passed else "failed"] += 1
    users = {
        u.label: {"country": u.country, "jurisdiction": u.jurisdiction, "home": u.home} for u in audit.users
    }
    return {
        "users": len(audit.users),
        "cells": len(audit.cells),
        "violations": len(failed),
        "misplaced_objects": len(found["misplaced"]),
        "seconds": round(seconds, 1),
        "command": command,
        "policy": json.loads(audit.d.raw_policy),
        "serviceRegion": audit.d.service_region,
        "imageTextAt": audit.d.image_text_at,
        "userJurisdictions": users,
        "failures": [asdict(c) for c in failed[:10]],
        "misplaced": found["misplaced"][:20],
        "cellsByOperation": by_operation,
        "workflows": audit.workflows,
        "photos": [asdict(p) for p in audit.photos],
        "inventory": {
            "tables": found["tables"],
            "buckets": found["buckets"],
            "registryEntries": found["registryEntries"],
            "photos": len(audit.photos),
            "items": len(audit.items),
        },
    }


def audit_target(target: Target, log: Callable[[str], None] = print) -> tuple[Audit, dict[str, Any]]:
    """The whole audit against a running target: the matrix, then every region's data."""
    audit = Audit(target, deployed(target), log)
    audit.run()
    audit.settle()
    found = inventory(target, audit.d, [u.username for u in audit.users])
    check_inventory(audit, found)
    return audit, found


def sandbox_args() -> list[str]:
    return [*SANDBOX_ARGS, *(a for k, v in PARAMETERS.items() for a in ("--param", f"{k}={v}"))]


@contextmanager
def fresh_sandbox(workdir: Path) -> Iterator[Target]:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "endpoints.json").unlink(missing_ok=True)  # never read a previous run's
    process = SandboxProcess(workdir, sandbox_args(), ready_timeout=600)
    target = process.start()
    try:
        yield target
    finally:
        process.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".sandbox" / "residency-audit")
    args = parser.parse_args()
    started = time.monotonic()
    with fresh_sandbox(args.workdir) as target:
        audit, found = audit_target(target)
    result = summary(audit, found, time.monotonic() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(
        f"residency audit: {result['users']} users, {result['cells']} cells, "
        f"{result['violations']} violations, {result['misplaced_objects']} misplaced objects, "
        f"{result['seconds']} s -> {args.out}"
    )
    for operation, counts in sorted(result["cellsByOperation"].items()):
        print(f"  {operation:24} {counts['passed']:4}/{counts['cells']:<4} passed")
    return 1 if result["violations"] or result["misplaced_objects"] else 0


if __name__ == "__main__":
    sys.exit(main())
