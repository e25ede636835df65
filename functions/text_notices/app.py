"""Rekognition's completion notices from the service region's topic, through this
region's queue: each resumes (or fails) the text-detection run waiting for its job."""

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from multiregion.bridge import notices
from multiregion.bridge.config import get_bridge_settings

logger = Logger()
tracer = Tracer()
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> str:
    return notices.handle_record(record, get_bridge_settings())


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
