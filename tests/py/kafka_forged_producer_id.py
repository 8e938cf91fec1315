"""Producer ids are bound to the principal that was given them (issue #16), kafka-python 3.0.12
raw requests over SASL_SSL.

alice and mallory may both write TOPIC. alice asks for a producer id (InitProducerId) and
writes her first idempotent batch; mallory then writes a batch under alice's id at alice's
next sequence (were it accepted, alice's real second batch would look like a duplicate and be
acknowledged and dropped), and one under an id never handed out. Then mallory gets her own id
from another broker and at once writes under it to the leader, and alice sends her second
batch.

usage: kafka_forged_producer_id.py BOOTSTRAP CA TOPIC ALICE_PASSWORD MALLORY_PASSWORD
Prints one JSON document: each step's partition error code and base offset, and the ids.
"""
import json
import sys
import time

from kafka import KafkaAdminClient
from kafka.protocol.producer import InitProducerIdRequest, ProduceRequest
from kafka.record.default_records import DefaultRecordBatchBuilder

bootstrap, ca, topic, alice_pw, mallory_pw = sys.argv[1:6]


def admin(user, password):
    return KafkaAdminClient(bootstrap_servers=bootstrap, security_protocol="SASL_SSL",
                            sasl_mechanism="SCRAM-SHA-256", sasl_plain_username=user,
                            sasl_plain_password=password, ssl_cafile=ca,
                            request_timeout_ms=20000)


def send(client, request, node):
    async def go():
        return await client._manager.send(request, node_id=node)
    return client._manager.run(go)


def leader(client):
    for t in client.describe_topics([topic]):
        if t["name"] == topic:
            for p in t["partitions"]:
                if p["partition_index"] == 0:
                    return p["leader_id"]
    raise SystemExit("no leader for %s-0" % topic)


def init_producer_id(client, node):
    r = send(client, InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60000,
                                           producer_id=-1, producer_epoch=-1, max_version=4),
             node)
    if r.error_code != 0:
        raise SystemExit("InitProducerId failed: %d" % r.error_code)
    return r.producer_id


def produce(client, node, producer_id, sequence, value):
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                  producer_id=producer_id, producer_epoch=0,
                                  base_sequence=sequence, batch_size=1 << 20)
    b.append(0, int(time.time() * 1000), None, value.encode(), [])
    Topic = ProduceRequest.TopicProduceData
    Partition = Topic.PartitionProduceData
    req = ProduceRequest(transactional_id=None, acks=-1, timeout_ms=15000,
                         topic_data=[Topic(name=topic, partition_data=[
                             Partition(index=0, records=bytes(b.build()))])],
                         max_version=9)
    r = send(client, req, node)
    p = r.responses[0].partition_responses[0]
    return {"error_code": p.error_code, "base_offset": p.base_offset}


alice = admin("alice", alice_pw)
mallory = admin("mallory", mallory_pw)
node = leader(alice)
report = {}
alice_id = init_producer_id(alice, node)
report["alice_id"] = alice_id
report["alice_0"] = produce(alice, node, alice_id, 0, "alice-0")
report["mallory_as_alice"] = produce(mallory, node, alice_id, 1, "forged")
report["mallory_unallocated"] = produce(mallory, node, 1 << 50, 0, "forged")
# Mallory's id comes from another broker than the leader she then writes to: the leader
# learns of the grant through the metadata log, maybe after her produce arrives.
ids = [b.get("node_id", b.get("broker_id")) for b in alice.describe_cluster()["brokers"]]
other = next(i for i in ids if i != node)
mallory_id = init_producer_id(mallory, other)
report["mallory_id"] = mallory_id
report["mallory_0"] = produce(mallory, node, mallory_id, 0, "mallory-0")
report["alice_1"] = produce(alice, node, alice_id, 1, "alice-1")
alice.close()
mallory.close()
print(json.dumps(report))
