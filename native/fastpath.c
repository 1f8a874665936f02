/* Per-flow fast path for forwarding and ICMPv6 echo (the "flow offload" of
 * Linux's nf_flowtable, in miniature).
 *
 * The Python core decides the first packet of a flow on its slow path; once it
 * has forwarded a packet (or answered an echo request) to a REACHABLE neighbor
 * the runtime installs a flow here. tsk_fp_rx then reads frames from a TAP fd
 * and handles the ones that match an installed flow and pass every check
 * below itself; anything else goes back to Python unchanged ("punted"): C never
 * drops a frame, Python owns every drop reason. The only frames C loses are the
 * ones a failed write loses, and those are counted at the egress slot.
 *
 * Dumb on purpose (GUIDE.md §6): no allocation, no Python objects, every read
 * bounds-checked against the length read() returned, slots checked < 64.
 */
#define _DEFAULT_SOURCE 1

#include <errno.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "byteorder.h"
#include "tapstack_native.h"

enum {
    FP_SLOTS = 64,
    ETH_LEN = 14,
    VNET_LEN = 10,
    FAM6 = 6,
    FAM4 = 4,
    ACT_FORWARD = 1,
    ACT_ECHO = 2,
    /* virtio_net_hdr (include/uapi/linux/virtio_net.h) */
    VNET_F_NEEDS_CSUM = 1,
    VNET_F_DATA_VALID = 2,
    GSO_NONE = 0,
    GSO_TCPV4 = 1,
    GSO_TCPV6 = 4,
    PROTO_TCP = 6,
    PROTO_ICMPV6 = 58
};

static inline uint32_t load32(const unsigned char *p)
{
    uint32_t w;
    memcpy(&w, p, 4);
    return w;
}

static inline uint32_t rotl32(uint32_t x, int r)
{
    return (x << r) | (x >> (32 - r));
}

/* Key hash over (slot, family, address words): MurmurHash3's x86_32 block mix
 * and finalizer, so that addresses differing in one byte anywhere spread over
 * every bit. The same on put and lookup, and only ever compared within one
 * process: host byte order is fine. */
static uint32_t fp_hash(uint32_t slot, uint32_t family, const unsigned char *src,
                        const unsigned char *dst, size_t alen)
{
    uint32_t h = (slot << 8) ^ family;
    for (size_t i = 0; i < 2 * alen; i += 4) {
        uint32_t k = load32(i < alen ? src + i : dst + (i - alen));
        k *= 0xcc9e2d51u;
        k = rotl32(k, 15);
        k *= 0x1b873593u;
        h ^= k;
        h = rotl32(h, 13);
        h = h * 5 + 0xe6546b64u;
    }
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

/* The pair of flow slots of a hash (one slot when the table has one). */
static inline uint32_t fp_bucket(const struct tsk_fp_table *t, uint32_t h)
{
    return t->mask ? (h & t->mask & ~1u) : 0;
}

/* A slot holds a flow: installed, and not voided by a tsk_fp_clear since. */
static inline int fp_live(const struct tsk_fp_table *t, const struct tsk_fp_flow *f)
{
    return f->family != 0 && f->gen == t->gen;
}

static inline int fp_same_key(const struct tsk_fp_flow *a, const struct tsk_fp_flow *b)
{
    return a->family == b->family && a->gen == b->gen && a->in_slot == b->in_slot &&
           memcmp(a->src, b->src, 16) == 0 && memcmp(a->dst, b->dst, 16) == 0;
}

void tsk_fp_put(struct tsk_fp_table *t, const struct tsk_fp_flow *f)
{
    if (t == NULL || f == NULL || t->flows == NULL)
        return;
    if ((f->family != FAM6 && f->family != FAM4) || (f->action != ACT_FORWARD && f->action != ACT_ECHO) ||
        f->in_slot >= FP_SLOTS || f->out_slot >= FP_SLOTS || f->out_fd < 0 ||
        (f->out_vnet != 0 && f->out_vnet != VNET_LEN))
        return;
    struct tsk_fp_flow n = *f;
    n.gen = t->gen;
    if (n.family == FAM4) { /* the key compares all 16 bytes: IPv4 pads with zeros */
        memset(n.src + 4, 0, 12);
        memset(n.dst + 4, 0, 12);
    }
    uint32_t b = fp_bucket(t, fp_hash(n.in_slot, n.family, n.src, n.dst, n.family == FAM6 ? 16 : 4));
    struct tsk_fp_flow *w0 = &t->flows[b];
    if (t->mask == 0 || fp_same_key(w0, &n)) {
        *w0 = n;
        return;
    }
    /* The installed (or re-installed) flow takes way 0 and the flow that was
     * there moves to way 1, evicting whatever way 1 held: way 1 is always the
     * less recently installed of the two. */
    struct tsk_fp_flow *w1 = &t->flows[b + 1];
    if (fp_live(t, w0))
        *w1 = *w0;
    else if (fp_same_key(w1, &n))
        w1->family = 0;
    *w0 = n;
}

void tsk_fp_clear(struct tsk_fp_table *t)
{
    if (t == NULL || t->flows == NULL)
        return;
    /* O(1): flows stamped with an older gen no longer match. Runs on every change
     * core makes to routes, neighbors or addresses, so it must be cheap. Only when
     * gen wraps (after 2^32 clears) are the slots really wiped, so that no flow of
     * 2^32 clears ago comes back to life. */
    t->gen++;
    if (t->gen == 0)
        memset(t->flows, 0, ((size_t)t->mask + 1) * sizeof(struct tsk_fp_flow));
}

static const struct tsk_fp_flow *fp_lookup(const struct tsk_fp_table *t, uint32_t slot, uint32_t family,
                                           const unsigned char *src, const unsigned char *dst)
{
    size_t alen = family == FAM6 ? 16 : 4;
    uint32_t b = fp_bucket(t, fp_hash(slot, family, src, dst, alen));
    uint32_t ways = t->mask ? 2 : 1;
    for (uint32_t i = 0; i < ways; i++) {
        const struct tsk_fp_flow *f = &t->flows[b + i];
        if (f->family == family && f->gen == t->gen && f->in_slot == slot && memcmp(f->src, src, alen) == 0 &&
            memcmp(f->dst, dst, alen) == 0)
            return f; /* IPv4: the flow's bytes 4..15 are zero by tsk_fp_put */
    }
    return NULL;
}

/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), with `delta` = ~m + m' already
 * folded. The fold of a non-zero sum is 1..0xffff, so the result is the one a
 * full recomputation gives (never the other zero). */
static inline uint32_t csum_adjust(uint32_t hc, uint32_t delta)
{
    uint32_t s = (~hc & 0xffffu) + delta;
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    return ~s & 0xffffu;
}

/* One writev of [vnet header] + Ethernet header + IP packet; counts at the egress slot. */
static void fp_send(struct tsk_fp_table *t, const struct tsk_fp_flow *f, const unsigned char *vhdr,
                    const unsigned char *ip, size_t iplen)
{
    static const unsigned char zero_vnet[VNET_LEN] = {0};
    struct iovec iov[3];
    int n = 0;
    if (f->out_vnet) {
        iov[n].iov_base = (void *)(vhdr ? vhdr : zero_vnet);
        iov[n].iov_len = VNET_LEN;
        n++;
    }
    iov[n].iov_base = (void *)f->eth;
    iov[n].iov_len = ETH_LEN;
    n++;
    iov[n].iov_base = (void *)ip;
    iov[n].iov_len = iplen;
    n++;
    struct tsk_fp_link *out = &t->links[f->out_slot]; /* < 64: checked by tsk_fp_put */
    ssize_t r;
    do
        r = writev(f->out_fd, iov, n);
    while (r < 0 && errno == EINTR);
    if (r >= 0) {
        out->tx_packets++;
        out->tx_bytes += ETH_LEN + iplen;
        if (vhdr && vhdr[1] != 0)       /* gso_type: a GSO packet left whole */
            out->tx_gso++;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
        out->tx_full++;
    } else if (errno == EIO) {
        out->tx_down++;
    } else {
        out->tx_errors++;
    }
}

/* The GSO segment size (IP header + TCP header + gso_size) of a TCP packet
 * `ip[0:iplen]` whose TCP header starts at `l4`, or 0 when it cannot be read. */
static uint32_t gso_segment_len(const unsigned char *ip, size_t iplen, size_t l4, uint32_t gso_size)
{
    if (gso_size == 0 || l4 + 20 > iplen)
        return 0;
    uint32_t doff = (uint32_t)(ip[l4 + 12] >> 4) * 4;
    if (doff < 20 || l4 + doff > iplen)
        return 0;
    return (uint32_t)l4 + doff + gso_size;
}

/* The IP header of Ethernet frame `frame[0:len]`: IPv6 (version 6, payload within
 * the frame) or IPv4 without options (length 20..frame, header checksum good).
 * Sets the family, the IP packet's length (Ethernet padding excluded) and the
 * transport header's offset in the packet; 0 for anything else. Shared by the
 * flow check (fp_handle) and GRO (gro_parse), which add their own conditions. */
static int ip_header(const unsigned char *frame, size_t len, uint32_t *family, size_t *iplen, size_t *l4)
{
    if (len < ETH_LEN + 20)
        return 0;
    const unsigned char *ip = frame + ETH_LEN;
    size_t avail = len - ETH_LEN;
    uint32_t ethertype = rd16(frame + 12);
    if (ethertype == 0x86DD) {
        if (avail < 40 || (ip[0] >> 4) != 6)
            return 0;
        *iplen = 40 + (size_t)rd16(ip + 4);
        *family = FAM6;
        *l4 = 40;
    } else if (ethertype == 0x0800) {
        if (ip[0] != 0x45)
            return 0; /* not version 4, or options */
        *iplen = rd16(ip + 2);
        if (*iplen < 20 || tsk_ones_sum((const char *)ip, 20, 0) != 0xffffu)
            return 0;
        *family = FAM4;
        *l4 = 20;
    } else {
        return 0;
    }
    return *iplen <= avail; /* else truncated */
}

/* Handle one frame (`frame[0:len]` after the vnet header `vhdr`, NULL when
 * the link has none). 1: consumed (sent, or lost to a counted write error);
 * 0: punt, nothing changed in the buffer. */
static int fp_handle(struct tsk_fp_table *t, uint32_t in_slot, const unsigned char *vhdr,
                     unsigned char *frame, size_t len)
{
    uint32_t vflags = 0, gso = GSO_NONE;
    if (vhdr) {
        vflags = vhdr[0];
        gso = vhdr[1];
        if (vflags == 0 && gso == GSO_NONE)
            vhdr = NULL; /* a plain frame */
        else if ((vflags & ~(uint32_t)(VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID)) ||
                 (gso != GSO_NONE && gso != GSO_TCPV4 && gso != GSO_TCPV6))
            return 0; /* unknown flags, UDP GSO, the ECN bit: Python */
    }
    uint32_t family;
    size_t iplen, l4;
    if (!ip_header(frame, len, &family, &iplen, &l4))
        return 0;
    unsigned char *ip = frame + ETH_LEN;
    if (family == FAM6 && ip[6] == 0)
        return 0; /* Hop-by-Hop options */
    const unsigned char *src = ip + (family == FAM6 ? 8 : 12);
    const unsigned char *dst = ip + (family == FAM6 ? 24 : 16);
    const struct tsk_fp_flow *f = fp_lookup(t, in_slot, family, src, dst);
    if (f == NULL || memcmp(frame, f->in_mac, 6) != 0)
        return 0;
    struct tsk_fp_link *in = &t->links[in_slot];

    if (f->action == ACT_FORWARD) {
        if ((family == FAM6 ? ip[7] : ip[8]) <= 1)
            return 0; /* hop limit / TTL exceeded: Python sends the ICMP error */
        if (vhdr) {
            if (!f->out_vnet)
                return 0; /* offload metadata for a plain link: Python completes it */
            if (vflags & VNET_F_NEEDS_CSUM) {
                uint32_t cs = rd16le(vhdr + 6), co = rd16le(vhdr + 8);
                if (cs < ETH_LEN + l4 || (size_t)cs + co + 2 > ETH_LEN + iplen)
                    return 0;
            }
        }
        if (gso != GSO_NONE) {
            uint32_t proto = family == FAM6 ? ip[6] : ip[9];
            if (proto != PROTO_TCP || (gso == GSO_TCPV4) != (family == FAM4))
                return 0;
            uint32_t seg = gso_segment_len(ip, iplen, l4, rd16le(vhdr + 4));
            if (seg == 0 || seg > f->mtu)
                return 0;
        } else if (iplen > f->mtu) {
            return 0; /* Python fragments or sends Packet Too Big */
        }
        if (family == FAM6) {
            ip[7]--;
            in->fwd6++;
        } else {
            /* TTL is the high byte of the word (TTL, protocol): m' = m - 0x100,
             * so ~m + m' = 0xfeff. */
            ip[8]--;
            uint32_t c = csum_adjust(rd16(ip + 10), 0xfeffu);
            ip[10] = (unsigned char)(c >> 8);
            ip[11] = (unsigned char)c;
            in->fwd4++;
        }
    } else { /* ACT_ECHO, IPv6 only for now */
        if (family != FAM6 || vhdr || ip[6] != PROTO_ICMPV6 || iplen < 48 || iplen > f->mtu || ip[24] == 0xff)
            return 0;
        unsigned char *icmp = ip + 40;
        uint32_t mlen = (uint32_t)(iplen - 40);
        if (icmp[0] != 128 || icmp[1] != 0)
            return 0;
        uint32_t ps = tsk_pseudo_sum6((const char *)src, (const char *)dst, mlen, PROTO_ICMPV6);
        if (tsk_ones_sum((const char *)icmp, mlen, ps) != 0xffffu)
            return 0;
        /* Version 6, the request's traffic class, flow label 0; payload length
         * and next header unchanged. */
        ip[1] &= 0xf0;
        ip[2] = 0;
        ip[3] = 0;
        ip[7] = (unsigned char)f->hop_limit;
        unsigned char tmp[16];
        memcpy(tmp, ip + 8, 16);
        memcpy(ip + 8, ip + 24, 16);
        memcpy(ip + 24, tmp, 16);
        /* Same pseudo-header (addresses swapped); the first word goes from
         * 0x8000 to 0x8100: ~m + m' = 0x7fff + 0x8100 = 0x0100 folded. */
        icmp[0] = 129;
        uint32_t c = csum_adjust(rd16(icmp + 2), 0x0100u);
        icmp[2] = (unsigned char)(c >> 8);
        icmp[3] = (unsigned char)c;
        in->echo6++;
    }
    in->rx_packets++;
    in->rx_bytes += len;
    fp_send(t, f, vhdr, ip, iplen);
    return 1;
}


/* ---- GRO ------------------------------------------------------------------ */

enum {
    GRO_MAX_SEGS = 64,
    TCP_ACK = 0x10,
    TCP_PSH = 0x08,
    GRO_DATA = 1,
    GRO_ACK = 2
};

/* One TCP segment as GRO sees it. */
struct gro_seg {
    unsigned char *frame; /* Ethernet header */
    unsigned char *ip;
    unsigned char *tcp;
    size_t iplen, l4, doff, plen;
    uint32_t family, seq, ack, flags;
};

/* Options a pure ACK may carry and still be superseded: NOP and timestamps. */
static int gro_ack_options(const unsigned char *opt, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (opt[i] == 0)
            return 1;            /* end of option list */
        if (opt[i] == 1) {
            i++;
            continue;
        }
        if (opt[i] != 8 || i + 10 > n || opt[i + 1] != 10)
            return 0;            /* SACK, or anything else: every one of those ACKs counts */
        i += 10;
    }
    return 1;
}

/* Parse `frame[0:len]` (no vnet header) as a GRO candidate: IPv6 without
 * extension headers or IPv4 without options, not a fragment, TCP with a valid
 * checksum, flags ACK (+PSH for data). Returns GRO_DATA, GRO_ACK or 0. */
static int gro_parse(unsigned char *frame, size_t len, struct gro_seg *s)
{
    if (!ip_header(frame, len, &s->family, &s->iplen, &s->l4) || s->iplen < s->l4 + 20)
        return 0;
    unsigned char *ip = frame + ETH_LEN;
    uint32_t ps, tcplen = (uint32_t)(s->iplen - s->l4);
    if (s->family == FAM6) {
        if (ip[6] != PROTO_TCP)
            return 0;            /* extension headers, or not TCP */
        ps = tsk_pseudo_sum6((const char *)ip + 8, (const char *)ip + 24, tcplen, PROTO_TCP);
    } else {
        if (ip[9] != PROTO_TCP || (rd16(ip + 6) & 0x3fffu) != 0)
            return 0;            /* not TCP, or a fragment */
        ps = tsk_pseudo_sum4((const char *)ip + 12, (const char *)ip + 16, tcplen, PROTO_TCP);
    }
    unsigned char *tcp = ip + s->l4;
    s->doff = (size_t)(tcp[12] >> 4) * 4;
    if (s->doff < 20 || s->l4 + s->doff > s->iplen || (tcp[12] & 0x0f) != 0)
        return 0;
    s->frame = frame;
    s->ip = ip;
    s->tcp = tcp;
    s->plen = s->iplen - s->l4 - s->doff;
    s->flags = tcp[13];
    s->seq = rd32(tcp + 4);
    s->ack = rd32(tcp + 8);
    int kind;
    if (s->plen > 0 && (s->flags & ~(uint32_t)TCP_PSH) == TCP_ACK)
        kind = GRO_DATA;
    else if (s->plen == 0 && s->flags == TCP_ACK && gro_ack_options(tcp + 20, s->doff - 20))
        kind = GRO_ACK;
    else
        return 0;
    if (tsk_ones_sum((const char *)tcp, tcplen, ps) != 0xffffu)
        return 0;                /* Python counts the bad checksum */
    return kind;
}

/* `s` belongs to the flow of `h`: the same Ethernet header, IP header fields
 * (all but length, IPv4 ID and header checksum), ports and TCP header length. */
static int gro_same_flow(const struct gro_seg *h, const struct gro_seg *s)
{
    if (s->family != h->family || s->doff != h->doff || memcmp(s->frame, h->frame, ETH_LEN) != 0 ||
        memcmp(s->tcp, h->tcp, 4) != 0)
        return 0;
    if (h->family == FAM6)
        return memcmp(s->ip, h->ip, 4) == 0 && s->ip[7] == h->ip[7] && memcmp(s->ip + 8, h->ip + 8, 32) == 0;
    return s->ip[1] == h->ip[1] && (s->ip[6] & 0x40) == (h->ip[6] & 0x40) && s->ip[8] == h->ip[8] &&
           memcmp(s->ip + 12, h->ip + 12, 8) == 0;
}

/* A virtio-net header of all zeros: a plain frame, no offload metadata. */
static inline int vnet_plain(const unsigned char *v)
{
    static const unsigned char zero[VNET_LEN] = {0};
    return memcmp(v, zero, VNET_LEN) == 0;
}

/* Merge after the punted frame buf[off:off+len] (off = in_vnet) what follows
 * it on the fd, reading at most `reads` frames; returns the new byte count of buf (vnet header included). */
static size_t gro_run(struct tsk_fp_table *t, int fd, uint32_t in_slot, uint32_t in_vnet, unsigned char *buf,
                      size_t buflen, size_t n, struct tsk_fp_hold *hold, uint32_t reads)
{
    struct gro_seg h, s;
    size_t off = in_vnet;
    if (n <= off || (in_vnet && !vnet_plain(buf)))
        return n;                /* kernel offload metadata: Python */
    int kind = gro_parse(buf + off, n - off, &h);
    if (kind == 0)
        return n;
    struct tsk_fp_link *in = &t->links[in_slot];
    unsigned char *hb = (unsigned char *)hold->buf;
    size_t gso_size = h.plen, room = buflen - off - ETH_LEN;
    uint32_t next = h.seq + (uint32_t)h.plen, segs = 1, ended = (h.flags & TCP_PSH) != 0;
    size_t max_ip = h.family == FAM6 ? 40 + 0xffffu : 0xffffu;
    if (max_ip > room)
        max_ip = room;
    if (reads > GRO_MAX_SEGS)
        reads = GRO_MAX_SEGS;
    while (!ended && reads-- > 0) {
        ssize_t r;
        do
            r = read(fd, hb, buflen);
        while (r < 0 && errno == EINTR);
        if (r <= 0)
            break;               /* EAGAIN; an error or EOF shows on the next read */
        t->rx_reads++;
        size_t rl = (size_t)r;
        hold->len = (uint32_t)rl;
        if (rl <= off || (in_vnet && !vnet_plain(hb)) ||
            gro_parse(hb + off, rl - off, &s) != kind || !gro_same_flow(&h, &s))
            break;
        if (kind == GRO_DATA) {
            if (s.seq != next || s.ack != h.ack || s.plen > gso_size || h.iplen + s.plen > max_ip ||
                memcmp(s.tcp + 20, h.tcp + 20, h.doff - 20) != 0)
                break;
            /* IPv4 without DF may be fragmented further on: its idents must run on
             * by one, as a cut of the merged packet will number them (Linux:
             * inet_gro_flush). With DF any ident goes (RFC 6864 atomic datagrams). */
            if (h.family == FAM4 && !(h.ip[6] & 0x40) && rd16(s.ip + 4) != ((rd16(h.ip + 4) + segs) & 0xffffu))
                break;
            memcpy(h.ip + h.iplen, s.tcp + s.doff, s.plen);
            h.iplen += s.plen;
            next += (uint32_t)s.plen;
            memcpy(h.tcp + 14, s.tcp + 14, 2);   /* the latest window */
            if (s.flags & TCP_PSH) {
                h.tcp[13] |= TCP_PSH;
                ended = 1;
            }
            if (s.plen < gso_size)
                ended = 1;
            segs++;
            in->gro_segs++;
            in->gro_bytes += rl - off - s.plen;
        } else {
            uint32_t d = s.ack - h.ack;
            if (s.seq != h.seq || d == 0 || d >= 0x80000000u)
                break;           /* a duplicate ACK or a window update: each one counts */
            in->acks_merged++;
            in->gro_bytes += (size_t)(ETH_LEN + h.iplen);
            memcpy(buf + off, hb + off, rl - off);   /* the later ACK replaces the earlier */
            h.iplen = s.iplen;
            h.ack = s.ack;
            n = rl;
        }
        hold->len = 0;
    }
    if (kind == GRO_ACK || segs < 2)
        return n;
    /* One TCP packet: lengths, IPv4 header checksum, partial TCP checksum. */
    uint32_t tcplen = (uint32_t)(h.iplen - h.l4), ps;
    if (h.family == FAM6) {
        wr16(h.ip + 4, (uint32_t)(h.iplen - 40));
        ps = tsk_pseudo_sum6((const char *)h.ip + 8, (const char *)h.ip + 24, tcplen, PROTO_TCP);
    } else {
        wr16(h.ip + 2, (uint32_t)h.iplen);
        h.ip[10] = h.ip[11] = 0;
        wr16(h.ip + 10, ~tsk_ones_sum((const char *)h.ip, 20, 0) & 0xffffu);
        ps = tsk_pseudo_sum4((const char *)h.ip + 12, (const char *)h.ip + 16, tcplen, PROTO_TCP);
    }
    wr16(h.tcp + 16, ps);
    unsigned char *v = t->rx_vnet;
    v[0] = VNET_F_NEEDS_CSUM;
    v[1] = h.family == FAM6 ? GSO_TCPV6 : GSO_TCPV4;
    wr16le(v + 2, (uint32_t)(ETH_LEN + h.l4 + h.doff));
    wr16le(v + 4, (uint32_t)gso_size);
    wr16le(v + 6, (uint32_t)(ETH_LEN + h.l4));
    wr16le(v + 8, 16);
    if (in_vnet)
        memcpy(buf, v, VNET_LEN);
    t->rx_segs = segs;
    in->gro_packets++;
    return off + ETH_LEN + h.iplen;
}

int tsk_fp_rx(struct tsk_fp_table *t, int fd, uint32_t in_slot, uint32_t in_vnet, char *buf, size_t buflen,
              uint32_t budget)
{
    if (t == NULL || buf == NULL || t->flows == NULL || in_slot >= FP_SLOTS ||
        (in_vnet != 0 && in_vnet != VNET_LEN) || buflen < (size_t)in_vnet + ETH_LEN + 40 || buflen > 0x7fffffff) {
        if (t != NULL)
            t->err = EINVAL;
        return -2;
    }
    struct tsk_fp_link *in = &t->links[in_slot];
    struct tsk_fp_hold *hold = &t->holds[in_slot];
    int gro = hold->buf != NULL && hold->cap >= buflen;
    unsigned char *b = (unsigned char *)buf;
    t->rx_reads = 0;
    t->rx_segs = 0;
    for (uint32_t i = 0; i < budget || hold->len; i++) {
        ssize_t n;
        if (hold->len) {
            /* read during the last merge, after the frame returned then */
            n = hold->len <= buflen ? (ssize_t)hold->len : (ssize_t)buflen;
            memcpy(buf, hold->buf, (size_t)n);
            hold->len = 0;               /* counted in rx_reads when it was read */
        } else {
            if (i >= budget)
                break;
            do
                n = read(fd, buf, buflen);
            while (n < 0 && errno == EINTR);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return 0;
                t->err = errno;
                return -2;
            }
            if (n == 0)
                return -3;
            t->rx_reads++;
        }
        size_t len = (size_t)n;
        int done;
        if (in_vnet)
            done = len > VNET_LEN && fp_handle(t, in_slot, b, b + VNET_LEN, len - VNET_LEN);
        else
            done = fp_handle(t, in_slot, NULL, b, len);
        if (!done) {
            in->punted++;
            if (gro)
                len = gro_run(t, fd, in_slot, in_vnet, b, buflen, len, hold, i + 1 < budget ? budget - i - 1 : 0);
            return (int)len;
        }
    }
    return -1;
}
