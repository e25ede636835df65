"""Copies the photo records written in this region to the other app region's photos
table (its stream, through an event source mapping), as residency allows."""

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from multiregion.photos.replication import PhotoReplicator
from multiregion.settings import get_settings

logger = Logger()
tracer = Tracer()
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    replicator = PhotoReplicator(get_settings())

    def record_handler(record: DynamoDBRecord) -> str:
        return replicator.handle(record)

    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    replicator.publish_latency()
    return response
