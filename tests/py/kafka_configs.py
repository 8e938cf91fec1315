"""Partitions and configs from stock Kafka admin clients: confluent-kafka 2.16.1's AdminClient
(librdkafka) adds partitions (CreatePartitions), sets, reads and resets a topic config
(IncrementalAlterConfigs, DescribeConfigs), replaces a topic's overrides (AlterConfigs),
sees bad requests refused, and describes the
cluster (DescribeCluster); kafka-python 3.0.12's KafkaAdminClient reads the config back.

usage: kafka_configs.py BOOTSTRAP
Prints one JSON document with what each step saw.
"""
import json
import sys
import time
import warnings

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KConfigResource
from kafka.admin import ConfigResourceType as KConfigResourceType

bootstrap = sys.argv[1]
report = {}


def wait(pred, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def error_name(f):
    try:
        f.result(30)
        return "accepted"
    except KafkaException as e:
        return e.args[0].name()


c = AdminClient({"bootstrap.servers": bootstrap})
for f in c.create_topics([NewTopic("cfg-a", num_partitions=2, replication_factor=1)]).values():
    f.result(30)


def partitions_of(name):
    t = c.list_topics(timeout=30).topics.get(name)
    return len(t.partitions) if t is not None and t.partitions else None


wait(lambda: partitions_of("cfg-a") == 2)
c.create_partitions([NewPartitions("cfg-a", 5)])["cfg-a"].result(30)
report["grown"] = wait(lambda: partitions_of("cfg-a") == 5)
report["shrink"] = error_name(c.create_partitions([NewPartitions("cfg-a", 3)])["cfg-a"])
report["unknown_topic_partitions"] = error_name(
    c.create_partitions([NewPartitions("cfg-nope", 3)])["cfg-nope"]
)


def topic_resource(*entries):
    return ConfigResource(ResourceType.TOPIC, "cfg-a", incremental_configs=list(entries))


def describe():
    r = ConfigResource(ResourceType.TOPIC, "cfg-a")
    return list(c.describe_configs([r]).values())[0].result(30)


res = topic_resource(
    ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)
)
list(c.incremental_alter_configs([res]).values())[0].result(30)
entries = describe()
report["retention"] = entries["retention.ms"].value
report["retention_source"] = ConfigSource(entries["retention.ms"].source).name
report["segment_source"] = ConfigSource(entries["segment.bytes"].source).name
bad = topic_resource(
    ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)
)
report["bad_value"] = error_name(list(c.incremental_alter_configs([bad]).values())[0])
append = topic_resource(
    ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND)
)
report["append_op"] = error_name(list(c.incremental_alter_configs([append]).values())[0])

kp = KafkaAdminClient(bootstrap_servers=bootstrap)
kr = kp.describe_configs([KConfigResource(KConfigResourceType.TOPIC, "cfg-a")])
# {resource type: {resource name: {key: {config data}}}}, only keys that are not defaults.
kp_value = kr.get("topic", {}).get("cfg-a", {}).get("retention.ms", {}).get("value")
report["kp_retention"] = kp_value
kp.close()

reset = topic_resource(
    ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)
)
list(c.incremental_alter_configs([reset]).values())[0].result(30)
entries = describe()
report["reset_source"] = ConfigSource(entries["retention.ms"].source).name

# AlterConfigs, the non-incremental API (deprecated in librdkafka, what kafkajs sends): the
# given set replaces every override of the topic.
two = topic_resource(
    ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
    ConfigEntry("segment.ms", "3600000", incremental_operation=AlterConfigOpType.SET),
)
list(c.incremental_alter_configs([two]).values())[0].result(30)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    replace = ConfigResource(
        ResourceType.TOPIC, "cfg-a", set_config={"retention.bytes": "1048576"}
    )
    list(c.alter_configs([replace]).values())[0].result(30)
entries = describe()
report["replaced"] = {
    k: ConfigSource(entries[k].source).name for k in ("retention.bytes", "retention.ms", "segment.ms")
}
report["replaced_value"] = entries["retention.bytes"].value

cluster = c.describe_cluster().result(30)
report["cluster_brokers"] = len(cluster.nodes)
report["cluster_id_set"] = bool(cluster.cluster_id)
report["controller_is_a_broker"] = cluster.controller is not None and any(
    n.id == cluster.controller.id for n in cluster.nodes
)
print(json.dumps(report))
