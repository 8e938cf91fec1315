"""DescribeConfigs of BROKER resources with confluent-kafka 2.16.1's AdminClient and
kafka-python 3.0.12 against Sluice: each broker answers for itself with its static configs.

usage: kafka_broker_configs.py BOOTSTRAP BROKER_ID
Prints one JSON document.
"""
import json
import sys

from confluent_kafka.admin import AdminClient, ConfigResource
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KpConfigResource, ConfigResourceType

bootstrap, broker = sys.argv[1], sys.argv[2]
report = {}
admin = AdminClient({"bootstrap.servers": bootstrap})
res = ConfigResource(ConfigResource.Type.BROKER, broker)
configs = admin.describe_configs([res])[res].result(timeout=30)
report["confluent"] = {
    k: {
        "value": v.value,
        "source": v.source,
        "read_only": v.is_read_only,
    }
    for k, v in configs.items()
}
kp = KafkaAdminClient(bootstrap_servers=bootstrap)
out = kp.describe_configs(
    [KpConfigResource(ConfigResourceType.BROKER, broker)], config_filter="static"
)
# {resource type: {resource name: {key: {config data}}}}, only the static broker configs.
entries = out.get("broker", {}).get(broker, {})
report["kafka_python"] = {k: v.get("value") for k, v in entries.items()}
kp.close()
print(json.dumps(report))
