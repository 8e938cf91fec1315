"""A SASL_SSL session of a user that gets deleted, with confluent-kafka 2.16.1 (librdkafka).

Produces one record as USER (SCRAM-SHA-512) and waits for its delivery, then prints `ready`
on stderr and waits for a line on stdin (the caller deletes the user meanwhile). Then it
produces again on the same producer (its connections are open and authenticated) and waits
up to 15 s. A deleted user's session must end: the second record is not delivered and the
client reports an authentication error when it tries again.

usage: kafka_sasl_session.py BOOTSTRAP CA TOPIC USER PASSWORD
Prints one JSON document with what each step saw.
"""
import json
import sys

from confluent_kafka import Producer

bootstrap, ca, topic, user, password = sys.argv[1:6]
errors = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


p = Producer(
    {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": ca,
        "message.timeout.ms": 10000,
        "error_cb": lambda e: errors.append(str(e)),
    }
)


def produce(value):
    results = []
    p.produce(topic, value=value, on_delivery=lambda err, msg: results.append(err))
    p.flush(15)
    if not results:
        return "no report"
    return "delivered" if results[0] is None else str(results[0])


report = {"before": produce(b"before")}
log("ready", report["before"])
sys.stdin.readline()
errors.clear()
report["after"] = produce(b"after")
report["errors"] = errors
print(json.dumps(report))
