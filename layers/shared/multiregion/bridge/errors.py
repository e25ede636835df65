"""Errors the text-detection steps raise; the class name is the error name the state
machine sees (its Retry and Catch name them)."""

from __future__ import annotations


class BridgeError(Exception):
    """A step cannot go on."""


class InvalidUpload(BridgeError):
    """The event does not name an upload of this region's photos (or its record)."""


class ServiceThrottled(BridgeError):
    """The service or S3 throttled the call, or answered a transient error: retry later."""


class ObjectRejected(BridgeError):
    """The service refused the object (format, size, missing): retrying will not help."""


class StagingUnavailable(BridgeError):
    """The staging bucket is gone or refuses this function: retrying will not help."""


class TextDetectionFailed(BridgeError):
    """The video job ended FAILED or ERROR (its completion notice said so)."""


class RegionFenced(BridgeError):
    """This region may not write the photo's record now (a failover fenced it): retry."""
