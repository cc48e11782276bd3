"""The EID prefix table at the edges the brute-force test of test_lisp_prefix_table does not
draw (written against mutmut's survivors in lisp/lpm.py): the /0 prefix, a stored prefix at
the last address of a range, the default `shortest` of `gap`, and `items` over IPv6 and
instance-ids."""

from __future__ import annotations

from pacao.lisp.address import EidPrefix
from pacao.lisp.lpm import PrefixTable


def e(text: str) -> EidPrefix:
    return EidPrefix.parse(text)


def test_a_stored_zero_length_prefix_covers_every_address() -> None:
    t: PrefixTable[str] = PrefixTable()
    t.insert(e("0.0.0.0/0"), "default")
    t.insert(e("10.0.0.0/8"), "ten")
    assert t.lookup(e("192.0.2.7/32")) == (e("0.0.0.0/0"), "default")
    assert t.lookup(e("10.1.2.3/32")) == (e("10.0.0.0/8"), "ten")
    assert t.match((0, 4), int.from_bytes(bytes([192, 0, 2, 7]), "big"), 32) == "default"
    assert t.gap(e("192.0.2.7/32")) is None


def test_a_prefix_at_the_last_address_of_a_range_lies_inside_it() -> None:
    t: PrefixTable[int] = PrefixTable()
    t.insert(e("10.0.0.255/32"), 1)
    assert t.overlaps(e("10.0.0.0/24")) and t.overlaps(e("10.0.0.128/25"))
    assert not t.overlaps(e("10.0.0.0/25"))
    # The least-specific free prefix holding 10.0.0.0 stops short of .255.
    assert t.gap(e("10.0.0.0/32"), 24) == e("10.0.0.0/25")
    assert t.gap(e("10.0.0.254/32"), 24) == e("10.0.0.254/32")


def test_gap_reaches_the_zero_length_prefix_by_default() -> None:
    t: PrefixTable[int] = PrefixTable()
    assert t.gap(e("10.1.2.3/32")) == e("0.0.0.0/0")
    t.insert(e("2001:db8::/32"), 1)  # another family: still nothing in this one
    assert t.gap(e("10.1.2.3/32")) == e("0.0.0.0/0")
    assert t.gap(e("10.1.2.3/32"), 8) == e("10.0.0.0/8")
    t.insert(e("10.0.0.0/8"), 2)
    assert t.gap(e("192.168.1.1/32")) == e("128.0.0.0/1")


def test_items_give_back_every_family_and_instance() -> None:
    t: PrefixTable[int] = PrefixTable()
    stored = {e("10.0.0.0/8"): 1, e("2001:db8::/32"): 2, e("[7]10.1.0.0/16"): 3, e("[9]::/0"): 4}
    for p, v in stored.items():
        t.insert(p, v)
    assert dict(t.items()) == stored and len(t) == 4
