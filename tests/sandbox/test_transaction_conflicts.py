"""Transaction conflicts as DynamoDB has them: a TransactWriteItems holds its items from its
arrival to its answer; a transaction or a single-item write naming a held item is refused.

The adapter's hooks make the overlap certain rather than likely: the first transaction to
get the region's lock waits there until the other request has arrived."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sandbox.cloud import Cloud
from sandbox.dynamodb_concurrency import CONFLICT_MESSAGE, WriteArrival, hooks
from sandbox.faults import FaultState

REGION = "ca-central-1"
WAIT = 60.0  # generous: a rendezvous, not a timing
CONFLICT = {"Code": "TransactionConflict", "Message": CONFLICT_MESSAGE}

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def ddb() -> Iterator[Any]:
    cloud = Cloud(FaultState([REGION]), port=0)
    cloud.start()
    # No retries: each answer is the server's first.
    yield cloud.client("dynamodb", REGION, retries={"max_attempts": 1, "mode": "standard"})
    cloud.stop()


@pytest.fixture
def table(ddb: Any) -> Iterator[str]:
    """A table keyed by pk (string) and sk (number)."""
    name = f"conflict-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    yield name
    ddb.delete_table(TableName=name)


def key(pk: str, sk: str = "1") -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"N": sk}}


def put(table: str, pk: str, **attrs: Any) -> dict[str, Any]:
    return {"Put": {"TableName": table, "Item": {**key(pk), **attrs}}}


def add_one(table: str, pk: str) -> dict[str, Any]:
    return {
        "Update": {
            "TableName": table,
            "Key": key(pk),
            "UpdateExpression": "ADD n :one",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }


def exists(table: str, pk: str) -> dict[str, Any]:
    return {
        "ConditionCheck": {"TableName": table, "Key": key(pk), "ConditionExpression": "attribute_exists(pk)"}
    }


def get(ddb: Any, table: str, pk: str, sk: str = "1") -> dict[str, Any] | None:
    return ddb.get_item(TableName=table, Key=key(pk, sk), ConsistentRead=True).get("Item")


class Arrivals:
    """What the adapter's `arrived` hook reports, and a way to wait for it."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.seen: list[WriteArrival] = []

    def __call__(self, arrival: WriteArrival) -> None:
        with self._changed:
            self.seen.append(arrival)
            self._changed.notify_all()

    def wait_for(self, count: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.seen) >= count, timeout=WAIT)


@pytest.fixture
def arrivals(monkeypatch: pytest.MonkeyPatch) -> Arrivals:
    seen = Arrivals()
    monkeypatch.setattr(hooks, "arrived", seen)
    return seen


def hold_inside_the_lock(monkeypatch: pytest.MonkeyPatch, until: Callable[[], bool]) -> threading.Event:
    """Make each transaction, once it holds the region's lock, wait until `until()` is true;
    the event is set when the first one is holding."""
    holding = threading.Event()

    def holding_lock(_: WriteArrival) -> None:
        holding.set()
        if not until():
            raise AssertionError("the request the transaction waited for never arrived")

    monkeypatch.setattr(hooks, "holding_lock", holding_lock)
    return holding


def transact_together(ddb: Any, transactions: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Send the transactions from threads released at once; None for one that succeeded,
    else its error response."""
    start = threading.Barrier(len(transactions))

    def send(items: list[dict[str, Any]]) -> Any:
        start.wait(timeout=WAIT)
        try:
            ddb.transact_write_items(TransactItems=items)
        except ClientError as error:
            return error.response
        return None

    with ThreadPoolExecutor(len(transactions)) as pool:
        futures = {name: pool.submit(send, items) for name, items in transactions.items()}
        return {name: future.result(timeout=WAIT) for name, future in futures.items()}


def test_the_later_of_two_overlapping_transactions_is_cancelled_with_transaction_conflict(
    ddb: Any, table: str, arrivals: Arrivals, monkeypatch: pytest.MonkeyPatch
) -> None:
    ddb.put_item(TableName=table, Item={**key("shared"), "n": {"N": "0"}})
    first_arrival = len(arrivals.seen)
    hold_inside_the_lock(monkeypatch, lambda: arrivals.wait_for(first_arrival + 2))
    # They share one item: an update in x, a condition check in y.
    transactions = {
        "x": [put(table, "x1"), add_one(table, "shared"), put(table, "x2")],
        "y": [put(table, "y1"), put(table, "y2"), exists(table, "shared")],
    }

    outcomes = transact_together(ddb, transactions)

    first, second = arrivals.seen[first_arrival:]
    winner = "x" if '"x1"' in first.items[0][1] else "y"  # type: ignore[index]
    loser = "y" if winner == "x" else "x"
    assert not first.conflicts
    assert [key for key in second.items if key in second.conflicts] == [
        second.items[1 if loser == "x" else 2]
    ]
    assert outcomes[winner] is None
    response = outcomes[loser]
    assert response["Error"]["Code"] == "TransactionCanceledException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    expected = [CONFLICT if "shared" in str(entry) else {"Code": "None"} for entry in transactions[loser]]
    assert response["CancellationReasons"] == expected
    codes = ", ".join(reason["Code"] for reason in expected)
    assert response["Error"]["Message"] == (
        f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]"
    )
    # The cancelled one wrote nothing; the other wrote everything.
    assert all(get(ddb, table, f"{winner}{i}") is not None for i in (1, 2))
    assert all(get(ddb, table, f"{loser}{i}") is None for i in (1, 2))
    assert get(ddb, table, "shared")["n"] == {"N": "1" if winner == "x" else "0"}  # type: ignore[index]


def test_transactions_on_different_items_both_succeed_while_overlapping(
    ddb: Any, table: str, arrivals: Arrivals, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = f"{table}-other"
    ddb.create_table(
        TableName=other,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName=table, Item=key("guard"))
    first_arrival = len(arrivals.seen)
    hold_inside_the_lock(monkeypatch, lambda: arrivals.wait_for(first_arrival + 2))

    outcomes = transact_together(
        ddb,
        {
            "x": [put(table, "a"), add_one(table, "counter")],
            # The same key in another table is another item; a check of an item nobody writes.
            "y": [put(table, "b"), put(other, "a"), exists(table, "guard")],
        },
    )

    assert outcomes == {"x": None, "y": None}
    assert [a.conflicts for a in arrivals.seen[first_arrival:]] == [frozenset(), frozenset()]
    assert get(ddb, table, "a") and get(ddb, table, "b") and get(ddb, other, "a")
    assert get(ddb, table, "counter")["n"] == {"N": "1"}  # type: ignore[index]
    ddb.delete_table(TableName=other)


def test_a_single_item_write_of_a_held_item_fails_with_transaction_conflict_exception(
    ddb: Any, table: str, arrivals: Arrivals, monkeypatch: pytest.MonkeyPatch
) -> None:
    for pk in ("updated", "checked"):
        ddb.put_item(TableName=table, Item={**key(pk), "v": {"S": "before"}})
    release = threading.Event()
    holding = hold_inside_the_lock(monkeypatch, lambda: release.wait(WAIT))
    set_v = {"UpdateExpression": "SET v = :v", "ExpressionAttributeValues": {":v": {"S": "single"}}}

    with ThreadPoolExecutor(2) as pool:
        transaction = pool.submit(
            ddb.transact_write_items,
            TransactItems=[
                put(table, "created", v={"S": "transaction"}),
                {"Update": {"TableName": table, "Key": key("updated"), **set_v}},
                exists(table, "checked"),
            ],
        )
        assert holding.wait(WAIT)
        # Each answered at once, while the transaction holds the region's lock: refused
        # requests do not wait for it. 1.0 and 1 are one number, so one key.
        refused = [
            lambda: ddb.put_item(TableName=table, Item={**key("created", "1.0"), "v": {"S": "single"}}),
            lambda: ddb.update_item(TableName=table, Key=key("updated"), **set_v),
            lambda: ddb.delete_item(TableName=table, Key=key("checked")),
        ]
        for write in refused:
            with pytest.raises(ddb.exceptions.TransactionConflictException) as raised:
                write()
            assert raised.value.response["Error"] == {
                "Code": "TransactionConflictException",
                "Message": CONFLICT_MESSAGE,
            }
            assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        # A write of another item is not refused: it waits for the lock.
        seen = len(arrivals.seen)
        free = pool.submit(ddb.put_item, TableName=table, Item=key("created", "2"))
        assert arrivals.wait_for(seen + 1)
        assert not arrivals.seen[seen].conflicts
        release.set()
        transaction.result(timeout=WAIT)
        free.result(timeout=WAIT)

    assert get(ddb, table, "created")["v"] == {"S": "transaction"}  # type: ignore[index]
    assert get(ddb, table, "updated")["v"] == {"S": "single"}  # type: ignore[index]  (the transaction's)
    assert get(ddb, table, "checked")["v"] == {"S": "before"}  # type: ignore[index]
    assert get(ddb, table, "created", "2") is not None
    # Answered, the transaction holds nothing: the same writes now succeed.
    ddb.delete_item(TableName=table, Key=key("checked"))
    ddb.put_item(TableName=table, Item={**key("created"), "v": {"S": "later"}})
    assert get(ddb, table, "created")["v"] == {"S": "later"}  # type: ignore[index]


def test_a_transaction_releases_its_items_whatever_its_answer(
    ddb: Any, table: str, arrivals: Arrivals
) -> None:
    with pytest.raises(ClientError) as cancelled:  # its condition fails
        ddb.transact_write_items(TransactItems=[put(table, "p"), exists(table, "missing")])
    with pytest.raises(ClientError) as invalid:  # moto's ValidationException part-way
        ddb.transact_write_items(
            TransactItems=[
                put(table, "p"),
                {
                    "Update": {
                        "TableName": table,
                        "Key": key("q"),
                        "UpdateExpression": "ADD n :s",
                        "ExpressionAttributeValues": {":s": {"S": "text"}},
                    }
                },
            ]
        )

    assert [r["Code"] for r in cancelled.value.response["CancellationReasons"]] == [
        "None",
        "ConditionalCheckFailed",
    ]
    assert invalid.value.response["Error"]["Code"] == "ValidationException"
    ddb.put_item(TableName=table, Item=key("q"))
    ddb.transact_write_items(TransactItems=[put(table, "p"), add_one(table, "q")])
    assert not any(a.conflicts for a in arrivals.seen)
    assert get(ddb, table, "q")["n"] == {"N": "1"}  # type: ignore[index]
