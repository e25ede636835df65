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
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.support.cfn import ROOT
from tests.support.residency.matrix import Audit
from tests.support.residency.model import COMMAND
from tests.support.residency.run import audit_target, fresh_sandbox

RESULT = ROOT / "bench" / "results" / "residency.json"


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
