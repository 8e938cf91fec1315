"""Group membership across a coordinator failover, with confluent-kafka 2.16.1 (librdkafka):
a classic group (JoinGroup/SyncGroup, range assignor) and a KIP-848 group
(`group.protocol=consumer`), two members each, on one topic. Once both are stable and have
read and committed what was produced, this prints `ready COORDINATOR` on stderr and keeps
polling until a line arrives on stdin (the caller kills that broker meanwhile). Then it
produces more, reads it, commits every member's position synchronously and waits until each
group is described stable by a new coordinator. Kafka keeps membership in
`__consumer_offsets`, so no member is revoked, loses partitions or is fenced: the commits
carry the same generation / member epoch and the new coordinator accepts them.

usage: kafka_coordinator_failover.py BOOTSTRAP TOPIC PARTITIONS
Prints one JSON document with what each step saw.
"""
import json
import select
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
GROUPS = {"classic": "cf-classic", "consumer": "cf-consumer"}
events = []
report = {}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Member:
    def __init__(self, protocol, name):
        conf = {
            "bootstrap.servers": bootstrap,
            "group.id": GROUPS[protocol],
            "client.id": name,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
        if protocol == "consumer":
            conf["group.protocol"] = "consumer"
        else:
            conf.update({"session.timeout.ms": 30000, "heartbeat.interval.ms": 500})
        self.protocol = protocol
        self.name = name
        self.assigned = set()
        self.values = []
        self.c = Consumer(conf)
        self.c.subscribe(
            [topic],
            on_assign=self.on_assign,
            on_revoke=self.on_revoke,
            on_lost=self.on_lost,
        )

    # The classic range assignor is eager (a full assignment each time); the consumer
    # protocol is incremental (only what is added or taken away).
    def on_assign(self, c, ps):
        got = {p.partition for p in ps}
        self.assigned = self.assigned | got if self.protocol == "consumer" else got
        events.append([self.name, "assign", sorted(got)])

    def on_revoke(self, c, ps):
        gone = {p.partition for p in ps}
        self.assigned -= gone
        events.append([self.name, "revoke", sorted(gone)])

    def on_lost(self, c, ps):
        self.assigned -= {p.partition for p in ps}
        events.append([self.name, "lost", sorted(p.partition for p in ps)])

    def poll(self):
        m = self.c.poll(0.05)
        if m is None:
            return
        if m.error():
            log(self.name, "poll error", m.error())
            return
        self.values.append(m.value().decode())

    def commit(self, seconds):
        """Commits the position synchronously, retrying while the coordinator moves."""
        deadline = time.time() + seconds
        while True:
            try:
                parts = self.c.commit(asynchronous=False)
                errors = [str(p.error) for p in parts if p.error is not None]
                if not errors:
                    return "ok"
                if time.time() > deadline:
                    return errors
            except KafkaException as e:
                err = e.args[0]
                if not err.retriable() or time.time() > deadline:
                    return f"{err.name()}: {err.str()}"
                log(self.name, "commit retry", err)
            for _ in range(4):
                self.poll()


members = [
    Member("classic", "classic-a"),
    Member("classic", "classic-b"),
    Member("consumer", "consumer-a"),
    Member("consumer", "consumer-b"),
]


def group_members(protocol):
    return [m for m in members if m.protocol == protocol]


def settled():
    for protocol in GROUPS:
        ms = group_members(protocol)
        sets = [m.assigned for m in ms]
        if any(not s for s in sets) or sum(len(s) for s in sets) != partitions:
            return False
        if set().union(*sets) != set(range(partitions)):
            return False
    return True


def poll_until(done, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        for m in members:
            m.poll()
        if done():
            return
    raise SystemExit(f"timed out waiting for {what}: {report} {events}")


admin = AdminClient({"bootstrap.servers": bootstrap})


def describe():
    fs = admin.describe_consumer_groups(list(GROUPS.values()), request_timeout=10)
    out = {}
    for g, f in fs.items():
        d = f.result()
        out[g] = {
            "state": d.state.name,
            "type": d.type.name,
            "coordinator": d.coordinator.id,
            "members": sorted(m.client_id for m in d.members),
        }
    return out


def described_stable(not_on=None):
    """Both groups described STABLE with their two members (by a coordinator other than
    `not_on`); polls the members in between."""
    try:
        d = describe()
    except KafkaException as e:
        log("describe", e)
        return None
    for g in d.values():
        if g["state"] != "STABLE" or len(g["members"]) != 2 or g["coordinator"] == not_on:
            return None
    return d


produced = 0


def produce(n):
    global produced
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(produced, produced + n):
        p.produce(topic, value=f"v{i}", partition=i % partitions)
    left = p.flush(90)
    if left:
        raise SystemExit(f"{left} records not delivered")
    produced += n


def read_everything(what):
    def done():
        return all(
            len(set(sum((m.values for m in group_members(p)), []))) == produced
            for p in GROUPS
        )

    poll_until(done, 90, what)


poll_until(settled, 90, "both groups assigned")
state = {}
deadline = time.time() + 60
while not state:
    for m in members:
        m.poll()
    state = described_stable() or {}
    if time.time() > deadline:
        raise SystemExit(f"groups not described stable: {events}")
report["before"] = state
report["assigned_before"] = {m.name: sorted(m.assigned) for m in members}
produce(40)
read_everything("the first records")
report["commits_before"] = {m.name: m.commit(30) for m in members}
coordinators = {g["coordinator"] for g in state.values()}
if len(coordinators) != 1:
    raise SystemExit(f"the groups have different coordinators: {state}")
coordinator = coordinators.pop()
events_at_kill = len(events)
log(f"ready {coordinator}")
while not select.select([sys.stdin], [], [], 0)[0]:
    for m in members:
        m.poll()
sys.stdin.readline()

produce(40)
read_everything("the records produced after the coordinator was killed")
report["commits_after"] = {m.name: m.commit(90) for m in members}
after = {}
deadline = time.time() + 90
while not after:
    for m in members:
        m.poll()
    after = described_stable(not_on=coordinator) or {}
    if time.time() > deadline:
        raise SystemExit(f"groups not described stable by a new coordinator: {events}")
report["after"] = after
report["assigned_after"] = {m.name: sorted(m.assigned) for m in members}
report["events_after_kill"] = events[events_at_kill:]
report["events"] = list(events)
report["consumed"] = {
    p: sorted(set(sum((m.values for m in group_members(p)), []))) == sorted(f"v{i}" for i in range(produced))
    for p in GROUPS
}
for m in members:
    m.c.close()
print(json.dumps(report))
