"""The OpenAPI 3 document of the HTTP/JSON admin API, generated from the descriptors.

Paths and operations come from the google.api.http rules (``http_api.routes_of``),
schemas from the request and response messages under protobuf's canonical JSON
mapping: lowerCamelCase names, 64-bit integers as strings, enums by name,
Timestamps as RFC 3339 strings, FieldMasks as comma-separated paths. (The
generated modules carry no .proto comments, so the reference for each field
stays docs/reference.md and the .proto files.)
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor as pb_descriptor
from google.protobuf.descriptor import FieldDescriptor

from aigw_sidecar.server.http_api import Route, routes_of

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "comma-separated field paths, e.g. name,limits.token_limit",
    },
    "google.protobuf.Duration": {"type": "string", "description": "seconds with an 's' suffix"},
}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "status", "message"],
            "properties": {
                "code": {"type": "integer", "description": "the HTTP status"},
                "status": {"type": "string", "description": "the gRPC status code name"},
                "message": {"type": "string", "description": "names the field at fault"},
            },
        }
    },
}


def openapi_document(
    service: pb_descriptor.ServiceDescriptor, *, title: str, version: str
) -> dict[str, Any]:
    """The OpenAPI 3.0 document of a service's HTTP rules."""
    schemas: dict[str, Any] = {"Error": _ERROR}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes_of(service):
        paths.setdefault(route.template, {})[route.method.lower()] = _operation(route, schemas)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "Generated from the google.api.http rules of "
                f"{service.full_name}; the same calls as its gRPC service."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"adminToken": []}],
    }


def _operation(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    rpc = route.rpc
    request = rpc.input_type
    _schema(request, schemas)
    _schema(rpc.output_type, schemas)
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.path_params
    ]
    if route.body != "*":
        for field in request.fields:
            if field.name in route.path_params or field.type == FieldDescriptor.TYPE_MESSAGE:
                continue
            parameters.append({
                "name": field.name, "in": "query", "required": False,
                "schema": _field_schema(field, schemas),
            })
    elif any(f.name == "update_mask" for f in request.fields):
        parameters.append({
            "name": "update_mask", "in": "query", "required": False,
            "schema": _WELL_KNOWN["google.protobuf.FieldMask"],
        })
    operation: dict[str, Any] = {
        "operationId": rpc.name,
        "summary": rpc.name,
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": _ref(rpc.output_type)}},
            },
            "default": {
                "description": "an error (the HTTP status maps the gRPC status)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
    }
    if route.body == "*":
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(request)}},
        }
    return operation


def _ref(message: pb_descriptor.Descriptor) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{message.full_name}"}


def _schema(message: pb_descriptor.Descriptor, schemas: dict[str, Any]) -> None:
    if message.full_name in schemas or message.full_name in _WELL_KNOWN:
        return
    schemas[message.full_name] = {}  # placeholder: a message may refer to itself
    properties = {field.json_name: _field_schema(field, schemas) for field in message.fields}
    schemas[message.full_name] = {
        "type": "object", "properties": properties, "additionalProperties": False,
    }


def _field_schema(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _single(value, schemas)}
    single = _single(field, schemas)
    if field.is_repeated:
        return {"type": "array", "items": single}
    return single


def _single(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.enum_type is not None:
        return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    if field.message_type is not None:
        known = _WELL_KNOWN.get(field.message_type.full_name)
        if known is not None:
            return dict(known)
        _schema(field.message_type, schemas)
        return _ref(field.message_type)
    return dict(_SCALARS[field.type])
