"""django-logpipe on the other end of a stream, for the interoperability tests and benches.

Run with the interpreter of the virtualenv that tests/services/python/start makes, and
DJANGO_SETTINGS_MODULE naming a settings module (the tests write one per run: its LOGPIPE
setting picks the backend, the format and the producer id):

    peer.py send TOPIC [--repeat N]       sends each JSON line of stdin
                                          ({"type", "version", "message"}) with
                                          django-logpipe's PydanticProducer
    peer.py consume TOPIC --count N       prints each message django-logpipe's Consumer
            [--timeout S] [--quiet]       hands to a registered model as a JSON line
                                          ({"type", "version", "producer", "key",
                                          "message"}); exits 1 when fewer than N arrive

Both print a last line {"count": N, "seconds": S} (only it with --quiet) so that benches
can compare throughput.
"""

import argparse
import json
import sys
import time

import django
from django.core.management import call_command


def models():
    from logpipe.abc import PydanticModel

    class PersonV1(PydanticModel):
        MESSAGE_TYPE = "person"
        VERSION = 1
        KEY_FIELD = "uuid"

        uuid: str
        name: str

    class PersonV2(PydanticModel):
        MESSAGE_TYPE = "person"
        VERSION = 2
        KEY_FIELD = "uuid"

        uuid: str
        first_name: str
        last_name: str
        age: int
        score: float
        active: bool
        tags: list[str]
        nickname: str | None = None

    class StateV1(PydanticModel):
        MESSAGE_TYPE = "us-state"
        VERSION = 1
        KEY_FIELD = "code"

        code: str
        name: str

    return {(m.MESSAGE_TYPE, m.VERSION): m for m in (PersonV1, PersonV2, StateV1)}


def send(topic, repeat):
    from logpipe import PydanticProducer

    registry = models()
    producer = PydanticProducer(topic)
    lines = [json.loads(line) for line in sys.stdin if line.strip()]
    instances = [registry[(line["type"], line["version"])].model_validate(line["message"]) for line in lines]
    started = time.monotonic()
    for _ in range(repeat):
        for instance in instances:
            producer.send(instance)
    seconds = time.monotonic() - started
    print(json.dumps({"count": len(instances) * repeat, "seconds": seconds}))


def consume(topic, count, timeout, quiet):
    from logpipe import Consumer
    from logpipe.format import parse

    consumer = Consumer(topic, consumer_timeout_ms=200)
    for model in models().values():
        consumer.register(model)
    consumer.add_ignored_message_type("audit")
    seen = 0
    started = time.monotonic()
    deadline = started + timeout
    while seen < count and time.monotonic() < deadline:
        # The iterator ends when the stream is drained for now; start it again until the
        # count is reached or time is up.
        for record, instance in consumer:
            seen += 1
            if not quiet:
                key = record.key.decode() if isinstance(record.key, bytes) else record.key
                line = {
                    "type": instance.MESSAGE_TYPE,
                    "version": instance.VERSION,
                    "producer": parse(record.value).get("producer"),
                    "key": key,
                    "partition": str(record.partition),
                    "message": instance.model_dump(mode="json"),
                }
                print(json.dumps(line), flush=True)
            if seen >= count or time.monotonic() >= deadline:
                break
    seconds = time.monotonic() - started
    print(json.dumps({"count": seen, "seconds": seconds}), flush=True)
    return 0 if seen >= count else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    send_args = commands.add_parser("send")
    send_args.add_argument("topic")
    send_args.add_argument("--repeat", type=int, default=1)
    consume_args = commands.add_parser("consume")
    consume_args.add_argument("topic")
    consume_args.add_argument("--count", type=int, required=True)
    consume_args.add_argument("--timeout", type=float, default=60.0)
    consume_args.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    django.setup()
    # The offset stores of django-logpipe are Django models: give them their tables.
    call_command("migrate", verbosity=0)
    if args.command == "send":
        send(args.topic, args.repeat)
        return 0
    return consume(args.topic, args.count, args.timeout, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
