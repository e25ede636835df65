"""Hand-built histories for the checker's tests: a small builder, no sandbox."""

from __future__ import annotations

from typing import Any

from chaos.history import (
    Attempt,
    FaultRecord,
    History,
    Mode,
    Snapshot,
    StateChange,
    StoredItem,
    WorkflowRecord,
)

P, S = "ca-central-1", "us-west-2"
ITEM = "a" * 32
METHODS = {"create": "POST", "probe": "POST", "update": "PUT", "delete": "DELETE"}


class Builder:
    def __init__(self, mode: Mode = "active-passive"):
        self.mode = mode
        self.attempts: list[Attempt] = []
        self.faults: list[FaultRecord] = []
        self.workflows: list[WorkflowRecord] = []
        self.audit: list[StateChange] = []
        self.items: dict[str, dict[str, StoredItem]] = {P: {}, S: {}}
        self.states: dict[str, dict[str, Any] | None] = {P: None, S: None}
        self._ops = 0

    def attempt(self, kind: str, at: float, region: str | None = P, status: int | None = 200, **kw: Any):
        self._ops += 1
        fields: dict[str, Any] = {
            "op": kw.pop("op", f"op{self._ops}"),
            "client": kw.pop("client", "c0"),
            "kind": kind,
            "method": METHODS.get(kind, "GET"),
            "via": kw.pop("via", "global"),
            "start": at,
            "end": at + kw.pop("took", 0.05),
            "status": status,
            "region": region,
            **kw,
        }
        attempt = Attempt(**fields)
        self.attempts.append(attempt)
        return attempt

    def create(
        self,
        at: float,
        token: str = "t1",  # noqa: S107 - a write token
        region: str = P,
        item: str = ITEM,
        **kw: Any,
    ) -> Attempt:
        return self.attempt(
            "create",
            at,
            region,
            kw.pop("status", 201),
            item=item,
            token=token,
            version=1,
            epoch=kw.pop("epoch", 0),
            **kw,
        )

    def update(self, at: float, token: str, base: str, version: int, region: str = P, **kw: Any) -> Attempt:
        return self.attempt(
            "update",
            at,
            region,
            kw.pop("status", 200),
            item=kw.pop("item", ITEM),
            token=token,
            base_token=base,
            if_match=kw.pop("if_match", version - 1),
            version=version,
            epoch=kw.pop("epoch", 0),
            **kw,
        )

    def delete(self, at: float, token: str, base: str, version: int, region: str = P, **kw: Any) -> Attempt:
        return self.attempt(
            "delete",
            at,
            region,
            kw.pop("status", 200),
            item=kw.pop("item", ITEM),
            token=token,
            base_token=base,
            if_match=version,
            **kw,
        )

    def stored(self, token: str, version: int, regions: tuple[str, ...] = (P, S), item: str = ITEM) -> None:
        for region in regions:
            self.items[region][item] = StoredItem(id=item, version=version, token=token)

    def change(self, epoch: int, state: str, writers: list[str], at: float) -> None:
        self.audit.append(StateChange(epoch=epoch, state=state, writers=writers, at=at))
        record = {"state": state, "epoch": epoch, "writers": writers}
        self.states = {P: record, S: record}

    def fault(self, kind: str, start: float, end: float, *regions: str) -> None:
        self.faults.append(
            FaultRecord(kind=kind, args=list(regions), start=start, end=end, regions=list(regions))
        )

    def workflow(self, start: float, end: float | None, status: str = "SUCCEEDED", **kw: Any) -> None:
        self.workflows.append(
            WorkflowRecord(
                name=kw.pop("name", "failover"),
                label=kw.pop("label", "planned"),
                region=S,
                input={},
                start=start,
                end=end,
                status=status,
                **kw,
            )
        )

    def build(self) -> History:
        return History(
            seed=1,
            mode=self.mode,
            primary=P,
            secondary=S,
            started=0.0,
            ended=100.0,
            attempts=self.attempts,
            faults=self.faults,
            workflows=self.workflows,
            snapshot=Snapshot(items=self.items, states=self.states, audit=self.audit),
        )
