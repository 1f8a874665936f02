/* Software GSO for TCP on links without offloads (Linux: skb_gso_segment ->
 * tcp_gso_segment, done right before a driver that has no TSO).
 *
 * Core's TCP builds segments of up to 64 KB (TSO) for every link that says it
 * takes them (Stack.set_offload). A TAP with a virtio-net header hands them to
 * the kernel whole; a plain TAP hands them here, one Ethernet frame at a time:
 * the frame is cut into gso_size pieces exactly as stack.wire.gso.gso_segment
 * does (its pure twin; segment_frame for the whole frame): IPv4 identification
 * +1 per segment, lengths and checksums rewritten, sequence numbers advanced,
 * FIN and PSH only on the last segment, CWR only on the first. A frame that is
 * not GSO but has a partial checksum (NEEDS_CSUM) gets it completed as
 * complete_checksum does.
 *
 * tsk_gso_write writes every piece with one writev(2) (the headers from a stack
 * buffer, the payload straight from the input: nothing is copied) to a
 * non-blocking TAP fd; tsk_gso_cut writes them one after the other into a
 * caller buffer (tests, byte-for-byte checks against the twin).
 *
 * Dumb on purpose (GUIDE.md §6): no allocation, no Python objects, every read
 * bounds-checked against the length passed in. A shape this file does not
 * handle returns -TSK_GSO_E_*, the ParseError reason of the twin; the caller
 * counts it.
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
    ETH_LEN = 14,
    HDR_MAX = 14 + 60 + 60,   /* Ethernet + IPv4 with options (or IPv6) + TCP with options */
    F_NEEDS_CSUM = 1,
    GT_ECN = 0x80,
    GT_TCPV4 = 1,
    GT_TCPV6 = 4,
    TCP_FIN = 0x01,
    TCP_PSH = 0x08,
    TCP_CWR = 0x80
};

/* The TCP packet of a frame, checked in the order of the twin (_tcp_offsets,
 * then gso_segment) so that a bad frame gets the same reason. Offsets are
 * frame-relative. */
struct cut {
    const unsigned char *f;
    size_t l4;        /* TCP header */
    size_t thl;       /* its length */
    size_t end;       /* end of the IP packet */
    int v6;
    uint32_t size;    /* gso_size */
    uint32_t nsegs;
};

static int plan(struct cut *c, const unsigned char *f, size_t len, uint32_t gso_size)
{
    if (gso_size == 0)
        return -TSK_GSO_E_BAD_SIZE;
    /* the twin cuts frame[14:]: a frame shorter than that is a short packet */
    const unsigned char *ip = f + (len < ETH_LEN ? len : ETH_LEN);
    size_t n = len < ETH_LEN ? 0 : len - ETH_LEN;
    size_t l4, end;
    if (n < 20)
        return -TSK_GSO_E_TRUNCATED;
    uint32_t version = ip[0] >> 4;
    if (version == 6) {
        if (n < 60 || ip[6] != 6)
            return -TSK_GSO_E_NOT_TCP;
        l4 = 40;
        end = 40 + rd16(ip + 4);
    } else if (version == 4) {
        l4 = (size_t)(ip[0] & 0x0f) * 4;
        if (l4 < 20 || ip[9] != 6 || (rd16(ip + 6) & 0x3fff))
            return -TSK_GSO_E_NOT_TCP;
        end = rd16(ip + 2);
    } else {
        return -TSK_GSO_E_NOT_TCP;
    }
    if (end > n || end < l4 + 20)
        return -TSK_GSO_E_TRUNCATED;
    size_t thl = (size_t)(ip[l4 + 12] >> 4) * 4;
    if (thl < 20 || l4 + thl > end)
        return -TSK_GSO_E_TRUNCATED;
    size_t payload = end - l4 - thl;
    size_t nsegs = payload ? (payload + gso_size - 1) / gso_size : 1;
    c->f = f;
    c->l4 = ETH_LEN + l4;
    c->thl = thl;
    c->end = ETH_LEN + end;
    c->v6 = version == 6;
    c->size = gso_size;
    c->nsegs = (uint32_t)nsegs;
    return 0;
}

/* Segment i: its headers into h (returns their length), its payload in
 * *chunk / *clen. */
static size_t segment(const struct cut *c, uint32_t i, unsigned char *h,
                      const unsigned char **chunk, size_t *clen)
{
    const unsigned char *f = c->f;
    size_t hl = c->l4 + c->thl;
    size_t off = c->l4 + c->thl + (size_t)i * c->size;
    size_t left = c->end - off;
    size_t cl = left < c->size ? left : c->size;
    unsigned char *ip = h + ETH_LEN;
    unsigned char *th = h + c->l4;
    uint32_t seg_len = (uint32_t)(c->thl + cl);

    memcpy(h, f, hl);
    wr32(th + 4, rd32(f + c->l4 + 4) + i * c->size);
    uint32_t flags = f[c->l4 + 13];
    if (i != c->nsegs - 1)
        flags &= ~(uint32_t)(TCP_FIN | TCP_PSH);
    if (i != 0)
        flags &= ~(uint32_t)TCP_CWR;
    th[13] = (unsigned char)flags;
    th[16] = th[17] = 0;
    uint32_t pseudo = c->v6 ? tsk_pseudo_sum6((const char *)ip + 8, (const char *)ip + 24, seg_len, 6)
                            : tsk_pseudo_sum4((const char *)ip + 12, (const char *)ip + 16, seg_len, 6);
    uint32_t sum = tsk_ones_sum((const char *)f + off, cl, tsk_ones_sum((const char *)th, c->thl, pseudo));
    wr16(th + 16, ~sum & 0xffffu);
    if (c->v6) {
        wr16(ip + 4, seg_len);
    } else {
        size_t ihl = c->l4 - ETH_LEN;
        wr16(ip + 2, (uint32_t)ihl + seg_len);
        wr16(ip + 4, rd16(f + ETH_LEN + 4) + i);
        ip[10] = ip[11] = 0;
        wr16(ip + 10, ~tsk_ones_sum((const char *)ip, ihl, 0) & 0xffffu);
    }
    *chunk = f + off;
    *clen = cl;
    return hl;
}

/* The completed checksum of a NEEDS_CSUM frame (complete_checksum): the value
 * to store at `at`, or -TSK_GSO_E_CSUM_OFFSET. */
static int32_t completed(const unsigned char *f, size_t len, uint32_t csum_start, uint32_t csum_offset,
                         size_t *at)
{
    size_t a = (size_t)csum_start + csum_offset;
    if (a + 2 > len)
        return -TSK_GSO_E_CSUM_OFFSET;
    uint32_t csum = ~tsk_ones_sum((const char *)f + csum_start, len - csum_start, 0) & 0xffffu;
    *at = a;
    return (int32_t)(csum ? csum : 0xffffu);     /* as the kernel: never 0 (CSUM_MANGLED_0) */
}

static int kind(uint32_t gso_type)
{
    uint32_t t = gso_type & ~(uint32_t)GT_ECN;
    if (t == 0)
        return 0;
    return t == GT_TCPV4 || t == GT_TCPV6 ? 1 : -TSK_GSO_E_BAD_GSO;
}

/* One frame to the fd: retry on EINTR; 0, or the errno. */
static int put(int fd, struct iovec *iov, int n, size_t total, struct tsk_gso_tx *tx)
{
    for (;;) {
        ssize_t w = writev(fd, iov, n);
        if (w >= 0) {
            tx->frames++;
            tx->bytes += (uint64_t)total;
            return 0;
        }
        if (errno != EINTR)
            return errno;
    }
}

static void failed(struct tsk_gso_tx *tx, int err, uint32_t lost)
{
    tx->err = err;
    if (err == EAGAIN || err == EWOULDBLOCK)
        tx->full += lost;
    else if (err == EIO)
        tx->down += lost;
    else
        tx->errors += lost;
}

int tsk_gso_write(int fd, const char *frame, size_t len, uint32_t flags, uint32_t gso_type,
                  uint32_t gso_size, uint32_t csum_start, uint32_t csum_offset, struct tsk_gso_tx *tx)
{
    const unsigned char *f = (const unsigned char *)frame;
    struct iovec iov[3];
    int err;
    memset(tx, 0, sizeof *tx);
    int k = kind(gso_type);
    if (k < 0)
        return k;
    if (k == 0) {
        if (!(flags & F_NEEDS_CSUM)) {
            iov[0].iov_base = (void *)f;
            iov[0].iov_len = len;
            err = put(fd, iov, 1, len, tx);
        } else {
            size_t at;
            int32_t csum = completed(f, len, csum_start, csum_offset, &at);
            if (csum < 0)
                return csum;
            unsigned char field[2];
            wr16(field, (uint32_t)csum);
            iov[0].iov_base = (void *)f;
            iov[0].iov_len = at;
            iov[1].iov_base = field;
            iov[1].iov_len = 2;
            iov[2].iov_base = (void *)(f + at + 2);
            iov[2].iov_len = len - at - 2;
            err = put(fd, iov, 3, len, tx);
        }
        if (err) {
            failed(tx, err, 1);
            return 0;
        }
        return 1;
    }
    struct cut c;
    int rc = plan(&c, f, len, gso_size);
    if (rc < 0)
        return rc;
    unsigned char h[HDR_MAX];
    for (uint32_t i = 0; i < c.nsegs; i++) {
        const unsigned char *chunk;
        size_t clen;
        size_t hl = segment(&c, i, h, &chunk, &clen);
        iov[0].iov_base = h;
        iov[0].iov_len = hl;
        iov[1].iov_base = (void *)chunk;
        iov[1].iov_len = clen;
        err = put(fd, iov, clen ? 2 : 1, hl + clen, tx);
        if (err) {
            /* the queue is full / the link is down for the rest too: they are lost, counted */
            failed(tx, err, c.nsegs - i);
            return (int)i;
        }
    }
    return (int)c.nsegs;
}

int tsk_gso_cut(const char *frame, size_t len, uint32_t flags, uint32_t gso_type, uint32_t gso_size,
                uint32_t csum_start, uint32_t csum_offset, char *out, size_t outcap,
                uint32_t *lens, uint32_t maxsegs)
{
    const unsigned char *f = (const unsigned char *)frame;
    unsigned char *o = (unsigned char *)out;
    int k = kind(gso_type);
    if (k < 0)
        return k;
    if (k == 0) {
        if (maxsegs < 1 || outcap < len)
            return -TSK_GSO_E_SPACE;
        memcpy(o, f, len);
        if (flags & F_NEEDS_CSUM) {
            size_t at;
            int32_t csum = completed(f, len, csum_start, csum_offset, &at);
            if (csum < 0)
                return csum;
            wr16(o + at, (uint32_t)csum);
        }
        lens[0] = (uint32_t)len;
        return 1;
    }
    struct cut c;
    int rc = plan(&c, f, len, gso_size);
    if (rc < 0)
        return rc;
    if (c.nsegs > maxsegs)
        return -TSK_GSO_E_SPACE;
    size_t pos = 0;
    unsigned char h[HDR_MAX];
    for (uint32_t i = 0; i < c.nsegs; i++) {
        const unsigned char *chunk;
        size_t clen;
        size_t hl = segment(&c, i, h, &chunk, &clen);
        if (outcap - pos < hl + clen)
            return -TSK_GSO_E_SPACE;
        memcpy(o + pos, h, hl);
        memcpy(o + pos + hl, chunk, clen);
        pos += hl + clen;
        lens[i] = (uint32_t)(hl + clen);
    }
    return (int)c.nsegs;
}
