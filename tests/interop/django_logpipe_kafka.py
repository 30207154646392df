"""django-logpipe 1.6 on Kafka, driven by the interoperability tests in
tests/integration/kafka.rs (and usable by hand to time django-logpipe).

    python django_logpipe_kafka.py send TOPIC COUNT
    python django_logpipe_kafka.py consume TOPIC COUNT

DJANGO_SETTINGS_MODULE names a settings module with a LOGPIPE dict (the tests write one).
`send` sends COUNT people made by `person(n)`; `consume` prints one JSON line per message
read: {"type", "version", "producer", "key", "message"}. Both print their rate on stderr.
"""

import json
import sys
import time
from typing import ClassVar

import django

django.setup()

from logpipe import Consumer, PydanticProducer  # noqa: E402
from logpipe.abc import PydanticModel  # noqa: E402
from logpipe.format import parse  # noqa: E402


class PersonV1(PydanticModel):
    MESSAGE_TYPE: ClassVar[str] = "interop-person"
    VERSION: ClassVar[int] = 1
    KEY_FIELD: ClassVar[str] = "uuid"

    uuid: str
    name: str
    n: int

    def save(self):
        return None


class PersonV2(PydanticModel):
    MESSAGE_TYPE: ClassVar[str] = "interop-person"
    VERSION: ClassVar[int] = 2
    KEY_FIELD: ClassVar[str] = "uuid"

    uuid: str
    first_name: str
    last_name: str
    n: int
    score: float
    tags: list[str]
    active: bool

    def save(self):
        return None


def person(n: int) -> PydanticModel:
    """The n-th person; the Rust side of the tests makes the same ones."""
    uuid = f"u-{n % 5}"
    if n % 2 == 0:
        return PersonV1(uuid=uuid, name=f"Name {n} \u00e9\u2028", n=n)
    return PersonV2(
        uuid=uuid,
        first_name="First",
        last_name=f"Last {n}",
        n=n,
        score=n / 4,
        tags=["a", "\u00e9", "\U0001f600"],
        active=n % 3 == 0,
    )


def send(topic: str, count: int) -> None:
    producer = PydanticProducer(topic)
    start = time.monotonic()
    for n in range(count):
        producer.send(person(n))
    elapsed = time.monotonic() - start
    print(f"sent {count} in {elapsed:.3f} s: {count / elapsed:.0f}/s", file=sys.stderr)


def consume(topic: str, count: int) -> None:
    consumer = Consumer(topic, throw_errors=True)
    consumer.register(PersonV1)
    consumer.register(PersonV2)
    read = 0
    start = time.monotonic()
    deadline = start + 120
    while read < count and time.monotonic() < deadline:
        for message, serializer in consumer:
            body = parse(message.value)
            line = {
                "type": body["type"],
                "version": body["version"],
                "producer": body.get("producer"),
                "key": message.key.decode() if message.key is not None else None,
                "message": serializer.model_dump(mode="json"),
            }
            print(json.dumps(line))
            consumer.commit(message)
            read += 1
            if read >= count:
                break
    elapsed = time.monotonic() - start
    print(f"read {read} in {elapsed:.3f} s: {read / elapsed:.0f}/s", file=sys.stderr)
    if read < count:
        sys.exit(f"only {read} of {count} messages arrived")


if __name__ == "__main__":
    command, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    {"send": send, "consume": consume}[command](topic, count)
