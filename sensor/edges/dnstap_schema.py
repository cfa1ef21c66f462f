"""The dnstap protobuf schema, declared here and built at import.

dnstap's public schema (the `dnstap/dnstap.pb` repository, `dnstap.proto`)
fixes the field numbers and types below; this table is the project's own
description of the part the sensor reads, turned into message classes
with the `protobuf` package's descriptor API, so there is no generated
code and no protoc step. Fields not declared here (`Message.policy`,
`Message.http_protocol`) are kept by the parser as unknown fields and
ignored. Everything is `optional` (proto2): a missing `type` is the
decoder's business to count, not a parse failure.
"""

from __future__ import annotations

import enum

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "dnstap"
CONTENT_TYPE = b"protobuf:dnstap.Dnstap"  # the Frame Streams content type


class DnstapType(enum.IntEnum):
    MESSAGE = 1


class SocketFamily(enum.IntEnum):
    INET = 1
    INET6 = 2


class SocketProtocol(enum.IntEnum):
    UDP = 1
    TCP = 2
    DOT = 3
    DOH = 4
    DNSCRYPT_UDP = 5
    DNSCRYPT_TCP = 6
    DOQ = 7


class MessageType(enum.IntEnum):
    AUTH_QUERY = 1
    AUTH_RESPONSE = 2
    RESOLVER_QUERY = 3
    RESOLVER_RESPONSE = 4
    CLIENT_QUERY = 5
    CLIENT_RESPONSE = 6
    FORWARDER_QUERY = 7
    FORWARDER_RESPONSE = 8
    STUB_QUERY = 9
    STUB_RESPONSE = 10
    TOOL_QUERY = 11
    TOOL_RESPONSE = 12
    UPDATE_QUERY = 13
    UPDATE_RESPONSE = 14


_F = descriptor_pb2.FieldDescriptorProto
# message name -> [(field name, number, type, message type name or None)]
FIELDS = {
    "Dnstap": [
        ("identity", 1, _F.TYPE_BYTES, None),
        ("version", 2, _F.TYPE_BYTES, None),
        ("extra", 3, _F.TYPE_BYTES, None),
        ("message", 14, _F.TYPE_MESSAGE, "Message"),
        ("type", 15, _F.TYPE_UINT32, None),  # enum Dnstap.Type on the wire: a varint
    ],
    "Message": [
        ("type", 1, _F.TYPE_UINT32, None),  # enum Message.Type
        ("socket_family", 2, _F.TYPE_UINT32, None),  # enum SocketFamily
        ("socket_protocol", 3, _F.TYPE_UINT32, None),  # enum SocketProtocol
        ("query_address", 4, _F.TYPE_BYTES, None),
        ("response_address", 5, _F.TYPE_BYTES, None),
        ("query_port", 6, _F.TYPE_UINT32, None),
        ("response_port", 7, _F.TYPE_UINT32, None),
        ("query_time_sec", 8, _F.TYPE_UINT64, None),
        ("query_time_nsec", 9, _F.TYPE_FIXED32, None),
        ("query_message", 10, _F.TYPE_BYTES, None),
        ("query_zone", 11, _F.TYPE_BYTES, None),
        ("response_time_sec", 12, _F.TYPE_UINT64, None),
        ("response_time_nsec", 13, _F.TYPE_FIXED32, None),
        ("response_message", 14, _F.TYPE_BYTES, None),
    ],
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """Enums are declared as uint32: the same varint on the wire, and an
    unknown enum value then reads as its number instead of vanishing into
    the unknown fields (proto2 closed enums would drop it)."""
    proto = descriptor_pb2.FileDescriptorProto(name="sie_dnstap.proto", package=PACKAGE, syntax="proto2")
    for name, fields in FIELDS.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            field = message.field.add(name=field_name, number=number, type=kind, label=_F.LABEL_OPTIONAL)
            if type_name:
                field.type_name = f".{PACKAGE}.{type_name}"
    return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())
Dnstap = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.Dnstap"))
Message = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.Message"))
