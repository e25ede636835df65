"""Settings every test process needs before any handler module is imported.

Lambda sets a function's environment before its module loads, and Powertools reads the
service name and metrics namespace at import: the test process does the same here."""

import os

for _name, _value in {
    "POWERTOOLS_SERVICE_NAME": "multiregion",
    "POWERTOOLS_METRICS_NAMESPACE": "MultiRegionApp",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "AWS_DEFAULT_REGION": "ca-central-1",
}.items():
    os.environ.setdefault(_name, _value)
