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

static inline uint32_t rd16(const unsigned char *p)
{
    return ((uint32_t)p[0] << 8) | p[1];
}

static inline uint32_t rd16le(const unsigned char *p)
{
    return ((uint32_t)p[1] << 8) | p[0];
}

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
    if (len < ETH_LEN + 20)
        return 0;
    uint32_t ethertype = rd16(frame + 12);
    unsigned char *ip = frame + ETH_LEN;
    size_t avail = len - ETH_LEN;
    uint32_t family;
    size_t iplen, l4;
    const unsigned char *src, *dst;
    if (ethertype == 0x86DD) {
        if (avail < 40 || (ip[0] >> 4) != 6)
            return 0;
        iplen = 40 + (size_t)rd16(ip + 4);
        if (iplen > avail || ip[6] == 0)
            return 0; /* truncated, or Hop-by-Hop options */
        family = FAM6;
        src = ip + 8;
        dst = ip + 24;
        l4 = 40;
    } else if (ethertype == 0x0800) {
        if (ip[0] != 0x45)
            return 0; /* not version 4, or options */
        iplen = rd16(ip + 2);
        if (iplen < 20 || iplen > avail || tsk_ones_sum((const char *)ip, 20, 0) != 0xffffu)
            return 0;
        family = FAM4;
        src = ip + 12;
        dst = ip + 16;
        l4 = 20;
    } else {
        return 0;
    }
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
    unsigned char *b = (unsigned char *)buf;
    for (uint32_t i = 0; i < budget; i++) {
        ssize_t n;
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
        size_t len = (size_t)n;
        int done;
        if (in_vnet)
            done = len > VNET_LEN && fp_handle(t, in_slot, b, b + VNET_LEN, len - VNET_LEN);
        else
            done = fp_handle(t, in_slot, NULL, b, len);
        if (!done) {
            in->punted++;
            return (int)n;
        }
    }
    return -1;
}
