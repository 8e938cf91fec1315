"""Stock Kafka clients against a Sluice broker's port (pinned by .ci/run):
confluent-kafka 2.16.1 (librdkafka 2.16) with idempotence, and kafka-python 3.0.12.

usage: kafka_clients.py BOOTSTRAP TOPIC PARTITIONS
Prints one JSON document: what each client produced and consumed back.
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition

bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
report = {}

# confluent-kafka: idempotent, acks=all, keyed, with a header.
acked, errors = [], []


def delivered(err, msg):
    if err:
        errors.append(str(err))
    else:
        acked.append([msg.partition(), msg.offset(), msg.value().decode()])


p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
for i in range(200):
    p.produce(topic, key=f"key-{i % 5}", value=f"ck-{i}", headers=[("h", b"x")], on_delivery=delivered)
left = p.flush(30)
report["confluent_acked"] = acked
report["confluent_errors"] = errors + ([f"{left} not delivered"] if left else [])

# kafka-python: its defaults (acks=all in 3.x).
kp = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
futures = [kp.send(topic, key=b"kp", value=f"kp-{i}".encode()) for i in range(50)]
kp.flush(30)
report["kafka_python_acked"] = [[m.partition, m.offset, f"kp-{i}"] for i, m in enumerate(f.get(timeout=30) for f in futures)]
kp.close()

# Read everything back with both consumers (assigned partitions, from the beginning).
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
c.assign([TopicPartition(topic, i, 0) for i in range(partitions)])
want = len(report["confluent_acked"]) + len(report["kafka_python_acked"])
got, deadline = [], time.time() + 30
while len(got) < want and time.time() < deadline:
    m = c.poll(1.0)
    if m is None or m.error():
        continue
    got.append([m.partition(), m.offset(), m.value().decode(), [[k, v.decode()] for k, v in (m.headers() or [])]])
c.close()
report["confluent_consumed"] = got

kc = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000)
kc.assign([KTopicPartition(topic, i) for i in range(partitions)])
kc.seek_to_beginning()
report["kafka_python_consumed"] = [[m.partition, m.offset, m.value.decode()] for m in kc]
kc.close()
print(json.dumps(report))
