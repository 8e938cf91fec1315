"""DescribeProducers (KIP-664) from kafka-python 3.0.12's KafkaAdminClient.describe_producers:
after an idempotent producer wrote 5 records to partition 0 and 3 to partition 1 (one record
per batch), each partition's leader reports that one producer with its last sequence; a
partition the topic lacks is an error.

usage: kafka_producers.py BOOTSTRAP TOPIC
Prints one JSON document.
"""
import json
import sys

from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

bootstrap, topic = sys.argv[1], sys.argv[2]
report = {}

p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
for partition, n in ((0, 5), (1, 3)):
    for i in range(n):
        p.send(topic, value=f"v{i}".encode(), partition=partition).get(30)
p.close()

a = KafkaAdminClient(bootstrap_servers=bootstrap)
tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
states = a.describe_producers(tps)
ids = set()
for tp in tps:
    rows = states[tp].active_producers
    ids.update(r.producer_id for r in rows)
    report[f"p{tp.partition}"] = [
        {
            "epoch": r.producer_epoch,
            "last_sequence": r.last_sequence,
            "has_timestamp": r.last_timestamp > 0,
            "coordinator_epoch": r.coordinator_epoch,
            "txn_start": r.current_transaction_start_offset,
        }
        for r in rows
    ]
report["one_producer_id"] = len(ids) == 1 and all(i >= 0 for i in ids)
try:
    a.describe_producers([TopicPartition(topic, 9)])
    report["missing_partition"] = "accepted"
except KafkaError as e:
    report["missing_partition"] = type(e).__name__
a.close()
print(json.dumps(report))
