"""A gRPC client that knows nothing of Sluice but what server reflection tells it.

Usage: reflect_produce_fetch.py HOST:PORT TOPIC VALUE

Lists the services, fetches the descriptors of sluice.v1.Broker, builds the message
classes from them, produces VALUE to partition 0 of TOPIC as a plain record and fetches
it back as decoded records. Prints one JSON line: services, offset, fetched values.
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def main() -> None:
    addr, topic, value = sys.argv[1], sys.argv[2], sys.argv[3]
    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=10)
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)

    def ask(**kw):
        req = reflection_pb2.ServerReflectionRequest(**kw)
        return next(iter(reflection.ServerReflectionInfo(iter([req]), timeout=10)))

    services = [
        s.name for s in ask(list_services="").list_services_response.service
    ]
    assert "sluice.v1.Broker" in services, services

    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add_file(proto_bytes):
        fd = descriptor_pb2.FileDescriptorProto.FromString(proto_bytes)
        if fd.name in added:
            return
        for dep in fd.dependency:
            if dep not in added:
                for b in ask(file_by_filename=dep).file_descriptor_response.file_descriptor_proto:
                    add_file(b)
        pool.Add(fd)
        added.add(fd.name)

    resp = ask(file_containing_symbol="sluice.v1.Broker")
    for b in resp.file_descriptor_response.file_descriptor_proto:
        add_file(b)

    service = pool.FindServiceByName("sluice.v1.Broker")

    def call(method_name, fields):
        method = service.FindMethodByName(method_name)
        req_cls = message_factory.GetMessageClass(method.input_type)
        resp_cls = message_factory.GetMessageClass(method.output_type)
        rpc = channel.unary_unary(
            f"/sluice.v1.Broker/{method_name}",
            request_serializer=req_cls.SerializeToString,
            response_deserializer=resp_cls.FromString,
        )
        req = req_cls()
        for k, v in fields.items():
            if isinstance(v, dict):
                getattr(req, k).CopyFrom(v["__msg__"])
            else:
                setattr(req, k, v)
        return rpc(req, timeout=10)

    record_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("sluice.v1.Record"))
    list_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("sluice.v1.RecordList"))
    records = list_cls(records=[record_cls(key=b"py", value=value.encode())])
    produced = call(
        "Produce",
        {"topic": topic, "partition": 0, "acks": -1, "records": {"__msg__": records}},
    )
    fmt = pool.FindEnumTypeByName("sluice.v1.RecordFormat").values_by_name["RECORD_FORMAT_RECORDS"].number
    fetched = call(
        "Fetch",
        {
            "topic": topic,
            "partition": 0,
            "fetch_offset": produced.base_offset,
            "max_bytes": 1 << 20,
            "format": fmt,
        },
    )
    print(
        json.dumps(
            {
                "services": services,
                "offset": produced.base_offset,
                "values": [r.value.decode() for r in fetched.records],
            }
        )
    )


if __name__ == "__main__":
    main()
