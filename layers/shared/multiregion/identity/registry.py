"""The residency registry: one entry per user, their home region and jurisdiction.

A DynamoDB global table with the same name in both app regions; each function reads and
writes its own region's replica. The key is `USER#<hmac of the username>`
(`multiregion.identity.keys`): the table never holds a username.

A registration is a conditional write: it creates the entry, or finds one with the same
home and jurisdiction (a retried sign-up) and keeps its first `signedUpIn` and
`createdAt`. An entry with another home is left as it is and reported.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from multiregion import aws
from multiregion.settings import required_env

ENV_VAR = "RESIDENCY_REGISTRY_TABLE"
PREFIX = "USER#"
KEY_PATTERN = r"^USER#[0-9a-f]{64}$"

_deserializer = TypeDeserializer()


class Registration(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    pk: str = Field(pattern=KEY_PATTERN)
    homeRegion: str
    jurisdiction: str
    signedUpIn: str  # the region whose user pool took the sign-up
    createdAt: str  # ISO 8601, UTC

    @classmethod
    def new(cls, user_key: str, jurisdiction: str, home: str, region: str) -> Registration:
        created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return cls(
            pk=PREFIX + user_key,
            homeRegion=home,
            jurisdiction=jurisdiction,
            signedUpIn=region,
            createdAt=created,
        )

    @property
    def user_key(self) -> str:
        return self.pk.removeprefix(PREFIX)


class RegisteredElsewhere(Exception):
    """The registry holds the user with another home or jurisdiction."""

    def __init__(self, existing: Registration):
        super().__init__(f"registered with home {existing.homeRegion} ({existing.jurisdiction})")
        self.existing = existing


def table_name() -> str:
    return required_env(ENV_VAR)


class Registry:
    """This region's replica of the registry."""

    def __init__(self, table_name: str, region: str):
        self.table_name = table_name
        self.region = region

    @classmethod
    def from_environment(cls, region: str) -> Registry:
        return cls(table_name(), region)

    @property
    def _table(self) -> Any:
        return aws.table(self.table_name, self.region)

    def register(self, registration: Registration) -> Registration:
        """Record `registration`, or confirm the same one; RegisteredElsewhere otherwise.
        Returns the entry as stored (a retry gets the first sign-up's region and time)."""
        try:
            stored = self._table.update_item(
                Key={"pk": registration.pk},
                UpdateExpression=(
                    "SET homeRegion = :home, jurisdiction = :jurisdiction, "
                    "signedUpIn = if_not_exists(signedUpIn, :region), "
                    "createdAt = if_not_exists(createdAt, :created)"
                ),
                ConditionExpression=(
                    "attribute_not_exists(pk) OR (homeRegion = :home AND jurisdiction = :jurisdiction)"
                ),
                ExpressionAttributeValues={
                    ":home": registration.homeRegion,
                    ":jurisdiction": registration.jurisdiction,
                    ":region": registration.signedUpIn,
                    ":created": registration.createdAt,
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if not aws.is_condition_failure(error):
                raise
            old = error.response.get("Item")
            if old is None:  # an endpoint that does not return it: read it
                existing = self.lookup(registration.user_key)
                if existing is None:
                    raise
            else:
                existing = Registration.model_validate(
                    {name: _deserializer.deserialize(value) for name, value in old.items()}
                )
            raise RegisteredElsewhere(existing) from None
        return Registration.model_validate(stored["Attributes"])

    def lookup(self, user_key: str) -> Registration | None:
        """The user's entry in this replica (a consistent read), or None."""
        found = self._table.get_item(Key={"pk": PREFIX + user_key}, ConsistentRead=True).get("Item")
        return None if found is None else Registration.model_validate(found)
