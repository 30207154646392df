"""Packs user records into KPL aggregated records with the official aws-kinesis-agg library,
for the tests of KPL de-aggregation.

Run with the test virtualenv's interpreter and the folder that tests/services/python/start
fills from requirements-kpl.txt (LOGPIPE_TEST_PYTHON_KPL) on PYTHONPATH:

    aggregate.py --per-record N           reads JSON lines {"partition_key", "explicit_hash_key"
                 [--corrupt digest|message]   (or null), "data" (text)} from stdin and prints one
                                          JSON line {"partition_key", "explicit_hash_key",
                                          "data" (hex)} per aggregated record of N user
                                          records (the last may hold fewer), to be put as they
                                          are with PutRecord

--corrupt spoils every record printed: "digest" flips a bit of its MD5 digest, "message" cuts
its protobuf message short and gives it the digest of what is left (a record with a valid
digest whose message cannot be read).
"""

import argparse
import hashlib
import json
import sys

from aws_kinesis_agg.aggregator import AggRecord

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_LEN = 16


def spoil(data, how):
    if how == "digest":
        return data[:-1] + bytes([data[-1] ^ 1])
    message = data[len(MAGIC):-DIGEST_LEN]
    cut = message[: len(message) // 2 + 1]
    return MAGIC + cut + hashlib.md5(cut).digest()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-record", type=int, required=True)
    parser.add_argument("--corrupt", choices=["digest", "message"])
    args = parser.parse_args()

    def emit(record):
        partition_key, explicit_hash_key, data = record.get_contents()
        if args.corrupt:
            data = spoil(data, args.corrupt)
        print(json.dumps({
            "partition_key": partition_key,
            "explicit_hash_key": explicit_hash_key,
            "data": data.hex(),
        }))

    record = AggRecord()
    for line in sys.stdin:
        user = json.loads(line)
        added = record.add_user_record(
            user["partition_key"], user["data"].encode(), user.get("explicit_hash_key")
        )
        if not added:
            sys.exit("a user record does not fit in one aggregated record")
        if record.get_num_user_records() == args.per_record:
            emit(record)
            record = AggRecord()
    if record.get_num_user_records():
        emit(record)


if __name__ == "__main__":
    main()
