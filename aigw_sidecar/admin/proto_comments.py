"""The comments of the aigw.v1 protos, for aigw-admin's help: one per message field.

The generated ``*_pb2`` modules carry no source info, so ``make proto`` also writes
``aigw_sidecar/api/v1/aigw_api.desc``: the same files as a ``FileDescriptorSet``
with ``--include_source_info`` (package data, checked by ``make proto-check``).
It is read once, on first use. A field's comment is its leading comment and its
trailing one, on one line. A comment that starts with ``Required.`` marks a
field every call must set (the convention stated at the top of ``keys.proto``).

Fields are found by full name, not by position, so a descriptor set older than
the modules (a field added without ``make proto``) only lacks that field's help.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

from google.protobuf import descriptor_pb2

DESCRIPTOR_SET = ("aigw_sidecar.api.v1", "aigw_api.desc")
REQUIRED_RE = re.compile(r"^Required\.(\s|\Z)")
# Paths in source_code_info: FileDescriptorProto.message_type, then inside a
# DescriptorProto its field and nested_type lists.
_MESSAGE_TYPE, _FIELD, _NESTED_TYPE = 4, 2, 3


@dataclass(frozen=True, slots=True)
class FieldComment:
    text: str  # leading then trailing comment, whitespace folded; "" when none

    @property
    def required(self) -> bool:
        return REQUIRED_RE.match(self.text) is not None


NO_COMMENT = FieldComment("")


def parse(data: bytes) -> dict[str, FieldComment]:
    """Field full name (``aigw.v1.CreateKeyRequest.name``) -> its comment."""
    found: dict[str, FieldComment] = {}
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    for file in files.file:
        for location in file.source_code_info.location:
            name = _field_name(file, list(location.path))
            text = " ".join(
                " ".join(c.split()) for c in (location.leading_comments,
                                              location.trailing_comments) if c.strip()
            )
            if name is not None and text:
                found[name] = FieldComment(text)
    return found


def _field_name(file: descriptor_pb2.FileDescriptorProto, path: list[int]) -> str | None:
    """The full name of the field a location path points at, or None for anything else."""
    if len(path) < 4 or path[0] != _MESSAGE_TYPE:
        return None
    message = file.message_type[path[1]]
    names = [file.package, message.name] if file.package else [message.name]
    rest = path[2:]
    while len(rest) > 2 and rest[0] == _NESTED_TYPE:
        message = message.nested_type[rest[1]]
        names.append(message.name)
        rest = rest[2:]
    if len(rest) != 2 or rest[0] != _FIELD:
        return None
    return ".".join([*names, message.field[rest[1]].name])


@cache
def field_comments() -> Mapping[str, FieldComment]:
    """The shipped descriptor set's field comments; empty when it is missing."""
    package, name = DESCRIPTOR_SET
    try:
        data = resources.files(package).joinpath(name).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError):
        # Help without comments; the server still refuses a request without a required field.
        return {}
    return parse(data)


def comment_of(field_full_name: str) -> FieldComment:
    return field_comments().get(field_full_name, NO_COMMENT)
