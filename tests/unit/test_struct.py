"""The typed records of isobox.oci.struct: strict decoding, names, defaults."""

from __future__ import annotations

import pytest

from isobox.oci.runtime_spec import IDMapping, Process, Spec, User
from isobox.oci.struct import ValidationError, convert, replace, to_builtins


def test_strict_scalars():
    assert convert(int, 3) == 3
    for tp, bad in ((int, True), (int, "3"), (str, 3), (bool, 1), (int, 3.0)):
        with pytest.raises(ValidationError, match="Expected"):
            convert(tp, bad)
    assert convert(float, 2) == 2.0


def test_optional_reports_the_inner_error_with_its_path():
    with pytest.raises(ValidationError, match=r"at `\$\.process\.user\.uid`"):
        convert(Spec, {"ociVersion": "1", "process": {"user": {"uid": "x"}}})


def test_required_field_missing():
    with pytest.raises(ValidationError, match="missing required field `ociVersion`"):
        convert(Spec, {})


def test_renamed_fields_and_defaults():
    m = convert(IDMapping, {"containerID": 1, "hostID": 2, "size": 3})
    assert (m.container_id, m.host_id, m.size) == (1, 2, 3)
    assert to_builtins(m) == {"containerID": 1, "hostID": 2, "size": 3}
    p = convert(Process, {})
    assert p.cwd == "/" and p.user == User()
    assert to_builtins(p) == {"user": {}}  # defaults left out, factories kept


def test_factories_are_not_shared():
    a, b = Process(), Process()
    a.user.uid = 5
    assert b.user.uid == 0


def test_lists_dicts_and_unknown_keys():
    spec = convert(Spec, {"ociVersion": "1", "annotations": {"a": "b"}, "x": [1],
                          "mounts": [{"destination": "/d"}]})
    assert spec.annotations == {"a": "b"}
    assert spec.mounts[0].destination == "/d"
    with pytest.raises(ValidationError, match=r"\$\.annotations\.a"):
        convert(Spec, {"ociVersion": "1", "annotations": {"a": 1}})
    with pytest.raises(ValidationError, match=r"\$\.mounts\[1\]"):
        convert(Spec, {"ociVersion": "1", "mounts": [{"destination": "/d"}, "x"]})


def test_constructor_and_replace():
    u = User(uid=1, gid=2)
    assert replace(u, uid=3) == User(uid=3, gid=2)
    with pytest.raises(TypeError, match="unknown"):
        User(bogus=1)
    with pytest.raises(TypeError, match="missing"):
        IDMapping(container_id=1)
