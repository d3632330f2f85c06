/* The translation fast path of the optional C accelerator (see _accel.c).
 *
 * Theory of operation
 * -------------------
 * The same steps as siit/v4_to_v6.py (RFC 7915 §4.1) and siit/v6_to_v4.py (§5.1), for the
 * common case only: TCP, UDP and ICMP echo, no IPv4 options, no IPv6 extension headers, no
 * fragments, within the MTU, addresses through EAM (RFC 7757) and the Pref64 (RFC 6052).
 * Every check runs before the first byte is written, so a packet this code declines
 * (XL_DECLINE) is untouched and the Python core takes it from the start: the Python core
 * stays the reference, and this file must give the very same bytes for what it accepts
 * (tests/unit/test_accel_differential.py). The checksum helpers copy wire/checksum.py
 * including its choice between the two zeros of one's-complement arithmetic.
 *
 * No Python object is touched here: the run loop calls this with the GIL released.
 */
#include <stdint.h>
#include <string.h>

#define XL_HEADROOM 20
#define XL_MAX_EAM 64
#define XL_DECLINE (-1)

typedef unsigned __int128 u128;

typedef struct {
    u128 net6;      /* the IPv6 network address */
    uint32_t net4;  /* the IPv4 network address */
    int p6, p4;     /* prefix lengths */
} XlEam;

typedef struct {
    int has_pool6, pool6_head;
    uint8_t pool6[16];
    int pool6_pos[4];           /* RFC 6052 §2.2: where the four IPv4 bytes go */
    const uint8_t *wkp_ok;      /* Well-Known Prefix: 1 where a whole /16 is global */
    XlEam eam6[XL_MAX_EAM];     /* by IPv6 prefix length, longest first */
    XlEam eam4[XL_MAX_EAM];     /* by IPv4 prefix length, longest first */
    int n_eam;
    int has_v4addr, has_v6addr;
    uint8_t v4addr[4], v6addr[16];
    int amend_udp, decrement_ttl, expire_6to4, reset_tc, hairpinning;
    long ipv6_mtu, ipv4_mtu, frag_mtu;
    long ip_id, ip_id_base, ip_id_end;
    int gso;                    /* a GSO super-packet: no MTU checks (Translator.gso) */
} XlConfig;

/* -- wire/checksum.py --------------------------------------------------------------------- */

/* The 16-bit word sum of p[0:n] modulo 0xffff (== int.from_bytes(p) % 0xffff for even n). */
static uint32_t xl_wsum(const uint8_t *p, long n, int *nonzero)
{
    uint64_t s = 0;
    uint32_t z = 0;
    long i;
    for (i = 0; i + 1 < n; i += 2) {
        uint32_t w = ((uint32_t)p[i] << 8) | p[i + 1];
        s += w;
        z |= w;
    }
    if (n & 1) {
        s += (uint32_t)p[n - 1] << 8;
        z |= p[n - 1];
    }
    if (nonzero)
        *nonzero = z != 0;
    return (uint32_t)(s % 0xFFFF);
}

static uint32_t xl_ones_sum(const uint8_t *p, long n)  /* ones_sum() */
{
    int nz;
    uint32_t s = xl_wsum(p, n, &nz);
    return (s == 0 && nz) ? 0xFFFF : s;
}

static uint32_t xl_ones_add(uint32_t a, uint32_t b)
{
    uint32_t s = a + b;
    s = (s & 0xFFFF) + (s >> 16);
    return (s & 0xFFFF) + (s >> 16);
}

/* ones_sum(a + b) for two 16-byte or two 4-byte addresses. */
static uint32_t xl_ones_sum2(const uint8_t *a, const uint8_t *b, long n)
{
    int z1, z2;
    uint32_t s = (xl_wsum(a, n, &z1) + xl_wsum(b, n, &z2)) % 0xFFFF;
    return (s == 0 && (z1 || z2)) ? 0xFFFF : s;
}

static uint32_t xl_pseudo_v6(const uint8_t *src, const uint8_t *dst, uint32_t nh, uint32_t len)
{
    uint32_t s = xl_ones_add(xl_ones_sum2(src, dst, 16), len >> 16);
    s = xl_ones_add(s, len & 0xFFFF);
    return xl_ones_add(s, nh);
}

static uint32_t xl_pseudo_v4(const uint8_t *src, const uint8_t *dst, uint32_t proto, uint32_t len)
{
    return xl_ones_add(xl_ones_add(xl_ones_sum2(src, dst, 4), proto), len);
}

static uint32_t xl_checksum(const uint8_t *p, long n, uint32_t initial)
{
    return ~xl_ones_add(xl_ones_sum(p, n), initial) & 0xFFFF;
}

static void xl_put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* update_at(): RFC 1624 eqn. 3 on the checksum at p; UDP writes 0 as 0xffff. */
static void xl_update_at(uint8_t *p, uint32_t delta, int udp)
{
    uint32_t check = ((uint32_t)p[0] << 8) | p[1];
    uint32_t s = (0xFFFF - check + delta) % 0xFFFF;
    uint32_t x;
    if (s == 0)
        s = 0xFFFF;
    x = 0xFFFF - s;
    if (udp && x == 0)
        x = 0xFFFF;
    xl_put16(p, x);
}

/* -- addr/special.py, addr/eam.py, addr/rfc6052.py ------------------------------------------ */

static int xl_v4_not_forwardable(const uint8_t *a)
{
    return a[0] == 0 || a[0] == 127 || a[0] >= 224 || (a[0] == 169 && a[1] == 254);
}

static int xl_v6_illegal_source(const uint8_t *a)
{
    int i;
    if (a[0] == 0xFF || (a[0] == 0xFE && (a[1] & 0xC0) == 0x80))
        return 1;
    for (i = 0; i < 15; i++)
        if (a[i])
            return 0;
    return a[15] <= 1;
}

static uint32_t xl_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static u128 xl_be128(const uint8_t *p)
{
    u128 n = 0;
    int i;
    for (i = 0; i < 16; i++)
        n = (n << 8) | p[i];
    return n;
}

static u128 xl_shr128(u128 x, int s) { return s >= 128 ? 0 : x >> s; }
static u128 xl_mask128(int bits) { return bits >= 128 ? ~(u128)0 : (((u128)1 << bits) - 1); }
static uint32_t xl_key4(uint32_t n, int plen) { return plen == 0 ? 0 : n >> (32 - plen); }

/* RFC 7757 §3.3, then RFC 6052 §2.3 (EamTable.v4_to_v6, Pref64.embed) */
static int xl_v4_to_v6(const XlConfig *c, const uint8_t *v4, uint8_t *out)
{
    uint32_t n = xl_be32(v4);
    int i;
    for (i = 0; i < c->n_eam; i++) {
        const XlEam *e = &c->eam4[i];
        if (xl_key4(n, e->p4) == xl_key4(e->net4, e->p4)) {
            int hb = 32 - e->p4;
            int shift = 128 - e->p6 - hb;
            uint32_t low = hb >= 32 ? n : (n & ((1u << hb) - 1));
            u128 r = e->net6 | (shift >= 128 ? 0 : (u128)low << shift);
            for (i = 15; i >= 0; i--, r >>= 8)
                out[i] = (uint8_t)r;
            return 0;
        }
    }
    if (!c->has_pool6 || (c->wkp_ok && !c->wkp_ok[n >> 16]))
        return XL_DECLINE;
    memset(out, 0, 16);
    memcpy(out, c->pool6, (size_t)c->pool6_head);
    for (i = 0; i < 4; i++)
        out[c->pool6_pos[i]] = v4[i];
    return 0;
}

/* RFC 7757 §3.3, then RFC 6052 §2.3 (EamTable.v6_to_v4, Pref64.extract) */
static int xl_v6_to_v4(const XlConfig *c, const uint8_t *v6, uint8_t *out, int *via_pool6)
{
    int i;
    uint32_t r;
    if (c->n_eam) {
        u128 n = xl_be128(v6);
        for (i = 0; i < c->n_eam; i++) {
            const XlEam *e = &c->eam6[i];
            if (xl_shr128(n, 128 - e->p6) == xl_shr128(e->net6, 128 - e->p6)) {
                int shift = 128 - e->p6 - (32 - e->p4);
                r = e->net4 | (uint32_t)xl_shr128(n & xl_mask128(128 - e->p6), shift);
                out[0] = (uint8_t)(r >> 24), out[1] = (uint8_t)(r >> 16);
                out[2] = (uint8_t)(r >> 8), out[3] = (uint8_t)r;
                *via_pool6 = 0;
                return 0;
            }
        }
    }
    if (!c->has_pool6 || memcmp(v6, c->pool6, (size_t)c->pool6_head) != 0)
        return XL_DECLINE;
    for (i = 0; i < 4; i++)
        out[i] = v6[c->pool6_pos[i]];
    if (c->wkp_ok && !c->wkp_ok[((uint32_t)out[0] << 8) | out[1]])
        return XL_DECLINE;
    *via_pool6 = 1;
    return 0;
}

static int xl_eam_has_v4(const XlConfig *c, const uint8_t *v4)
{
    uint32_t n = xl_be32(v4);
    int i;
    for (i = 0; i < c->n_eam; i++)
        if (xl_key4(n, c->eam4[i].p4) == xl_key4(c->eam4[i].net4, c->eam4[i].p4))
            return 1;
    return 0;
}

/* Translator.resolve46 when it gives a translation; XL_DECLINE for every refusal. */
static int xl_map46(const XlConfig *c, const uint8_t *key, uint8_t *addrs, uint32_t *delta)
{
    if (c->has_v4addr && memcmp(key + 4, c->v4addr, 4) == 0)
        return XL_DECLINE;
    if (xl_v4_not_forwardable(key + 4) || xl_v4_not_forwardable(key))
        return XL_DECLINE;
    if (xl_v4_to_v6(c, key + 4, addrs + 16) || xl_v4_to_v6(c, key, addrs))
        return XL_DECLINE;
    *delta = (xl_wsum(addrs, 32, 0) + 0xFFFF - xl_wsum(key, 8, 0)) % 0xFFFF;
    return 0;
}

/* Translator.resolve64 when it gives a translation that is not hairpinned. */
static int xl_map64(const XlConfig *c, const uint8_t *key, uint8_t *addrs, uint32_t *delta)
{
    int via_pool6, ignored;
    if (c->has_v6addr && memcmp(key + 16, c->v6addr, 16) == 0)
        return XL_DECLINE;
    if (xl_v6_illegal_source(key))
        return XL_DECLINE;
    if (xl_v6_to_v4(c, key + 16, addrs + 4, &via_pool6) || xl_v4_not_forwardable(addrs + 4))
        return XL_DECLINE;
    if (xl_v6_to_v4(c, key, addrs, &ignored) || xl_v4_not_forwardable(addrs))
        return XL_DECLINE;
    if (c->hairpinning && via_pool6 && xl_eam_has_v4(c, addrs + 4))
        return XL_DECLINE;  /* RFC 7757 §4.3: Python runs it back through §4 */
    *delta = (xl_wsum(addrs, 8, 0) + 0xFFFF - xl_wsum(key, 32, 0)) % 0xFFFF;
    return 0;
}

/* -- RFC 7915 §4.1 (v4_to_v6.translate_4to6, hairpin=False) ------------------------------- */

/* Translate buf[start:end] in place; on success the IPv6 packet is buf[*os:*oe] and *cls the
 * counter class (0 TCP, 1 UDP, 2 ICMP). buf has at least XL_HEADROOM bytes before start. */
static int xl_4to6(const XlConfig *c, uint8_t *buf, long start, long end, long *os, long *oe,
                   int *cls)
{
    uint8_t *p = buf + start, *l4 = p + 20, *o = p - 20, addrs[32];
    uint32_t total, frag, ttl, proto, tc, delta = 0;
    long plen;
    if (end - start < 20 || p[0] != 0x45)
        return XL_DECLINE;  /* short, not IPv4, or IPv4 options */
    total = ((uint32_t)p[2] << 8) | p[3];
    if (total < 20 || total > (uint32_t)(end - start) || xl_wsum(p, 20, 0) != 0)
        return XL_DECLINE;
    if (p[16] >= 224)
        return XL_DECLINE;  /* multicast or 240/4 */
    ttl = p[8];
    if (ttl <= 1)
        return XL_DECLINE;  /* §4.1 "Hop Limit": Time Exceeded, in Python */
    if (c->decrement_ttl)
        ttl--;
    frag = ((uint32_t)p[6] << 8) | p[7];
    if (frag & 0x3FFF)
        return XL_DECLINE;  /* a fragment */
    proto = p[9];
    plen = (long)total - 20;
    if (proto == 1) {
        if (plen < 8 || (l4[0] != 8 && l4[0] != 0))
            return XL_DECLINE;  /* §4.2: not an echo */
    } else if (proto == 6) {
        if (plen < 20)
            return XL_DECLINE;
    } else if (proto == 17) {
        if (plen < 8 || (!l4[6] && !l4[7] && !c->amend_udp))
            return XL_DECLINE;
    } else {
        return XL_DECLINE;
    }
    if (xl_map46(c, p + 12, addrs, &delta))
        return XL_DECLINE;
    if (!c->gso && ((frag & 0x4000) ? 40 + plen > c->ipv6_mtu : 40 + plen > c->frag_mtu))
        return XL_DECLINE;  /* Packet Too Big, or fragmented by RFC 7915 §4 */
    tc = c->reset_tc ? 0 : p[1];
    /* -- the packet is translated from here on -- */
    if (proto == 6) {
        if (delta)
            xl_update_at(l4 + 16, delta, 0);
        *cls = 0;
    } else if (proto == 17) {
        if (!l4[6] && !l4[7]) {  /* §4.5: compute the zero checksum */
            uint32_t x = xl_checksum(l4, plen, xl_pseudo_v6(addrs, addrs + 16, 17, (uint32_t)plen));
            xl_put16(l4 + 6, x ? x : 0xFFFF);
        } else if (delta) {
            xl_update_at(l4 + 6, delta, 1);
        }
        *cls = 1;
    } else {  /* transport.echo_4to6 */
        uint32_t itype = l4[0], ntype = itype == 8 ? 128 : 129;
        uint32_t d = (xl_pseudo_v6(addrs, addrs + 16, 58, (uint32_t)plen) + ((ntype - itype) << 8))
                     % 0xFFFF;
        l4[0] = (uint8_t)ntype;
        xl_update_at(l4 + 2, d, 0);
        proto = 58;
        *cls = 2;
    }
    o[0] = (uint8_t)(0x60 | (tc >> 4));
    o[1] = (uint8_t)((tc & 15) << 4);
    o[2] = o[3] = 0;
    xl_put16(o + 4, (uint32_t)plen);
    o[6] = (uint8_t)proto;
    o[7] = (uint8_t)ttl;
    memcpy(o + 8, addrs, 32);
    *os = start - 20;
    *oe = start + (long)total;
    return 0;
}

/* -- RFC 7915 §5.1 (v6_to_v4.translate_6to4) ----------------------------------------------- */

static int xl_6to4(XlConfig *c, uint8_t *buf, long start, long end, long *os, long *oe, int *cls)
{
    uint8_t *p = buf + start, *l4 = p + 40, *o = p + 20, addrs[8];
    uint32_t plen, nh, hlim, total, tos, ident, delta = 0;
    long id;
    if (end - start < 40 || (p[0] >> 4) != 6)
        return XL_DECLINE;
    plen = ((uint32_t)p[4] << 8) | p[5];
    nh = p[6];
    hlim = p[7];
    if (40 + (long)plen > end - start)
        return XL_DECLINE;
    if (nh == 58) {
        if (plen < 8 || (l4[0] != 128 && l4[0] != 129))
            return XL_DECLINE;  /* §5.2: not an echo */
    } else if (nh == 6) {
        if (plen < 20)
            return XL_DECLINE;
    } else if (nh == 17) {
        if (plen < 8)
            return XL_DECLINE;
    } else {
        return XL_DECLINE;  /* extension headers, other protocols */
    }
    if (p[24] == 0xFF)
        return XL_DECLINE;  /* multicast */
    if (hlim <= 1 && c->expire_6to4)
        return XL_DECLINE;  /* §5.1 "Hop Limit": Time Exceeded, in Python */
    if (c->decrement_ttl && hlim > 1)
        hlim--;
    if (xl_map64(c, p + 8, addrs, &delta))
        return XL_DECLINE;
    total = 20 + plen;
    if ((long)total > c->ipv4_mtu && !c->gso)
        return XL_DECLINE;  /* Packet Too Big */
    tos = c->reset_tc ? 0 : (((uint32_t)p[0] & 15) << 4) | (p[1] >> 4);
    /* -- the packet is translated from here on -- */
    if (nh == 6) {
        if (delta)
            xl_update_at(l4 + 16, delta, 0);
        *cls = 0;
    } else if (nh == 17) {
        if (!l4[6] && !l4[7]) {  /* RFC 8200 §8.1 forbids it: compute the IPv4 one */
            uint32_t x = xl_checksum(l4, plen, xl_pseudo_v4(addrs, addrs + 4, 17, plen));
            xl_put16(l4 + 6, x ? x : 0xFFFF);
        } else if (delta) {
            xl_update_at(l4 + 6, delta, 1);
        }
        *cls = 1;
    } else {  /* transport.echo_6to4 */
        uint32_t itype = l4[0], ntype = itype == 128 ? 8 : 0;
        long d = (((long)ntype - (long)itype) * 256 - (long)xl_pseudo_v6(p + 8, p + 24, 58, plen))
                 % 0xFFFF;
        if (d < 0)
            d += 0xFFFF;
        l4[0] = (uint8_t)ntype;
        xl_update_at(l4 + 2, (uint32_t)d, 0);
        if (!l4[2] && !l4[3])
            xl_put16(l4 + 2, xl_checksum(l4, plen, 0));
        nh = 1;
        *cls = 2;
    }
    id = c->ip_id + 1;  /* Translator.next_ip_id */
    if (id == c->ip_id_end)
        id = c->ip_id_base;
    c->ip_id = id;
    ident = (uint32_t)id;
    o[0] = 0x45;
    o[1] = (uint8_t)tos;
    xl_put16(o + 2, total);
    xl_put16(o + 4, ident);
    xl_put16(o + 6, total > 1260 ? 0x4000 : 0);
    o[8] = (uint8_t)hlim;
    o[9] = (uint8_t)nh;
    o[10] = o[11] = 0;
    memcpy(o + 12, addrs, 8);
    {
        uint32_t x = xl_wsum(o, 20, 0);  /* RFC 791 header checksum */
        xl_put16(o + 10, 0xFFFF - (x ? x : 0xFFFF));
    }
    *os = start + 20;
    *oe = start + 40 + (long)plen;
    return 0;
}
