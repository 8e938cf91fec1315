"""Adding partitions under load, with confluent-kafka 2.16.1.

An idempotent acks=all producer writes keyed records to TOPIC (2 partitions) for 3 s, then
`SLUICE topic alter TOPIC --partitions 4` runs while it keeps writing for 5 s more (metadata
refreshed every 500 ms, so it starts using the new partitions). Every delivered record is then
read back from all four partitions and compared with what was acknowledged for each.

usage: kafka_grow.py BOOTSTRAP TOPIC SLUICE
Prints one JSON document.
"""
import json
import subprocess
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

bootstrap, topic, sluice = sys.argv[1:4]
delivered = {}  # partition -> [value]
errors = []


def on_delivery(err, msg):
    if err is not None:
        errors.append(str(err))
    else:
        delivered.setdefault(msg.partition(), []).append(msg.value().decode())


p = Producer({
    "bootstrap.servers": bootstrap,
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 2,
    "topic.metadata.refresh.interval.ms": 500,
})
alter = None
start = time.monotonic()
i = 0
while time.monotonic() - start < 8:
    if alter is None and time.monotonic() - start >= 3:
        alter = subprocess.run([sluice, "topic", "alter", topic, "--partitions", "4",
                                "--bootstrap", bootstrap, "-o", "json"],
                               capture_output=True, text=True, timeout=60)
    p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), on_delivery=on_delivery)
    i += 1
    p.poll(0.002)
left = p.flush(60)

c = Consumer({"bootstrap.servers": bootstrap, "group.id": "grow-check",
              "enable.auto.commit": False})
c.assign([TopicPartition(topic, n, 0) for n in range(4)])
want = sum(len(v) for v in delivered.values())
got = {}
deadline = time.monotonic() + 60
while sum(len(v) for v in got.values()) < want and time.monotonic() < deadline:
    m = c.poll(0.5)
    if m is None or m.error():
        continue
    got.setdefault(m.partition(), []).append(m.value().decode())
c.close()
print(json.dumps({
    "alter_ok": alter is not None and alter.returncode == 0,
    "alter_out": (alter.stdout + alter.stderr) if alter else "",
    "sent": i,
    "undelivered": left,
    "errors": errors[:5],
    "delivered": {str(k): len(v) for k, v in sorted(delivered.items())},
    "consumed": {str(k): len(v) for k, v in sorted(got.items())},
    "same": all(got.get(k) == v for k, v in delivered.items()),
}))
