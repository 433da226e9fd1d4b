"""How a name, a full id and an id prefix resolve to an image, as Docker does."""

from __future__ import annotations

import pytest

from isobox.errors import Conflict, NotFound
from isobox.images.records import ImageRecords
from isobox.oci import reference as refs

A = "sha256:" + "ca" * 32
B = "sha256:" + "cb" * 32


@pytest.fixture
def records(tmp_path):
    r = ImageRecords(str(tmp_path / "images.db"))
    r.add(A, "sha256:" + "01" * 32, None, 1)
    r.add(B, "sha256:" + "02" * 32, None, 1)
    yield r
    r.close()


def test_a_hex_looking_tag_is_a_name_first(records):
    records.tag(refs.parse("cafe"), B)
    assert records.lookup("cafe").id == B        # the tag, not the id prefix "cafe"
    assert records.lookup("caca").id == A        # no such name: an id prefix


def test_full_ids_and_prefixes(records):
    assert records.lookup(A).id == A
    assert records.lookup(A[7:]).id == A
    with pytest.raises(Conflict, match="ambiguous"):
        records.lookup("c")
    with pytest.raises(NotFound):
        records.lookup("dead")
    with pytest.raises(NotFound):
        records.lookup("no-such-name:tag")
