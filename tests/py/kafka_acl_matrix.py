"""One user's side of the ACL matrix, with confluent-kafka 2.16.1 (librdkafka) over SASL_SSL.

Runs each operation with fresh clients and reports what the cluster answered: "OK" or the
error's name (TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, ...). Operations:
  metadata      Metadata for TOPIC
  produce       one record to TOPIC (acks=all, not idempotent)
  consume       partition 0 of TOPIC from offset 0, no group (kafka-python 3.0.12)
  commit        offset 1 of TOPIC-0 for GROUP (kafka-python 3.0.12: librdkafka reports a
                refused FindCoordinator only as "waiting for the coordinator")
  create_topic  a topic named acl-made-by-USER
  delete_topic  TOPIC
  alter_config  retention.ms of TOPIC
  create_acl    an ACL for User:ghost
  describe_acls every ACL (kafka-python 3.0.12: librdkafka's describe_acls drops the
                response's top-level error code and reports an empty list)
  produce_internal  one record to __consumer_offsets

usage: kafka_acl_matrix.py BOOTSTRAP CA USER PASSWORD TOPIC GROUP
Prints one JSON document {operation: outcome}.
"""
import json
import sys
import time

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

bootstrap, ca, user, password, topic, group = sys.argv[1:7]
common = {
    "bootstrap.servers": bootstrap,
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-256",
    "sasl.username": user,
    "sasl.password": password,
    "ssl.ca.location": ca,
}
TIMEOUT = 15


def name(e):
    if isinstance(e, KafkaException):
        e = e.args[0]
    if isinstance(e, KafkaError):
        return e.name()
    return type(e).__name__ + ": " + str(e)


def admin_result(futures):
    try:
        for f in futures.values():
            f.result(timeout=TIMEOUT)
        return "OK"
    except Exception as e:  # noqa: BLE001 - the error's name is the result
        return name(e)


def metadata():
    a = AdminClient(common)
    md = a.list_topics(topic=topic, timeout=TIMEOUT)
    t = md.topics.get(topic)
    if t is None:
        return "MISSING"
    return "OK" if t.error is None else t.error.name()


def produce_to(target):
    p = Producer({**common, "acks": "all", "message.timeout.ms": 10000})
    out = []
    p.produce(target, value=("by " + user).encode(), partition=0,
              on_delivery=lambda err, msg: out.append(err))
    p.flush(TIMEOUT)
    if not out:
        return "NOT_DELIVERED"
    return "OK" if out[0] is None else out[0].name()


def kpy_config():
    return dict(bootstrap_servers=bootstrap, security_protocol="SASL_SSL",
                sasl_mechanism="SCRAM-SHA-256", sasl_plain_username=user,
                sasl_plain_password=password, ssl_cafile=ca)


def kpy_error(e):
    # kafka-python's errors carry Kafka's name (TopicAuthorizationFailedError.message is
    # "TOPIC_AUTHORIZATION_FAILED").
    return getattr(e, "message", None) or type(e).__name__


def consume():
    # kafka-python without a group: only the topic's ACLs are involved.
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTopicPartition
    c = KafkaConsumer(group_id=None, enable_auto_commit=False, **kpy_config())
    try:
        tp = KTopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, 0)
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            if c.poll(timeout_ms=1000).get(tp):
                return "OK"
        return "NOTHING"
    except Exception as e:  # noqa: BLE001
        return kpy_error(e)
    finally:
        c.close()


def commit():
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTopicPartition
    from kafka.structs import OffsetAndMetadata
    c = KafkaConsumer(group_id=group, enable_auto_commit=False, **kpy_config())
    try:
        c.commit({KTopicPartition(topic, 0): OffsetAndMetadata(1, "", -1)})
        return "OK"
    except Exception as e:  # noqa: BLE001
        return kpy_error(e)
    finally:
        c.close()


def create_topic():
    a = AdminClient(common)
    return admin_result(a.create_topics([NewTopic("acl-made-by-" + user, 1, 1)]))


def delete_topic():
    a = AdminClient(common)
    return admin_result(a.delete_topics([topic], operation_timeout=10))


def alter_config():
    a = AdminClient(common)
    r = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "1234", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    return admin_result(a.incremental_alter_configs([r]))


def create_acl():
    a = AdminClient(common)
    b = AclBinding(ResourceType.TOPIC, "ghost-topic", ResourcePatternType.LITERAL,
                   "User:ghost", "*", AclOperation.READ, AclPermissionType.ALLOW)
    return admin_result(a.create_acls([b]))


def describe_acls():
    from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType,
                             ACLResourcePatternType, KafkaAdminClient, ResourcePatternFilter)
    from kafka.admin import ResourceType as KResourceType
    a = KafkaAdminClient(**kpy_config())
    f = ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                  permission_type=ACLPermissionType.ANY,
                  resource_pattern=ResourcePatternFilter(KResourceType.ANY, None,
                                                         ACLResourcePatternType.ANY))
    try:
        a.describe_acls(f)
        return "OK"
    except Exception as e:  # noqa: BLE001
        return kpy_error(e)
    finally:
        a.close()


ops = {
    "metadata": metadata,
    "produce": lambda: produce_to(topic),
    "consume": consume,
    "commit": commit,
    "create_topic": create_topic,
    "delete_topic": delete_topic,
    "alter_config": alter_config,
    "create_acl": create_acl,
    "describe_acls": describe_acls,
    "produce_internal": lambda: produce_to("__consumer_offsets"),
}
results = {}
for op, f in ops.items():
    try:
        results[op] = f()
    except Exception as e:  # noqa: BLE001
        results[op] = name(e)
print(json.dumps(results))
