"""Topic administration from stock Kafka admin clients: kafka-python 3.0.12's
KafkaAdminClient and confluent-kafka 2.16.1's AdminClient create topics (partitions,
replication factor, configs), see a duplicate and a bad config refused, and delete them.

usage: kafka_admin.py BOOTSTRAP
Prints one JSON document with what each step saw.
"""
import json
import sys
import time

from confluent_kafka.admin import AdminClient, NewTopic as CNewTopic
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError

bootstrap = sys.argv[1]
report = {}


def wait(pred, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


kp = KafkaAdminClient(bootstrap_servers=bootstrap)
kp.create_topics([NewTopic("kp-a", num_partitions=4, replication_factor=3, topic_configs={"retention.ms": "3600000"})])
report["kp_listed"] = wait(lambda: "kp-a" in kp.list_topics())
# Kept, for the test to read its config back over Sluice's own admin API.
kp.create_topics([NewTopic("kp-keep", num_partitions=1, replication_factor=1, topic_configs={"retention.ms": "3600000"})])
try:
    kp.create_topics([NewTopic("kp-a", num_partitions=1, replication_factor=1)])
    report["kp_duplicate"] = "accepted"
except KafkaError as e:
    report["kp_duplicate"] = type(e).__name__
try:
    kp.create_topics([NewTopic("kp-bad", num_partitions=1, replication_factor=1, topic_configs={"retention.ms": "soon"})])
    report["kp_bad_config"] = "accepted"
except KafkaError as e:
    report["kp_bad_config"] = type(e).__name__

c = AdminClient({"bootstrap.servers": bootstrap})
fs = c.create_topics([CNewTopic("ck-a", num_partitions=2, replication_factor=3, config={"cleanup.policy": "delete"})])
for t, f in fs.items():
    f.result(30)


def partitions_of(name):
    """Partitions Metadata shows for `name` (None until the answering broker has the topic:
    a created topic reaches each broker's metadata a moment after CreateTopics returns)."""
    t = c.list_topics(timeout=30).topics.get(name)
    return len(t.partitions) if t is not None and t.partitions else None


wait(lambda: partitions_of("ck-a") and partitions_of("kp-a"))
report["ck_partitions"] = partitions_of("ck-a")
report["kp_partitions"] = partitions_of("kp-a")

# Delete with each client.
kp.delete_topics(["kp-a"])
for t, f in c.delete_topics(["ck-a"]).items():
    f.result(30)
report["deleted"] = wait(lambda: not ({"kp-a", "ck-a"} & set(kp.list_topics())))
kp.close()
print(json.dumps(report))
