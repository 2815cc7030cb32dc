"""What gRPC reflection describes: every service a port serves, Envoy's included.

The Envoy services (ext_authz ``Check``, the gRPC access log) are served by
generic handlers over our trimmed, wire-compatible messages (package
``aigw.envoy.v3``), so no generated module declares them. Reflection gets its
own descriptor pool: our files, their dependencies, and one small synthetic
file per Envoy service that declares it, under Envoy's name, over those
messages. ``grpcurl`` can then list and call ``Check`` without any .proto file.
(A separate pool, because the default one may also hold Envoy's real files:
the xds-protos package declares the same service names.)
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from aigw_sidecar.api.envoy.v3 import access_log_pb2, ext_authz_pb2
from aigw_sidecar.api.v1 import admission_pb2, keys_pb2
from aigw_sidecar.server import access_log, ext_authz

# (service full name, method, request, response, client streaming)
_ENVOY_METHODS = (
    (ext_authz.SERVICE_NAME, "Check", ext_authz_pb2.CheckRequest,
     ext_authz_pb2.CheckResponse, False),
    (access_log.SERVICE_NAME, "StreamAccessLogs", access_log_pb2.StreamAccessLogsMessage,
     access_log_pb2.StreamAccessLogsResponse, True),
)
ENVOY_SERVICE_NAMES = tuple(name for name, *_ in _ENVOY_METHODS)


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """A pool with every file reflection may be asked for."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: Any) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        pool.AddSerializedFile(file.serialized_pb)
        added.add(file.name)

    for module in (admission_pb2, keys_pb2, ext_authz_pb2, access_log_pb2, health_pb2,
                   reflection_pb2):
        add(module.DESCRIPTOR)
    for service, method, request, response, streaming in _ENVOY_METHODS:
        package, _, name = service.rpartition(".")
        proto = descriptor_pb2.FileDescriptorProto(
            name=f"aigw_sidecar/reflection/{package.replace('.', '/')}.proto",
            package=package,
            syntax="proto3",
            dependency=[request.DESCRIPTOR.file.name],
        )
        proto.service.add(name=name).method.add(
            name=method,
            input_type=f".{request.DESCRIPTOR.full_name}",
            output_type=f".{response.DESCRIPTOR.full_name}",
            client_streaming=streaming,
        )
        pool.AddSerializedFile(proto.SerializeToString())
    return pool
