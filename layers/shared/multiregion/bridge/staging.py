"""The staged copy: an upload copied into the service region's staging bucket, where
that region's Rekognition can read it (it reads S3 objects only in its own region).
The staging bucket expires objects after a day, so a copy a failed cleanup left behind
does not stay."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from multiregion import aws
from multiregion.aws import describe_error, error_code
from multiregion.bridge.errors import ObjectRejected, ServiceThrottled, StagingUnavailable
from multiregion.bridge.models import Job

STAGED_PREFIX = "staged"


def staged_key(job: Job, home_region: str) -> str:
    return f"{STAGED_PREFIX}/{home_region}/{job.key.rsplit('/', 1)[-1]}"


def stage(job: Job, staging_bucket: str, home_region: str) -> Job:
    """Copy the upload (the very version the event named) into the staging bucket."""
    key = staged_key(job, home_region)
    source = {"Bucket": job.bucket, "Key": job.key}
    if job.versionId:
        source["VersionId"] = job.versionId
    s3 = aws.client("s3", job.detectIn, aws.CROSS_REGION_CONFIG)
    try:
        s3.copy_object(Bucket=staging_bucket, Key=key, CopySource=source)
    except ClientError as error:
        if error_code(error) in ("NoSuchKey", "NoSuchVersion", "404", "AccessDenied"):
            raise ObjectRejected(f"staging {job.key}: {describe_error(error)}") from None
        if error_code(error) == "NoSuchBucket":
            # A retry will not bring the bucket back: say so now, as unstage does.
            raise StagingUnavailable(f"staging {job.key}: {describe_error(error)}") from None
        raise ServiceThrottled(f"staging {job.key}: {describe_error(error)}") from None
    except ParamValidationError as error:
        # botocore refused to send the request (an unset or invalid staging bucket name):
        # it refuses the same request again.
        raise StagingUnavailable(f"staging {job.key}: {describe_error(error)}") from None
    except BotoCoreError as error:  # connection faults: the region may be back shortly
        raise ServiceThrottled(f"staging {job.key}: {describe_error(error)}") from None
    return job.model_copy(update={"stagedBucket": staging_bucket, "stagedKey": key})


def unstage(job: Job) -> bool:
    """Delete the staged copy; True when there was one. Deleting twice is harmless."""
    if not (job.stagedBucket and job.stagedKey):
        return False
    s3 = aws.client("s3", job.detectIn, aws.CROSS_REGION_CONFIG)
    what = f"deleting the staged copy {job.stagedKey}"
    try:
        s3.delete_object(Bucket=job.stagedBucket, Key=job.stagedKey)
    except ClientError as error:
        if error_code(error) in ("NoSuchBucket", "AccessDenied"):
            # A retry will not bring the bucket or the permission back: say so now.
            raise StagingUnavailable(f"{what}: {describe_error(error)}") from None
        raise ServiceThrottled(f"{what}: {describe_error(error)}") from None
    except ParamValidationError as error:  # botocore refuses the same request again
        raise StagingUnavailable(f"{what}: {describe_error(error)}") from None
    except BotoCoreError as error:
        raise ServiceThrottled(f"{what}: {describe_error(error)}") from None
    return True
