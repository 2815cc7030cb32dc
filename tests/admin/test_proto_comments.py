"""The .proto comments as aigw-admin's help: the shipped descriptor set and its reading."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2

from aigw_sidecar.admin import proto_comments
from aigw_sidecar.admin.cli import build_parser
from aigw_sidecar.api.v1 import admission_pb2, keys_pb2

REPO = Path(__file__).resolve().parents[2]


def test_the_descriptor_set_is_package_data() -> None:
    package, name = proto_comments.DESCRIPTOR_SET
    shipped = REPO / package.replace(".", "/") / name
    assert shipped.is_file()
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["aigw_sidecar"]
    relative = shipped.relative_to(REPO / "aigw_sidecar")
    assert any(relative.match(glob) for glob in globs), globs


def test_the_descriptor_set_describes_the_files_the_modules_were_generated_from() -> None:
    """A .proto changed without `make proto` shows here (and in `make proto-check`)."""
    package, name = proto_comments.DESCRIPTOR_SET
    data = (REPO / package.replace(".", "/") / name).read_bytes()
    files = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(data).file}
    for module in (keys_pb2, admission_pb2):
        described = files[module.DESCRIPTOR.name]
        # What the modules embed: no source info, no json_name.
        described.ClearField("source_code_info")
        _clear_json_names(described.message_type)
        generated = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        assert described == generated, module.DESCRIPTOR.name


def _clear_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _clear_json_names(message.nested_type)


def test_leading_and_trailing_comments_are_read_on_one_line() -> None:
    comments = proto_comments.field_comments()
    assert comments["aigw.v1.CreateKeyRequest.workspace"].text == 'default "default"'
    text = comments["aigw.v1.Limits.tokens_per_minute"].text
    assert text.startswith("Tokens (prompt + completion) in any rolling 60-second window:")
    assert "\n" not in text and "  " not in text


def test_a_comment_starting_with_required_marks_the_field_required() -> None:
    comments = proto_comments.field_comments()
    required = {name for name, c in comments.items() if c.required}
    assert {"aigw.v1.CreateKeyRequest.name", "aigw.v1.ImportLegacyKeyRequest.name",
            "aigw.v1.ImportLegacyKeyRequest.secret", "aigw.v1.GetKeyRequest.key_id",
            "aigw.v1.GetModelPriceRequest.model"} <= required
    assert "aigw.v1.UpdateKeyRequest.name" not in required
    assert "aigw.v1.ListAuditEntriesRequest.key_id" not in required
    assert not proto_comments.FieldComment("Required fields are listed.").required


def test_nested_messages_are_named_by_their_full_name() -> None:
    file = descriptor_pb2.FileDescriptorProto(name="x.proto", package="p")
    outer = file.message_type.add(name="Outer")
    inner = outer.nested_type.add(name="Inner")
    inner.field.add(name="depth", number=1)
    location = file.source_code_info.location.add(path=[4, 0, 3, 0, 2, 0])
    location.leading_comments = " How deep.\n"
    data = descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString()
    assert proto_comments.parse(data) == {"p.Outer.Inner.depth": proto_comments.FieldComment(
        "How deep.")}


def test_required_fields_are_required_flags_and_comments_are_their_help() -> None:
    parser = build_parser({})
    create = parser._subparsers._group_actions[0].choices["create-key"]  # type: ignore[union-attr]
    flags = {a.option_strings[0]: a for a in create._actions if a.option_strings}
    assert flags["--name"].required and not flags["--project"].required
    assert flags["--name"].help.startswith("Required. Unique in its workspace")
    assert flags["--token-limit"].help == "Tokens (prompt + completion) per reset period."
