"""A producer and a consumer over their byte-rate quotas, with confluent-kafka 2.16.1.

produce: client.id=throttled sends 1 KiB records (acks=all) as fast as the client lets it for
SECONDS seconds; reports the bytes delivered in the 10 s from 2 s after the first delivery
(the quota has reached every broker by then), every
delivery error, the throttle events librdkafka reported (throttle_cb) and the count.
consume: client.id=slowreader reads TOPIC partition 0 from the start until COUNT records came;
reports the bytes received in the 10 s after the first record (or all, if it ended sooner),
and the throttle events.

admin (kafka-python 3.0.12 raw requests): AlterClientQuotas sets request_percentage=0.1 for
client id `chatty` (and refuses a bad entry), DescribeClientQuotas lists every quota; then `chatty`
sends Metadata requests until one is answered with a throttle_time_ms (at most 2000), and
`calm` sends as many; each reports the largest throttle_time_ms it was answered with.

usage: kafka_quota.py produce BOOTSTRAP TOPIC SECONDS
       kafka_quota.py consume BOOTSTRAP TOPIC COUNT
       kafka_quota.py admin BOOTSTRAP TOPIC -
Prints one JSON document.
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

mode, bootstrap, topic, arg = sys.argv[1:5]
throttles = []


def on_throttle(event):
    throttles.append(event.throttle_time)


WINDOW = 10.0

if mode == "produce":
    seconds = float(arg)
    deliveries = []  # (time, bytes)
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            deliveries.append((time.monotonic(), len(msg.value())))

    p = Producer({
        "bootstrap.servers": bootstrap,
        "client.id": "throttled",
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 16384,
        "queue.buffering.max.kbytes": 256,
        "throttle_cb": on_throttle,
    })
    value = b"x" * 1024
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < seconds:
        try:
            p.produce(topic, value=value, partition=0, on_delivery=on_delivery)
            sent += 1
        except BufferError:
            p.poll(0.05)
        p.poll(0)
    left = p.flush(60)
    first = (deliveries[0][0] if deliveries else start) + 2.0
    in_window = sum(n for t, n in deliveries if first <= t < first + WINDOW)
    print(json.dumps({
        "sent": sent,
        "delivered": len(deliveries),
        "undelivered": left,
        "errors": errors[:5],
        "window_bytes": in_window,
        "window_seconds": WINDOW,
        "throttle_events": len(throttles),
        "max_throttle_ms": max(throttles, default=0),
    }))
elif mode == "admin":
    from kafka import KafkaAdminClient
    from kafka.protocol.admin import AlterClientQuotasRequest, DescribeClientQuotasRequest
    from kafka.protocol.metadata import MetadataRequest

    def client(client_id):
        return KafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id)

    def send(c, request):
        async def go():
            return await c._manager.send(request, node_id=c._manager.least_loaded_node())
        return c._manager.run(go)

    Entry = AlterClientQuotasRequest.EntryData
    admin = client("quota-admin")
    altered = send(admin, AlterClientQuotasRequest(entries=[
        Entry(entity=[Entry.EntityData(entity_type="client-id", entity_name="chatty")],
              ops=[Entry.OpData(key="request_percentage", value=0.1, remove=False)]),
        Entry(entity=[Entry.EntityData(entity_type="client-id", entity_name="other")],
              ops=[Entry.OpData(key="consumer_byte_rate", value=-1.0, remove=False)]),
    ], validate_only=False, max_version=1))
    described = send(admin, DescribeClientQuotasRequest(components=[], strict=False,
                                                        max_version=1))
    report = {
        "altered": [[e.error_code, e.error_message] for e in altered.entries],
        "described": sorted(
            [[{p.entity_type: p.entity_name for p in e.entity},
              {v.key: v.value for v in e.values}] for e in (described.entries or [])],
            key=json.dumps),
        "describe_error": described.error_code,
    }
    admin.close()
    # chatty sends Metadata requests until one is answered throttled (at most 2000); calm
    # sends as many and never is.
    sent = 0
    for name in ["chatty", "calm"]:
        c = client(name)
        most = 0
        for i in range(sent or 2000):
            r = send(c, MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                        max_version=12))
            most = max(most, r.throttle_time_ms)
            if name == "chatty" and most > 0:
                sent = i + 1
                break
        c.close()
        report[name + "_max_throttle_ms"] = most
    report["requests"] = sent
    print(json.dumps(report))
elif mode == "consume":
    count = int(arg)
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "quota-reader",
        "client.id": "slowreader",
        "enable.auto.commit": False,
        "fetch.max.bytes": 65536,
        "message.max.bytes": 65536,
        "max.partition.fetch.bytes": 65536,
        "throttle_cb": on_throttle,
    })
    c.assign([TopicPartition(topic, 0, 0)])
    got = []  # (time, bytes)
    deadline = time.monotonic() + 120
    while len(got) < count and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got.append((time.monotonic(), len(m.value())))
    c.close()
    first = got[0][0] if got else 0
    in_window = [(t, n) for t, n in got if first <= t < first + WINDOW]
    span = min(WINDOW, (got[-1][0] - first)) if got else 0
    print(json.dumps({
        "received": len(got),
        "window_bytes": sum(n for _, n in in_window),
        "window_seconds": span,
        "throttle_events": len(throttles),
        "max_throttle_ms": max(throttles, default=0),
    }))
