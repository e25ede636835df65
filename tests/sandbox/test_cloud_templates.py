"""The sandbox reads a JSON template body as JSON (speed only): moto's own reading, which
runs PyYAML's pure-Python loader over every body first, gives the same document."""

from __future__ import annotations

import json

from moto.cloudformation.models import Stack

from sandbox.cloud import read_json_templates_as_json
from tests.support import cfn

YAML_BODY = """
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub ${AWS::StackName}-queue
Outputs:
  Arn:
    Value: !GetAtt Queue.Arn
"""


def test_a_json_body_reads_as_moto_reads_it_and_yaml_is_left_to_moto() -> None:
    original = Stack.parse_template
    body = json.dumps(cfn.transformed())
    expected_json = original(body)
    expected_yaml = original(YAML_BODY)

    read_json_templates_as_json()
    read_json_templates_as_json()  # twice: wrapped once

    assert Stack.parse_template(body) == expected_json
    assert Stack.parse_template(YAML_BODY) == expected_yaml
    assert expected_yaml["Outputs"]["Arn"]["Value"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert Stack.parse_template("{not json: [1, 2]}") == original("{not json: [1, 2]}")  # YAML flow
