"""PreSignUp: a sign-up is allowed only in the user's home region (from the country they
declare, through the residency policy), and recorded in the residency registry."""

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from multiregion.identity import triggers

logger = Logger()
tracer = Tracer()


# The event holds the username and the user's attributes: neither the log nor the trace
# keeps it (log_event and capture_response off, whatever the environment says).
@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return triggers.answer(triggers.pre_sign_up, event)
