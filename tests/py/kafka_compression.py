"""Compressed batches from a stock Kafka client (confluent-kafka 2.16.1, librdkafka 2.16
with every codec built in): one producer per codec writes 50 records to partition 0, then
an assigned consumer reads the partition back.

usage: kafka_compression.py BOOTSTRAP TOPIC
Prints one JSON document: {"acked": {codec: [[offset, value], ...]}, "consumed": [[offset, value], ...], "errors": [...]}
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

bootstrap, topic = sys.argv[1], sys.argv[2]
report = {"acked": {}, "consumed": [], "errors": []}

for codec in ["gzip", "snappy", "lz4", "zstd"]:
    acked = []

    def delivered(err, msg, acked=acked):
        if err:
            report["errors"].append(f"{codec}: {err}")
        else:
            acked.append([msg.offset(), msg.value().decode()])

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": codec,
            "acks": "all",
            "linger.ms": 20,
            "enable.idempotence": True,
        }
    )
    for i in range(50):
        p.produce(topic, partition=0, value=f"{codec}-{i}-" + "x" * 100, on_delivery=delivered)
    left = p.flush(30)
    if left:
        report["errors"].append(f"{codec}: {left} not delivered")
    report["acked"][codec] = acked

want = sum(len(v) for v in report["acked"].values())
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
c.assign([TopicPartition(topic, 0, 0)])
deadline = time.time() + 30
while len(report["consumed"]) < want and time.time() < deadline:
    m = c.poll(1.0)
    if m is None:
        continue
    if m.error():
        report["errors"].append(f"consume: {m.error()}")
        continue
    report["consumed"].append([m.offset(), m.value().decode()])
c.close()
print(json.dumps(report))
