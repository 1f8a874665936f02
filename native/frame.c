/* One-call frame parse for the common shapes (GUIDE.md §6).
 *
 * Mirrors stack/wire/_pure.py parse_frame() check for check and in the same
 * order, so that for any input both give the same Frame or the same
 * ParseError reason (tests/native/test_equivalence.py). Shapes handled here:
 *
 *   Ethernet II + IPv6 (Next Header TCP/UDP/ICMPv6, no extension headers)
 *   Ethernet II + IPv4 (IHL 5, not a fragment) + any protocol
 *
 * Everything else is TSK_NOT_HANDLED and Python takes the slow path. Every
 * read is checked against `len` before it happens.
 */
#include "byteorder.h"
#include "tapstack_native.h"

#define ETH_LEN 14
#define IP6_LEN 40
#define IP4_LEN 20

/* Upper-layer header: [l4, end) is inside the buffer (checked by the caller). */
static int parse_l4(const unsigned char *p, size_t l4, size_t end, int v6, uint32_t proto,
                    struct tsk_frame *out, size_t tcp_trusted)
{
    const unsigned char *h = p + l4;
    size_t l = end - l4;
    uint32_t ps;

    if (proto == 6) {
        /* RFC 9293 §3.1: 20-byte header, Data Offset in 32-bit words >= 5. */
        if (l < 20)
            return TSK_E_TCP_TRUNCATED;
        uint32_t doff = h[12] >> 4;
        if (doff < 5 || (size_t)doff * 4 > l)
            return TSK_E_TCP_BAD_OFFSET;
        out->sport = rd16(h);
        out->dport = rd16(h + 2);
        if (l4 == tcp_trusted) {
            out->csum_ok = 1;    /* the link vouches for it (virtio-net NEEDS_CSUM/DATA_VALID) */
            return TSK_OK;
        }
        ps = v6 ? tsk_pseudo_sum6((const char *)p + ETH_LEN + 8, (const char *)p + ETH_LEN + 24, (uint32_t)l, 6)
                : tsk_pseudo_sum4((const char *)p + ETH_LEN + 12, (const char *)p + ETH_LEN + 16, (uint32_t)l, 6);
        out->csum_ok = tsk_ones_sum((const char *)h, l, ps) == 0xffff;
        return TSK_OK;
    }
    if (proto == 17) {
        /* RFC 768: Length covers header and data, >= 8, within the IP payload. */
        if (l < 8)
            return TSK_E_UDP_TRUNCATED;
        uint32_t ulen = rd16(h + 4);
        if (ulen < 8 || ulen > l)
            return TSK_E_UDP_BAD_LENGTH;
        out->sport = rd16(h);
        out->dport = rd16(h + 2);
        if (rd16(h + 6) == 0) {
            /* RFC 768: zero means "no checksum" over IPv4; RFC 8200 §8.1:
             * IPv6 receivers must discard it (verdict False). */
            out->csum_ok = !v6;
            return TSK_OK;
        }
        ps = v6 ? tsk_pseudo_sum6((const char *)p + ETH_LEN + 8, (const char *)p + ETH_LEN + 24, ulen, 17)
                : tsk_pseudo_sum4((const char *)p + ETH_LEN + 12, (const char *)p + ETH_LEN + 16, ulen, 17);
        out->csum_ok = tsk_ones_sum((const char *)h, ulen, ps) == 0xffff;
        return TSK_OK;
    }
    if ((v6 && proto == 58) || (!v6 && proto == 1)) {
        /* RFC 4443 §2.1 / RFC 792: type, code, checksum + 4 more bytes. */
        if (l < 8)
            return TSK_E_ICMP_TRUNCATED;
        out->icmp_type = h[0];
        out->icmp_code = h[1];
        ps = v6 ? tsk_pseudo_sum6((const char *)p + ETH_LEN + 8, (const char *)p + ETH_LEN + 24, (uint32_t)l, 58)
                : 0;
        out->csum_ok = tsk_ones_sum((const char *)h, l, ps) == 0xffff;
        return TSK_OK;
    }
    /* No checksum known for this protocol: nothing checked. */
    out->csum_ok = 1;
    return TSK_OK;
}

static int parse_ipv6(const unsigned char *p, size_t len, struct tsk_frame *out, size_t tcp_trusted)
{
    const unsigned char *h = p + ETH_LEN;
    if (len < ETH_LEN + IP6_LEN)
        return TSK_E_IPV6_TRUNCATED;
    if ((h[0] >> 4) != 6)
        return TSK_E_IPV6_BAD_VERSION;
    uint32_t vtf = rd32(h);
    size_t end = ETH_LEN + IP6_LEN + rd16(h + 4);
    if (end > len)
        return TSK_E_IPV6_BAD_LENGTH; /* RFC 8200 §3: Payload Length past the frame */
    uint32_t nh = h[6];
    if (nh != 6 && nh != 17 && nh != 58)
        return TSK_NOT_HANDLED; /* extension headers, no next header, unknown */
    out->ip_version = 6;
    out->tclass = (vtf >> 20) & 0xff;
    out->flow_label = vtf & 0xfffff;
    out->hop_limit = h[7];
    out->ip_end = (uint32_t)end;
    out->proto = nh;
    out->l4_off = ETH_LEN + IP6_LEN;
    return parse_l4(p, ETH_LEN + IP6_LEN, end, 1, nh, out, tcp_trusted);
}

static int parse_ipv4(const unsigned char *p, size_t len, struct tsk_frame *out, size_t tcp_trusted)
{
    const unsigned char *h = p + ETH_LEN;
    if (len < ETH_LEN + IP4_LEN)
        return TSK_E_IPV4_TRUNCATED;
    if ((h[0] >> 4) != 4)
        return TSK_E_IPV4_BAD_VERSION;
    uint32_t ihl = (uint32_t)(h[0] & 0x0f) * 4;
    if (ihl < IP4_LEN)
        return TSK_E_IPV4_BAD_IHL;
    if (ihl != IP4_LEN)
        return TSK_NOT_HANDLED; /* options: the slow path skips them */
    uint32_t total = rd16(h + 2);
    if (total < ihl || ETH_LEN + (size_t)total > len)
        return TSK_E_IPV4_BAD_LENGTH;
    /* RFC 791 §3.1: the header checksum sums to all ones over the header. */
    if (tsk_ones_sum((const char *)h, IP4_LEN, 0) != 0xffff)
        return TSK_E_IPV4_BAD_CHECKSUM;
    uint32_t ff = rd16(h + 6);
    if (ff & 0x3fff)
        return TSK_NOT_HANDLED; /* MF or a fragment offset: reassembly */
    out->ip_version = 4;
    out->tclass = h[1];
    out->flow_label = 0;
    out->hop_limit = h[8];
    out->ip_end = ETH_LEN + total;
    out->proto = h[9];
    out->l4_off = ETH_LEN + IP4_LEN;
    out->frag_id = rd16(h + 4);
    out->df = (ff & 0x4000) != 0;
    return parse_l4(p, ETH_LEN + IP4_LEN, ETH_LEN + (size_t)total, 0, h[9], out, tcp_trusted);
}

int tsk_parse_frame(const char *buf, size_t len, struct tsk_frame *out)
{
    return tsk_parse_frame_trusted(buf, len, out, 0);
}

int tsk_parse_frame_trusted(const char *buf, size_t len, struct tsk_frame *out, size_t tcp_trusted)
{
    const unsigned char *p = (const unsigned char *)buf;
    out->ethertype = 0;
    out->ip_version = 0;
    out->l3_off = ETH_LEN;
    out->hop_limit = 0;
    out->tclass = 0;
    out->flow_label = 0;
    out->ip_end = 0;
    out->proto = 0;
    out->l4_off = 0;
    out->frag_id = 0;
    out->df = 0;
    out->sport = 0;
    out->dport = 0;
    out->icmp_type = 0;
    out->icmp_code = 0;
    out->csum_ok = 1;
    if (len < ETH_LEN)
        return TSK_E_ETH_TRUNCATED;
    out->ethertype = rd16(p + 12);
    if (out->ethertype == 0x86dd)
        return parse_ipv6(p, len, out, tcp_trusted);
    if (out->ethertype == 0x0800)
        return parse_ipv4(p, len, out, tcp_trusted);
    return TSK_NOT_HANDLED; /* ARP, VLAN tags, anything else */
}
