"""An idempotent acks=all librdkafka producer (confluent-kafka 2.16.1) across a leader kill:
produces COUNT records to partition 0, paced over about SECONDS, printing "acked N" on
stderr as deliveries succeed (the test kills the leader meanwhile); then reads partition 0
back from the beginning.

usage: kafka_failover.py BOOTSTRAP TOPIC COUNT SECONDS
Prints one JSON document: {"acked": [values], "failed": [errors], "consumed": [[offset, value]]}
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

bootstrap, topic, count, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
acked, failed = [], []


def delivered(err, msg):
    if err:
        failed.append(str(err))
    else:
        acked.append(msg.value().decode())
        if len(acked) % 100 == 0:
            print(f"acked {len(acked)}", file=sys.stderr, flush=True)


p = Producer(
    {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 90000,
        "topic.metadata.refresh.interval.ms": 1000,
    }
)
start = time.time()
for i in range(count):
    while True:
        try:
            p.produce(topic, partition=0, value=f"r-{i}", on_delivery=delivered)
            break
        except BufferError:
            p.poll(0.1)
    p.poll(0)
    # Paced, so the leader dies mid-stream.
    due = start + seconds * (i + 1) / count
    if due > time.time():
        time.sleep(due - time.time())
left = p.flush(120)
if left:
    failed.append(f"{left} not delivered")

c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
c.assign([TopicPartition(topic, 0, 0)])
consumed, deadline, idle = [], time.time() + 60, 0
while time.time() < deadline and idle < 5:
    m = c.poll(1.0)
    if m is None:
        idle += 1
        continue
    if m.error():
        continue
    idle = 0
    consumed.append([m.offset(), m.value().decode()])
c.close()
print(json.dumps({"acked": acked, "failed": failed, "consumed": consumed}))
