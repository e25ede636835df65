"""Where residency-scoped data (photos, their metadata and detected text) may go.

One function decides, so the rules of a jurisdiction can later be written in one place:
may `region` store a photo whose home is `home_region`, may replication bring it there,
may a service run there on it. Every caller asks before it acts; today's policy allows
everything (no jurisdiction is configured yet).
"""

from __future__ import annotations

from typing import Literal

Action = Literal["store", "replicate", "process"]


def allows(action: Action, home_region: str, region: str) -> bool:
    """Whether `action` on data whose home is `home_region` may happen in `region`."""
    del action, home_region, region  # the default policy: no jurisdiction restricts anything
    return True
