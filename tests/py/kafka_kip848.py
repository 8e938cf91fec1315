"""A KIP-848 consumer group (group.protocol=consumer, ConsumerGroupHeartbeat) of two
confluent-kafka 2.16.1 consumers: the server assigns the partitions; together they read
every record once and commit.

usage: kafka_kip848.py BOOTSTRAP TOPIC PARTITIONS
Prints one JSON document.
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
report = {}

p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
values = [f"n-{i}" for i in range(200)]
for v in values:
    p.produce(topic, key=v, value=v)
assert p.flush(30) == 0


def member(name):
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "g848",
            "group.protocol": "consumer",
            "client.id": name,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )


ms = [member("a"), member("b")]
for c in ms:
    c.subscribe([topic])
seen = {0: [], 1: []}
deadline = time.time() + 90
while sum(len(v) for v in seen.values()) < len(values) and time.time() < deadline:
    for i, c in enumerate(ms):
        m = c.poll(0.2)
        if m is None or m.error():
            if m is not None:
                print("error", m.error(), file=sys.stderr, flush=True)
            continue
        seen[i].append(m.value().decode())
        # While the group's epoch moves (the other member joining), a commit sent with the
        # epoch this member had a moment ago is STALE_MEMBER_EPOCH, as from Kafka; like an
        # application, retry once the next heartbeat brought the new epoch.
        for attempt in range(50):
            try:
                c.commit(message=m, asynchronous=False)
                break
            except KafkaException as e:
                if e.args[0].code() != KafkaError.STALE_MEMBER_EPOCH or attempt == 49:
                    raise
                report["stale_epoch_retries"] = report.get("stale_epoch_retries", 0) + 1
                c.poll(0.1)
report["consumed"] = [seen[0], seen[1]]
# Both end up with partitions (server-side assignment over 2 members).
deadline = time.time() + 30
while time.time() < deadline:
    for c in ms:
        c.poll(0.1)
    got = [sorted(tp.partition for tp in c.assignment()) for c in ms]
    if all(got) and sorted(x for a in got for x in a) == list(range(partitions)):
        break
report["assignments"] = got
# The admin view while both are members: librdkafka asks ConsumerGroupDescribe (KIP-848)
# first and falls back to DescribeGroups, which reports the type CLASSIC.
from confluent_kafka.admin import AdminClient

admin = AdminClient({"bootstrap.servers": bootstrap})
for _ in range(30):
    for c in ms:
        c.poll(0.1)
    d = admin.describe_consumer_groups(["g848"], request_timeout=10)["g848"].result(30)
    described = {
        "type": d.type.name,
        "state": d.state.name,
        "members": len(d.members),
        "partitions": sorted(
            tp.partition for m in d.members for tp in m.assignment.topic_partitions
        ),
    }
    if described["state"] == "STABLE":
        break
report["described"] = described
for c in ms:
    c.close()
probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "g848", "enable.auto.commit": False})
committed = probe.committed([TopicPartition(topic, i) for i in range(partitions)], timeout=30)
report["committed_total"] = sum(max(tp.offset, 0) for tp in committed)
probe.close()
print(json.dumps(report))
