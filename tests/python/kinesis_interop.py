"""Sends or receives person messages with django-logpipe 1.6's Kinesis backend, for
logpipe's interoperability tests (tests/integration/kinesis.rs).

    kinesis_interop.py send STREAM < people.jsonl
        sends each line (a person as a JSON object) with a logpipe Producer
    kinesis_interop.py receive STREAM COUNT TIMEOUT_SECONDS
        reads COUNT person messages with a logpipe Consumer and prints each as a JSON line
        {"key": ..., "shard": ..., "sequence_number": ..., "person": {...}}

The test writes the Django settings module (DJANGO_SETTINGS_MODULE, with LOGPIPE's format
and producer id) and points boto3 at the emulator with AWS_ENDPOINT_URL_KINESIS.
"""

import json
import sys
import time

import django

django.setup()

from logpipe import Consumer, Producer  # noqa: E402
from rest_framework import serializers  # noqa: E402


class PersonSerializer(serializers.Serializer):
    MESSAGE_TYPE = "person"
    VERSION = 1
    KEY_FIELD = "uuid"

    uuid = serializers.CharField()
    name = serializers.CharField()
    age = serializers.IntegerField()
    score = serializers.FloatField()
    active = serializers.BooleanField()
    tags = serializers.ListField(child=serializers.CharField())

    def save(self):
        pass


class StartOverOffsets:
    """An offset store that keeps nothing: every run reads each shard from the start."""

    def commit(self, consumer, message):
        pass

    def seek(self, consumer, stream, shard):
        consumer.seek_to_sequence_number(shard, None)


def send(stream):
    producer = Producer(stream, PersonSerializer)
    for line in sys.stdin:
        if line.strip():
            if producer.send(json.loads(line)) is None:
                sys.exit("django-logpipe could not send a message")


def receive(stream, count, timeout):
    consumer = Consumer(stream)
    consumer.register(PersonSerializer)
    received = 0
    deadline = time.monotonic() + timeout
    while received < count:
        if time.monotonic() > deadline:
            sys.exit(f"received {received} of {count} messages in {timeout} s")
        for message, serializer in consumer:
            line = {
                "key": message.key,
                "shard": message.partition,
                "sequence_number": message.offset,
                "person": dict(serializer.validated_data),
            }
            print(json.dumps(line), flush=True)
            received += 1
            if received >= count:
                break
        else:
            time.sleep(0.2)


if __name__ == "__main__":
    if sys.argv[1:2] == ["send"] and len(sys.argv) == 3:
        send(sys.argv[2])
    elif sys.argv[1:2] == ["receive"] and len(sys.argv) == 5:
        receive(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(__doc__)
