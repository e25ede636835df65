"""The matrix: every user x app region x operation, each cell's expected outcome computed
from the deployed policy, through a planned failover and failback."""

import json
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

import requests
from botocore.exceptions import ClientError

from multiregion import residency
from multiregion.residency import ResidencyError
from sandbox import users as sandbox_users
from tests.support.cfn import load_event
from tests.support.residency.model import (
    COUNTRIES,
    DETECTION_SECONDS,
    FINAL,
    SETTLE_SECONDS,
    TIMEOUT,
    WORKFLOW_SECONDS,
    Cell,
    Deployment,
    Item,
    Photo,
    User,
    json_body,
    png,
    poll_until,
    refusal,
    refusal_of,
)
from tests.support.target import Target


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
        item = json_body(response).get("item") or {}
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
                return {
                    "status": response.status_code,
                    "id": (json_body(response).get("item") or {}).get("id"),
                }

            expected = {"status": 200, "id": item.id}
            actual = poll_until(read, lambda a, e=expected: a == e, SETTLE_SECONDS)
            self.record(user, region, "item-read", phase, expected, actual, writtenIn=item.written_in)
        wanted = {i.id for i in own}
        everything = {i.id for i in self.items if i.owner == user.label}

        def listed() -> dict[str, Any]:
            ids: list[str] = []
            cursor = None
            while True:
                params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
                response = session.get(f"{url}/items", params=params, timeout=TIMEOUT)
                body = json_body(response)
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
        actual = poll_until(listed, lambda a: all(a[k] == v for k, v in expected.items()), SETTLE_SECONDS)
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
        declared = json_body(response)
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
        return response, json_body(response).get("photo") or {}

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

        actual = poll_until(state, lambda a: a["status"] in FINAL, DETECTION_SECONDS)
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

                actual = poll_until(read, lambda a, e=expected: a == e, SETTLE_SECONDS)
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
                    "ids": sorted(p["id"] for p in json_body(response).get("photos", [])),
                }

            actual = poll_until(listed, lambda a: a == expected, SETTLE_SECONDS)
        else:
            expected = refusal(self.d, user.jurisdiction, user.home)
            actual = refusal_of(session.get(f"{url}/photos", timeout=TIMEOUT))
        self.record(user, region, "photo-list", phase, expected, actual)

    # --- workflows ---------------------------------------------------------------------

    def workflow(self, name: str, region: str, output: str, event: str) -> None:
        """Started and awaited as the drill does (the state machine's output, the input
        from events/statemachines/)."""
        sfn = self.target.client("stepfunctions", region)
        payload = {**load_event(f"statemachines/{event}"), "requestedBy": "residency-audit"}
        started = time.monotonic()
        execution = sfn.start_execution(
            stateMachineArn=self.target.outputs[region][output], input=json.dumps(payload)
        )["executionArn"]
        described = poll_until(
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
