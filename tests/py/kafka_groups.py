"""Consumer groups of stock Kafka clients against Sluice (pinned by tests/py/requirements.txt):
a 3-member classic group of confluent-kafka 2.16.1 consumers (librdkafka's JoinGroup /
SyncGroup / Heartbeat / OffsetCommit), one member leaving, and a kafka-python 3.0.12 group
consumer plus its admin client describing the groups.

usage: kafka_groups.py BOOTSTRAP TOPIC PARTITIONS
Prints one JSON document with what each step saw.
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaAdminClient, KafkaConsumer

bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
report = {}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def produce(values):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for v in values:
        p.produce(topic, key=v, value=v)
    left = p.flush(30)
    assert left == 0, f"{left} not delivered"


def member(name):
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "cg",
            "client.id": name,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500,
        }
    )


def consume_until(consumers, want, seconds):
    """Polls every consumer in turn, committing each record, until `want` values are seen."""
    seen = {id(c): [] for c in consumers}
    deadline = time.time() + seconds
    total = lambda: sum(len(v) for v in seen.values())
    while total() < want and time.time() < deadline:
        for c in consumers:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                log("poll error", m.error())
                continue
            seen[id(c)].append(m.value().decode())
            c.commit(message=m, asynchronous=False)
    return [seen[id(c)] for c in consumers]


def assignments(consumers, seconds):
    """Polls until every consumer has an assignment and together they cover each partition once."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        for c in consumers:
            c.poll(0.1)
        got = [sorted(tp.partition for tp in c.assignment()) for c in consumers]
        flat = sorted(p for a in got for p in a)
        if all(got) and flat == list(range(partitions)):
            return got
    return [sorted(tp.partition for tp in c.assignment()) for c in consumers]


first = [f"a-{i}" for i in range(300)]
produce(first)
ms = [member(f"m{i}") for i in range(3)]
for c in ms:
    c.subscribe([topic])
consumed = consume_until(ms, len(first), 90)
report["first_consumed"] = consumed
report["three_assignments"] = assignments(ms, 30)

# One member leaves (LeaveGroup): the other two take over its partitions.
ms[2].close()
rest = ms[:2]
report["two_assignments"] = assignments(rest, 60)
second = [f"b-{i}" for i in range(60)]
produce(second)
report["second_consumed"] = consume_until(rest, len(second), 60)

# DescribeGroups while the two are members (kafka-python's admin decodes the assignments).
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
live = admin.describe_groups(["cg"])["cg"]
log("describe cg", live)
report["live_cg"] = {
    "state": live["group_state"],
    "protocol": live["protocol_data"],
    "clients": sorted(m["client_id"] for m in live["members"]),
    "partitions": sorted(
        p
        for m in live["members"]
        for t in (m["member_assignment"] or {}).get("assigned_partitions", [])
        for p in t["partitions"]
    ),
}
for c in rest:
    c.close()

# What the group committed, read by a new consumer of the group (OffsetFetch).
probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "cg", "enable.auto.commit": False})
committed = probe.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
ends = [probe.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(partitions)]
probe.close()
report["committed"] = [tp.offset for tp in committed]
report["end_offsets"] = ends

# kafka-python: a group consumer (its own JoinGroup / SyncGroup codec), auto-committing.
kc = KafkaConsumer(
    topic,
    bootstrap_servers=bootstrap,
    group_id="kpg",
    auto_offset_reset="earliest",
    enable_auto_commit=True,
    auto_commit_interval_ms=200,
    consumer_timeout_ms=8000,
)
kvals = [m.value.decode() for m in kc]
kc.commit()
kc.close()
report["kafka_python_consumed"] = sorted(kvals)

listed = admin.list_groups()
log("list_groups", listed)
report["listed_groups"] = sorted(g["group_id"] if isinstance(g, dict) else g[0] for g in listed)
offsets = admin.list_group_offsets({"kpg": None})["kpg"]
report["kpg_committed"] = {str(tp.partition): om.offset for tp, om in offsets.items()}
desc = admin.describe_groups(["cg", "kpg"])
log("describe_groups", desc)
report["described"] = {g: {"state": d.get("group_state"), "members": len(d.get("members", []))} for g, d in desc.items()}
admin.close()

print(json.dumps(report))
