"""Text-detection bridge benchmark: where an upload's time goes, per kind.

    make bench            # also writes bench/results/bridge.json

A sandbox with its default topology (text detection in the service region) takes
UPLOADS images and UPLOADS videos, one at a time, each declared through POST /photos and
uploaded through its presigned POST. Each upload's execution history gives, in seconds:
- `stage_s`: the Stage step (the copy into the service region's staging bucket);
- `detect_s`: DetectText (images), or StartTextDetection until the completion notice
  resumed the run (videos: SNS -> this region's SQS -> the consumer -> the task token);
- `return_s`: StoreResults, the text written to the photo's record at home;
- `total_s`: the execution, from the S3 event's start to its end (the staged copy
  deleted).
Medians are the headline figures, p95 beside them. Rekognition's own processing time is
not modelled: the emulator answers at once and publishes the notice after
`notice_delay_s` (0 here), so the figures are the bridge's own overhead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from tests.support.target import SandboxProcess, Target, api

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "bridge.json"
UPLOADS = 20
PARTS = {"stage_s": "Stage", "return_s": "StoreResults"}
DETECT = {"image": "DetectImageText", "video": "DetectVideoText"}
BODIES = {
    "image": ("image/png", lambda n: b"\x89PNG\r\n\x1a\n" + f"sandbox-text:BENCH {n}|LINE TWO\x00".encode()),
    "video": (
        "video/mp4",
        lambda n: b"\x00\x00\x00\x18ftypmp42" + f"sandbox-text:BENCH {n}|A|B|C\x00".encode(),
    ),
}


def state_seconds(events: list[dict[str, Any]], state: str) -> float:
    entered = next(
        e["timestamp"] for e in events if e.get("stateEnteredEventDetails", {}).get("name") == state
    )
    exited = next(e["timestamp"] for e in events if e.get("stateExitedEventDetails", {}).get("name") == state)
    return (exited - entered).total_seconds()


def one(target: Target, kind: str, n: int) -> dict[str, float]:
    url = target.region_urls[target.primary]
    content_type, make = BODIES[kind]
    body = make(n)
    declared = api.post(f"{url}/photos", json={"contentType": content_type, "size": len(body)}, timeout=10)
    declared.raise_for_status()
    post = declared.json()["upload"]
    key = declared.json()["photo"]["objectKey"]
    uploaded = requests.post(
        post["url"], data=post["fields"], files={"file": ("f", body, content_type)}, timeout=10
    )
    uploaded.raise_for_status()
    sfn = target.client("stepfunctions", target.primary)
    arn = target.outputs[target.primary]["TextDetectionStateMachineArn"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for execution in sfn.list_executions(stateMachineArn=arn, maxResults=1000)["executions"]:
            described = sfn.describe_execution(executionArn=execution["executionArn"])
            if (
                json.loads(described["input"])["detail"]["object"]["key"] != key
                or described["status"] == "RUNNING"
            ):
                continue
            if described["status"] != "SUCCEEDED":
                raise RuntimeError(f"{kind} upload {n}: execution {described['status']}")
            events = sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)[
                "events"
            ]
            figures = {name: state_seconds(events, state) for name, state in PARTS.items()}
            figures["detect_s"] = state_seconds(events, DETECT[kind])
            figures["total_s"] = (described["stopDate"] - described["startDate"]).total_seconds()
            return figures
        time.sleep(0.1)
    raise RuntimeError(f"{kind} upload {n}: no finished execution within 60 s")


def summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    names = ("stage_s", "detect_s", "return_s", "total_s")
    result: dict[str, Any] = {name: round(statistics.median(s[name] for s in samples), 3) for name in names}
    result["p95"] = {
        name: round(sorted(s[name] for s in samples)[int(0.95 * (len(samples) - 1))], 3) for name in names
    }
    result["uploads"] = len(samples)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=UPLOADS)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        sandbox = SandboxProcess(Path(workdir), ["--health-interval", "0.5", "--replication-lag", "0.2"])
        target = sandbox.start()
        target.sign_in()  # a US user: the bridge may process their photos
        try:
            results = {kind: summary([one(target, kind, n) for n in range(args.uploads)]) for kind in BODIES}
        finally:
            sandbox.stop()
    document = {
        **results,
        "notice_delay_s": 0,
        "command": "make bench (python -m bench.bridge_bench)",
        "note": "medians; the sandbox Rekognition answers at once: the figures are the bridge overhead",
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
