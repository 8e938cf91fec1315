"""Static group membership (KIP-345) with confluent-kafka 2.16.1 (librdkafka) against Sluice:
two members with `group.instance.id`, one process closed and a new one started with the
same instance id within the session timeout. Kafka keeps the group stable: the new process
takes the old member's place and partitions, the other member sees no rebalance.

usage: kafka_static.py BOOTSTRAP TOPIC PARTITIONS
Prints one JSON document with what each step saw.
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer

bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
report = {"events": []}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Member:
    def __init__(self, name, instance):
        self.name = name
        self.assigned = []
        self.c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "static",
                "group.instance.id": instance,
                "client.id": name,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 30000,
                "heartbeat.interval.ms": 500,
            }
        )
        self.c.subscribe([topic], on_assign=self.on_assign, on_revoke=self.on_revoke)

    def on_assign(self, c, ps):
        self.assigned = sorted(p.partition for p in ps)
        report["events"].append([self.name, "assign", self.assigned])

    def on_revoke(self, c, ps):
        report["events"].append([self.name, "revoke", sorted(p.partition for p in ps)])
        self.assigned = []

    def poll(self):
        m = self.c.poll(0.1)
        if m is not None and not m.error():
            return (m.partition(), m.value().decode())
        if m is not None:
            log(self.name, "poll error", m.error())
        return None


def poll_until(members, done, seconds, what):
    deadline = time.time() + seconds
    got = {m.name: [] for m in members}
    while time.time() < deadline:
        for m in members:
            r = m.poll()
            if r is not None:
                got[m.name].append(r)
        if done(got):
            return got
    raise SystemExit(f"timed out waiting for {what}: {report} {got}")


a = Member("a", "instance-a")
b = Member("b", "instance-b")
poll_until(
    [a, b],
    lambda _: a.assigned and b.assigned and len(a.assigned) + len(b.assigned) == partitions,
    60,
    "both members assigned",
)
report["before"] = {"a": a.assigned, "b": b.assigned}
b_partitions = b.assigned
# librdkafka does not send LeaveGroup when a static member closes (KIP-345).
b.c.close()
report["events"].append(["b", "closed", []])
b2 = Member("b2", "instance-b")
poll_until([a, b2], lambda _: bool(b2.assigned), 30, "the new process of instance-b assigned")
report["after"] = {"a": a.assigned, "b2": b2.assigned}
report["b_partitions"] = b_partitions

p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
values = [f"v{i}" for i in range(60)]
for i, v in enumerate(values):
    p.produce(topic, value=v, partition=i % partitions)
assert p.flush(30) == 0
got = poll_until(
    [a, b2],
    lambda g: sum(len(x) for x in g.values()) >= len(values),
    60,
    "every record consumed",
)
report["consumed"] = {k: sorted(set(p for p, _ in v)) for k, v in got.items()}
report["consumed_count"] = sum(len(v) for v in got.values())
# Closing revokes the members' own partitions (their callbacks run): not a rebalance.
report["events_before_close"] = list(report["events"])
a.c.close()
b2.c.close()
print(json.dumps(report))
