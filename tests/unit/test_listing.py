"""The sharded list index's page merge, against a table whose queries stop early."""

from __future__ import annotations

from typing import Any

from multiregion import listing


class ShortPagesTable:
    """Answers each query with at most one record and a LastEvaluatedKey, as DynamoDB does
    when a query reaches 1 MB of records before its Limit."""

    def __init__(self, records: list[dict[str, str]]):
        self.records = records
        self.read: dict[str, int] = {}

    def query(self, **query: Any) -> dict[str, Any]:
        assert query["IndexName"] == listing.LIST_INDEX
        partition, after = _condition(query["KeyConditionExpression"])
        start = query.get("ExclusiveStartKey", {}).get("gsi1sk", after or "")
        matching = sorted(
            (r for r in self.records if r["gsi1pk"] == partition and r["gsi1sk"] > start),
            key=lambda r: r["gsi1sk"],
        )
        page = matching[: min(1, query["Limit"])]
        self.read[partition] = self.read.get(partition, 0) + len(page)
        response: dict[str, Any] = {"Items": page}
        if page:
            response["LastEvaluatedKey"] = {"gsi1pk": partition, "gsi1sk": page[-1]["gsi1sk"]}
        return response


def _condition(expression: Any) -> tuple[str, str | None]:
    """The partition and the `gsi1sk >` bound of a boto3 key condition."""
    parts = expression.get_expression()
    if parts["operator"] == "=":
        return parts["values"][1], None
    equals, greater = (part.get_expression()["values"][1] for part in parts["values"])
    return equals, greater


def record(n: int) -> dict[str, str]:
    item_id = f"{n:032x}"
    return {
        "gsi1pk": listing.partition_of(item_id),
        "gsi1sk": listing.sort_key(f"2026-11-23T07:00:{n:02d}.000Z", item_id),
        "id": item_id,
    }


def test_a_partition_read_goes_on_past_short_pages() -> None:
    records = [record(n) for n in range(30)]
    table = ShortPagesTable(records)

    page, cursor = listing.list_records(table, 4)
    rest, last = listing.list_records(table, 100, cursor)

    assert len({r["gsi1pk"] for r in records}) > 1
    assert [r["id"] for r in page] == [r["id"] for r in records[:4]]
    assert [r["id"] for r in page + rest] == [r["id"] for r in records]
    assert last is None


def test_every_partition_is_read_for_at_most_one_past_the_limit() -> None:
    table = ShortPagesTable([record(n) for n in range(200)])

    page, cursor = listing.list_records(table, 3)

    assert len(page) == 3
    assert cursor is not None
    assert set(table.read) == set(listing.PARTITIONS)
    assert max(table.read.values()) == 3 + 1
