"""OffsetDelete (KIP-496) from kafka-python 3.0.12's KafkaAdminClient.delete_group_offsets:
while a group member subscribes to the topic its offsets stay (GROUP_SUBSCRIBED_TO_TOPIC);
once the member left they are deleted; an unknown group is GroupIdNotFoundError.

usage: kafka_offset_delete.py BOOTSTRAP TOPIC
Prints one JSON document.
"""
import json
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

bootstrap, topic = sys.argv[1], sys.argv[2]
report = {}

p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
for i in range(10):
    p.send(topic, value=f"v{i}".encode(), partition=i % 2)
p.flush(30)
p.close()

c = KafkaConsumer(
    topic,
    bootstrap_servers=bootstrap,
    group_id="odg",
    auto_offset_reset="earliest",
    enable_auto_commit=False,
)
got = 0
deadline = time.time() + 60
while got < 10 and time.time() < deadline:
    for records in c.poll(timeout_ms=500).values():
        got += len(records)
c.commit()
report["consumed"] = got

admin = KafkaAdminClient(bootstrap_servers=bootstrap)
tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]


def committed():
    return sorted(
        (tp.partition, meta.offset)
        for tp, meta in admin.list_group_offsets({"odg": None}).get("odg", {}).items()
        if tp.topic == topic and meta.offset >= 0
    )


report["committed_before"] = committed()
res = admin.delete_group_offsets("odg", tps)
report["while_subscribed"] = sorted({e.__name__ for e in res.values()})
report["kept"] = committed()
c.close()  # leaves the group
res = admin.delete_group_offsets("odg", tps)
report["after_leaving"] = sorted({e.__name__ for e in res.values()})
report["committed_after"] = committed()
try:
    admin.delete_group_offsets("no-such-group", tps)
    report["unknown_group"] = "accepted"
except KafkaError as e:
    report["unknown_group"] = type(e).__name__
admin.close()
print(json.dumps(report))
