"""ICMPv6 errors from IPv6-only hops in the CLAT (draft-ietf-v6ops-icmpext-xlat-v6only-source).

The CLAT of issue 9: EAM 2001:db8:aaaa::c1a7/128 = 192.0.0.1/32 (its host side),
``icmp_source_dummy`` 192.0.0.8 (RFC 7600) and ``icmp_ext_node_id``. The pool6 is
the local-use prefix 64:ff9b:1::/96 (RFC 8215), not the Well-Known Prefix: the lab's
IPv4 server 203.0.113.10 is a documentation address, which RFC 6052 §3.1 forbids in
64:ff9b::/96 (see ``test_wkp_refuses_the_documentation_server``). A router between CLAT and PLAT (2001:db8:1::1, not under the
Pref64) answers a traceroute probe; the IPv4 host must see an ICMPv4 error from
192.0.0.8 carrying 2001:db8:1::1 in an RFC 5837 object of an RFC 4884 extension.

Expected packets are built with scapy (the oracle) and compared byte for byte;
scapy also decodes the extension we build.
"""

from __future__ import annotations

import warnings

import pytest
from scapy.all import (
    ICMP,
    IP,
    UDP,
    ICMPv6DestUnreach,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    Raw,
    raw,
)
from scapy.layers.inet import ICMPExtension_Header, ICMPExtension_Object
from scapy.utils import checksum as scapy_checksum

from v6mostly.errors import ConfigError
from v6mostly.siit.icmp_errors import extension_structure, interface_information_v6
from v6mostly.siit.tables import DUMMY_IPV4
from v6mostly.siit.translator import Translator, TranslatorConfig

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    # The module the brief names; it re-exports scapy.layers.inet's classes.
    from scapy.contrib.icmp_extensions import ICMPExtensionInterfaceInformation

CLAT6 = "2001:db8:aaaa::c1a7"
CLAT4 = "192.0.0.1"
HOP6 = "2001:db8:1::1"  # an IPv6-only router between CLAT and PLAT
SERVER6 = "64:ff9b:1::cb00:710a"
POOL6 = "64:ff9b:1::/96"
SERVER4 = "203.0.113.10"
PROBE = UDP(sport=40000, dport=33434) / Raw(b"traceroute probe")


def clat(**kw: object) -> Translator:
    cfg = TranslatorConfig(
        pool6=POOL6,
        eam=[(f"{CLAT6}/128", f"{CLAT4}/32")],
        icmp_source_dummy=DUMMY_IPV4,
        icmp_ext_node_id=True,
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return Translator(cfg)


def one(xl: Translator, pkt: bytes) -> bytes:
    v = xl.translate(pkt)
    assert v.drop is None, v.drop
    assert len(v.packets) == 1
    return v.packets[0]


def quote6(hlim: int = 1) -> IPv6:
    """The probe as the IPv6-only hop saw it (the CLAT's translation)."""
    return IPv6(src=CLAT6, dst=SERVER6, hlim=hlim) / PROBE


def quote4(hlim: int = 1, ident: int = 1) -> bytes:
    """Its IPv4 form: RFC 7915 §5.3, Identification 1 (the first the translator makes)."""
    return raw(IP(src=CLAT4, dst=SERVER4, ttl=hlim, id=ident, flags=0) / PROBE)


def node_id_ext() -> bytes:
    """scapy's RFC 4884 structure with RFC 5837 Interface Information naming HOP6."""
    obj = ICMPExtensionInterfaceInformation(classtype=0, has_ipaddr=1, afi=2, ip6=HOP6)
    return raw(ICMPExtension_Header() / obj)


def expected_v4(icmp: ICMP, data: bytes, ident: int = 2, ttl: int = 64) -> bytes:
    return raw(IP(src=DUMMY_IPV4, dst=CLAT4, ttl=ttl, id=ident, flags=0) / icmp / Raw(data))


def assert_node_id(out: bytes, hop: str = HOP6) -> ICMP:
    """Decode with scapy: ICMPv4 checksum, length 32, version 2, extension checksum,
    one Interface Information Object: role 0, IP Addr only, AFI 2, the hop's address."""
    p = IP(out)
    icmp = p[ICMP]
    assert scapy_checksum(raw(icmp)) == 0  # the ICMPv4 checksum is correct
    assert icmp.length == 32  # 128 bytes of original datagram, in 32-bit words
    icmp_bytes = raw(icmp)
    ext = ICMPExtension_Header(icmp_bytes[8 + 4 * icmp.length :])
    assert ext.version == 2
    ext_bytes = icmp_bytes[8 + 4 * icmp.length :]
    assert scapy_checksum(ext_bytes) == 0  # RFC 4884 §7 checksum over the structure
    # Walk the objects by their Length fields; scapy dissects each (its MPLS object
    # does not hand the rest of the structure on).
    objs = []
    i = 4
    while i < len(ext_bytes):
        n = int.from_bytes(ext_bytes[i : i + 2], "big")
        assert n >= 4
        objs.append(ICMPExtension_Object(ext_bytes[i : i + n]))
        i += n
    assert i == len(ext_bytes)
    info = objs[-1]
    assert isinstance(info, ICMPExtensionInterfaceInformation)
    assert (info.len, info.classnum, info.classtype) == (24, 2, 0)  # role: incoming
    assert (info.has_ifindex, info.has_ipaddr, info.has_ifname, info.has_mtu) == (0, 1, 0, 0)
    assert (info.afi, info.ip6) == (2, hop)
    # scapy's own ICMP dissector finds the structure at the fixed offset RFC 4884 gives for 128 bytes of quote.
    assert icmp.ext is not None and icmp.ext.version == 2
    return icmp


# -- the traceroute case -------------------------------------------------------------------


def test_time_exceeded_from_ipv6_only_hop_exact_bytes() -> None:
    pkt = raw(IPv6(src=HOP6, dst=CLAT6, hlim=64) / ICMPv6TimeExceeded(code=0) / quote6())
    out = one(clat(), pkt)
    data = quote4().ljust(128, b"\x00") + node_id_ext()
    assert out == expected_v4(ICMP(type=11, code=0, length=32), data)
    assert len(out) == 20 + 8 + 128 + 4 + 24
    icmp = assert_node_id(out)
    assert (IP(out).src, IP(out).dst) == (DUMMY_IPV4, CLAT4)
    # The quote is the translated probe, zero padded to 128 bytes (RFC 4884).
    assert raw(icmp.payload)[: len(quote4())] == quote4()


def test_object_bytes_by_hand() -> None:
    """The 24 + 4 bytes, spelled out (RFC 5837 §4.1-§4.2, RFC 4884 §7)."""
    obj = interface_information_v6(bytes.fromhex("20010db8000100000000000000000001"))
    # Length 24, Class-Num 2, C-Type 0x04 (role 0, IP Addr); AFI 2, reserved; the address.
    assert obj.hex() == "00180204" + "00020000" + "20010db8000100000000000000000001"
    ext = extension_structure(obj)
    assert ext[:2] == b"\x20\x00" and scapy_checksum(ext) == 0
    assert ext == node_id_ext()


def test_destination_unreachable_gets_the_same_treatment() -> None:
    # ICMPv6 1/3 address unreachable -> ICMPv4 3/1 host unreachable (RFC 7915 §5.2).
    pkt = raw(IPv6(src=HOP6, dst=CLAT6, hlim=60) / ICMPv6DestUnreach(code=3) / quote6(5))
    out = one(clat(), pkt)
    data = quote4(5).ljust(128, b"\x00") + node_id_ext()
    assert out == expected_v4(ICMP(type=3, code=1, length=32), data, ttl=60)
    assert_node_id(out)


def test_port_unreachable_from_ipv6_only_hop() -> None:
    pkt = raw(IPv6(src=HOP6, dst=CLAT6) / ICMPv6DestUnreach(code=4) / quote6(7))
    out = one(clat(), pkt)
    data = quote4(7).ljust(128, b"\x00") + node_id_ext()
    assert out == expected_v4(ICMP(type=3, code=3, length=32), data)
    assert_node_id(out)


def test_packet_too_big_becomes_frag_needed_with_extension() -> None:
    """The draft: "A Node Identification Extension Object SHOULD be added when
    translating: ... ICMPv6 Packet Too Big to ICMPv4 Destination Unreachable"."""
    pkt = raw(IPv6(src=HOP6, dst=CLAT6) / ICMPv6PacketTooBig(mtu=1400) / quote6(9))
    out = one(clat(), pkt)
    data = quote4(9).ljust(128, b"\x00") + node_id_ext()
    assert out == expected_v4(ICMP(type=3, code=4, length=32, nexthopmtu=1380), data)
    icmp = assert_node_id(out)
    assert icmp.nexthopmtu == 1380


def test_translatable_source_gets_no_extension() -> None:
    """The draft: "MUST NOT use 192.0.0.8/32 ... and MUST NOT add the extension if the
    packet's IPv6 source address is translatable": an IPv4 router behind the PLAT."""
    router6 = "64:ff9b:1::c633:6401"
    pkt = raw(IPv6(src=router6, dst=CLAT6, hlim=50) / ICMPv6TimeExceeded() / quote6())
    out = one(clat(), pkt)
    want = raw(
        IP(src="198.51.100.1", dst=CLAT4, ttl=50, id=2, flags=0)
        / ICMP(type=11, code=0, length=0)
        / Raw(quote4())
    )
    assert out == want
    assert IP(out)[ICMP].ext is None


def test_parameter_problem_gets_the_dummy_source_but_no_extension() -> None:
    """RFC 5837's object is for Time Exceeded and Destination Unreachable only."""
    pkt = raw(IPv6(src=HOP6, dst=CLAT6) / ICMPv6ParamProblem(code=0, ptr=7) / quote6())
    out = one(clat(), pkt)
    assert out == expected_v4(ICMP(type=12, code=0, ptr=8), quote4())


# -- flag off: unchanged --------------------------------------------------------------------


def test_flag_off_is_unchanged_behaviour() -> None:
    """Without the new settings the RFC 6791 pool (or its fallback) is the source and
    no extension is added: byte for byte what the translator did before."""
    pkt = raw(IPv6(src=HOP6, dst=CLAT6, hlim=64) / ICMPv6TimeExceeded() / quote6())
    plain = clat(icmp_source_dummy=None, icmp_ext_node_id=False, pool6791_v4=["192.0.2.250"])
    out = one(plain, pkt)
    want = raw(
        IP(src="192.0.2.250", dst=CLAT4, ttl=64, id=2, flags=0)
        / ICMP(type=11, code=0, length=0)
        / Raw(quote4())
    )
    assert out == want
    # The flag alone (pool source) adds the object; the dummy alone changes only the source.
    flag_only = clat(icmp_source_dummy=None, pool6791_v4=["192.0.2.250"])
    assert IP(one(flag_only, pkt)).src == "192.0.2.250"
    assert_node_id(one(flag_only, pkt))
    dummy_only = one(clat(icmp_ext_node_id=False), pkt)
    assert dummy_only == expected_v4(ICMP(type=11, code=0, length=0), quote4())


def test_defaults_drop_without_a_source_address() -> None:
    plain = clat(icmp_source_dummy=None, icmp_ext_node_id=False)
    pkt = raw(IPv6(src=HOP6, dst=CLAT6) / ICMPv6TimeExceeded() / quote6())
    v = plain.translate(pkt)
    assert v.packets == [] and v.drop is not None and v.drop.name == "NO_TRANSLATOR_ADDRESS"


def test_dummy_beats_the_pool_fallback_to_the_own_address() -> None:
    xl = clat(ipv4_address="192.0.0.2")
    pkt = raw(IPv6(src=HOP6, dst=CLAT6) / ICMPv6TimeExceeded() / quote6())
    assert IP(one(xl, pkt)).src == DUMMY_IPV4
    no_dummy = clat(ipv4_address="192.0.0.2", icmp_source_dummy=None)
    assert IP(one(no_dummy, pkt)).src == "192.0.0.2"  # RFC 6791 pool's fallback


# -- an extension already there ------------------------------------------------------------

MPLS_OBJ = raw(ICMPExtension_Object(classnum=1, classtype=1) / Raw(bytes.fromhex("0003e1ff")))


def v6_error_with_extension(ext: bytes) -> bytes:
    """ICMPv6 Time Exceeded with an RFC 4884 structure: quote padded to 128 bytes (16 units)."""
    body = raw(quote6()).ljust(128, b"\x00") + ext
    return raw(IPv6(src=HOP6, dst=CLAT6, hlim=64) / ICMPv6TimeExceeded(length=16) / Raw(body))


def test_existing_extension_is_merged() -> None:
    """The draft's Appendix: append the object "to that structure" and "Update the
    checksum field of the Extension Header accordingly"."""
    out = one(clat(), v6_error_with_extension(raw(ICMPExtension_Header() / Raw(MPLS_OBJ))))
    node_obj = interface_information_v6(bytes.fromhex("20010db8000100000000000000000001"))
    ext = raw(ICMPExtension_Header() / Raw(MPLS_OBJ + node_obj))
    assert out == expected_v4(ICMP(type=11, code=0, length=32), quote4().ljust(128, b"\0") + ext)
    icmp = assert_node_id(out)
    first = icmp.ext.payload
    assert (first.len, first.classnum, first.classtype) == (8, 1, 1)


def test_invalid_existing_extension_is_replaced() -> None:
    bad = bytearray(raw(ICMPExtension_Header() / Raw(MPLS_OBJ)))
    bad[2] ^= 0xFF  # wrong checksum: no RFC 4884 receiver would read it
    out = one(clat(), v6_error_with_extension(bytes(bad)))
    assert out == expected_v4(
        ICMP(type=11, code=0, length=32), quote4().ljust(128, b"\0") + node_id_ext()
    )


def test_existing_extension_passes_unchanged_with_the_flag_off() -> None:
    ext = raw(ICMPExtension_Header() / Raw(MPLS_OBJ))
    out = one(clat(icmp_ext_node_id=False), v6_error_with_extension(ext))
    assert out == expected_v4(ICMP(type=11, code=0, length=32), quote4().ljust(128, b"\0") + ext)


# -- sizes (RFC 1812 §4.3.2.3: 576 bytes) --------------------------------------------------


def test_long_quote_is_cut_to_keep_the_extension_within_576() -> None:
    big = raw(IPv6(src=CLAT6, dst=SERVER6, hlim=1) / UDP(sport=1, dport=2) / Raw(bytes(1400)))
    pkt = raw(IPv6(src=HOP6, dst=CLAT6) / ICMPv6TimeExceeded() / Raw(big[: 1280 - 48]))
    assert len(pkt) == 1280
    out = one(clat(), pkt)
    assert len(out) == 576
    p = IP(out)
    units = p[ICMP].length
    assert units == (576 - 28 - 28) // 4  # 130 words of quote, then the 28-byte structure
    assert raw(p[ICMP])[8 + 4 * units :] == node_id_ext()


def test_oversized_merge_keeps_the_hop_address() -> None:
    """An existing structure too long to fit beside 128 bytes of quote and our object:
    the hop's address is what the traceroute needs, the other objects go."""
    big_obj = raw(ICMPExtension_Object(classnum=1, classtype=1) / Raw(bytes(396)))
    ext = raw(ICMPExtension_Header() / Raw(big_obj))
    out = one(clat(), v6_error_with_extension(ext))
    assert len(out) <= 576
    assert out == expected_v4(
        ICMP(type=11, code=0, length=32), quote4().ljust(128, b"\0") + node_id_ext()
    )


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"icmp_source_dummy": "2001:db8::8"}, "expected an IPv4 address"),
        ({"icmp_source_dummy": "not an address"}, "expected an IPv4 address"),
        ({"icmp_source_dummy": "127.0.0.8"}, "never forwarded"),
        ({"pool6791_v4": ["192.0.2.250"]}, "set only one"),
        ({"icmp_ext_node_id": "yes"}, "expected true or false"),
    ],
)
def test_config_validation(kw: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        clat(**kw)


def test_wkp_refuses_the_documentation_server() -> None:
    """RFC 6052 §3.1: "The Well-Known Prefix MUST NOT be used to represent non-global
    IPv4 addresses": with 64:ff9b::/96, a quote to 64:ff9b::cb00:710a is untranslatable."""
    xl = clat(pool6="64:ff9b::/96")
    inner = IPv6(src=CLAT6, dst="64:ff9b::cb00:710a", hlim=1) / PROBE
    v = xl.translate(raw(IPv6(src=HOP6, dst=CLAT6) / ICMPv6TimeExceeded() / inner))
    assert v.packets == [] and v.drop is not None
    assert v.drop.name == "INNER_UNTRANSLATABLE_DESTINATION"
    # A global server through the Well-Known Prefix gets the same treatment as above.
    inner = IPv6(src=CLAT6, dst="64:ff9b::808:808", hlim=1) / PROBE
    out = one(xl, raw(IPv6(src=HOP6, dst=CLAT6) / ICMPv6TimeExceeded() / inner))
    assert IP(out).src == DUMMY_IPV4
    assert_node_id(out)


def test_default_config_has_neither() -> None:
    cfg = TranslatorConfig(pool6=POOL6)
    assert cfg.icmp_source_dummy is None and cfg.icmp_ext_node_id is False
