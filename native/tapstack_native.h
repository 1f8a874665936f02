/* tapstack native fast path: declarations shared by checksum.c, frame.c and
 * build_native.py (which feeds every line not starting with '#' to ffi.cdef,
 * so keep this file free of macros and of anything cffi cannot parse).
 *
 * The C is dumb on purpose (GUIDE.md §6): no allocation, no Python objects,
 * every read bounds-checked against the length passed in, results written
 * into a caller-provided struct. Policy stays in Python.
 */
#ifndef TAPSTACK_NATIVE_H
#define TAPSTACK_NATIVE_H

#include <stddef.h>
#include <stdint.h>

/* Folded 16-bit one's-complement sum of buf[0:len] (odd length padded with a
 * zero byte) plus `initial`, not inverted (RFC 1071). 0 only when every byte
 * and `initial` are zero. */
uint32_t tsk_ones_sum(const char *buf, size_t len, uint32_t initial);

/* Folded sums of the IPv6 (RFC 8200 §8.1) and IPv4 (RFC 9293 §3.1, RFC 768)
 * pseudo-headers; src/dst point at 16 (resp. 4) bytes. */
uint32_t tsk_pseudo_sum6(const char *src, const char *dst, uint32_t length, uint32_t nh);
uint32_t tsk_pseudo_sum4(const char *src, const char *dst, uint32_t length, uint32_t proto);

/* Result codes of tsk_parse_frame. The names after TSK_E_ are the ParseError
 * reasons of stack/wire/_pure.py in upper case; frame.py maps them by name. */
enum tsk_rc {
    TSK_OK = 0,
    TSK_NOT_HANDLED = 1,
    TSK_E_ETH_TRUNCATED = 2,
    TSK_E_IPV6_TRUNCATED = 3,
    TSK_E_IPV6_BAD_VERSION = 4,
    TSK_E_IPV6_BAD_LENGTH = 5,
    TSK_E_IPV4_TRUNCATED = 6,
    TSK_E_IPV4_BAD_VERSION = 7,
    TSK_E_IPV4_BAD_IHL = 8,
    TSK_E_IPV4_BAD_LENGTH = 9,
    TSK_E_IPV4_BAD_CHECKSUM = 10,
    TSK_E_TCP_TRUNCATED = 11,
    TSK_E_TCP_BAD_OFFSET = 12,
    TSK_E_UDP_TRUNCATED = 13,
    TSK_E_UDP_BAD_LENGTH = 14,
    TSK_E_ICMP_TRUNCATED = 15
};

/* Everything the common shapes produce, as 16 uint32 in a row (frame.py reads
 * the struct with one struct.unpack). Addresses are not copied: Python slices
 * them from the buffer at the fixed offsets of the IP header. */
struct tsk_frame {
    uint32_t ethertype;
    uint32_t ip_version;
    uint32_t l3_off;
    uint32_t hop_limit;
    uint32_t tclass;
    uint32_t flow_label;
    uint32_t ip_end;
    uint32_t proto;
    uint32_t l4_off;
    uint32_t frag_id;
    uint32_t df;
    uint32_t sport;
    uint32_t dport;
    uint32_t icmp_type;
    uint32_t icmp_code;
    uint32_t csum_ok;
};

/* Parse Ethernet + (IPv6 without extension headers | IPv4 without options,
 * not a fragment) + (TCP | UDP | ICMPv6 | ICMPv4). Returns TSK_OK with `out`
 * filled, TSK_NOT_HANDLED for any other shape (Python parses it), or a
 * TSK_E_* code that the pure parser would raise for the same bytes. */
int tsk_parse_frame(const char *buf, size_t len, struct tsk_frame *out);
/* The same, but a TCP header at frame offset tcp_trusted (non-zero) has a checksum
 * the link vouches for (virtio-net NEEDS_CSUM with csum_start there, or DATA_VALID):
 * csum_ok = 1 without summing the segment. */
int tsk_parse_frame_trusted(const char *buf, size_t len, struct tsk_frame *out, size_t tcp_trusted);

/* ---- per-flow fast path (fastpath.c; wrapper: stack/link/fastpath.py) ----
 *
 * After the Python core forwarded a packet (or answered an echo request) to a
 * REACHABLE neighbor it hands out a flow hint; the runtime installs it here.
 * tsk_fp_rx then reads frames from a TAP fd and forwards / answers those that
 * match an installed flow and pass every per-packet check itself; anything
 * else is returned to Python ("punted"), never dropped here. Key = (in_slot,
 * family, src, dst). IPv4 addresses live in src[0:4] / dst[0:4], rest zero. */
struct tsk_fp_flow {
    uint8_t  src[16];
    uint8_t  dst[16];
    uint8_t  eth[14];     /* Ethernet header written before the IP packet */
    uint8_t  in_mac[6];   /* our MAC on the ingress link */
    uint16_t family;      /* 0 = empty slot, 6, 4 */
    uint16_t action;      /* 1 = forward, 2 = echo reply */
    int32_t  out_fd;      /* egress TAP fd (echo: normally the ingress fd) */
    uint16_t in_slot;     /* link slot 0..63 of the ingress link */
    uint16_t out_slot;    /* link slot of the egress link */
    uint32_t out_vnet;    /* 0, or 10: egress fd has IFF_VNET_HDR */
    uint32_t mtu;         /* largest IP packet that may leave on the egress link */
    uint32_t hop_limit;   /* echo: hop limit / TTL of the reply */
    uint32_t gen;         /* the table's gen when installed (set by tsk_fp_put); live only while equal */
};

/* Per link slot; only ever incremented by C, Python reads deltas. */
struct tsk_fp_link {
    uint64_t rx_packets, rx_bytes;
    uint64_t tx_packets, tx_bytes;
    uint64_t fwd6, fwd4, echo6, echo4;
    uint64_t punted;
    uint64_t tx_full, tx_down, tx_errors;
    uint64_t tx_gso;                  /* of tx_packets: GSO packets written whole (vnet egress) */
    uint64_t gro_packets;             /* merged TCP packets returned to Python (2+ segments each) */
    uint64_t gro_segs;                /* data segments appended to an earlier one (not returned alone) */
    uint64_t acks_merged;             /* pure ACKs superseded by a later cumulative ACK of the flow */
    uint64_t gro_bytes;               /* Ethernet bytes of those frames that Python never saw */
};

/* GRO state of one link slot. buf (cap bytes, allocated by Python) holds a
 * frame that was read while merging and did not continue the merge: the next
 * tsk_fp_rx on the slot takes it before reading the fd. buf NULL: GRO off. */
struct tsk_fp_hold {
    char *buf;
    uint32_t cap;
    uint32_t len;                     /* bytes held (with the vnet header on a vnet link), 0: none */
};

struct tsk_fp_table {
    uint32_t mask;                 /* number of flow slots - 1 (power of two) */
    struct tsk_fp_flow *flows;     /* mask + 1 entries, allocated by Python */
    struct tsk_fp_link links[64];
    int32_t err;                   /* errno of the last failed read (tsk_fp_rx returned -2) */
    uint32_t gen;                  /* tsk_fp_clear moves it: every flow of an older gen is void (O(1) clear) */
    struct tsk_fp_hold holds[64];  /* GRO per link slot */
    uint32_t rx_reads;             /* frames the last tsk_fp_rx read from the fd */
    uint32_t rx_segs;              /* segments in the frame it returned (0/1: as read; 2+: merged) */
    uint8_t rx_vnet[10];           /* virtio_net_hdr of a merged frame (also in buf[0:10] on a vnet link) */
};

/* Install a flow (2-way set associative, most recently installed first: the
 * flow takes way 0 of its set, the one there moves to way 1, the one in way 1
 * is evicted; a flow with the same key is replaced). A flow with a bad
 * family/action/slot/fd/out_vnet is ignored. */
void tsk_fp_put(struct tsk_fp_table *t, const struct tsk_fp_flow *f);
/* Every flow slot empty; link counters untouched. */
void tsk_fp_clear(struct tsk_fp_table *t);
/* Read up to `budget` frames from non-blocking `fd` (in_vnet = 0 or 10 bytes
 * of virtio_net_hdr in front) and handle those that match a flow. Returns
 * n > 0: the last read's n raw bytes in buf are Python's (punted); 0: EAGAIN;
 * -1: budget frames consumed; -2: read failed (errno in t->err); -3: EOF.
 *
 * GRO (when holds[in_slot].buf is set and at least buflen long): a punted
 * in-order TCP data segment (ACK, maybe PSH, nothing else; checksum verified)
 * absorbs the segments of its flow that follow it on the fd, as Linux's
 * tcp_gro_receive: same Ethernet/IP header fields, ports, ACK number and
 * options, SEQ = the next byte, no larger than the first; a PSH or a shorter
 * segment ends it. The result (rx_segs >= 2) is one TCP packet whose checksum
 * is partial, described by rx_vnet (NEEDS_CSUM, GSO_TCPV4/6, gso_size = the
 * first segment's payload). A punted pure ACK (options NOP/timestamps only)
 * is superseded by a later pure ACK of the flow with the same SEQ and a higher
 * ACK number (returned as read, rx_segs = 1). The first frame that does not
 * continue is held for the next call: the caller calls again while
 * holds[in_slot].len != 0, budget or not. */
int tsk_fp_rx(struct tsk_fp_table *t, int fd, uint32_t in_slot, uint32_t in_vnet,
              char *buf, size_t buflen, uint32_t budget);

/* ---- software GSO (gso.c; wrapper: stack/link/gso.py) ----
 *
 * One Ethernet frame carrying a TCP GSO packet (IPv6 without extension headers
 * or IPv4, not a fragment; gso_type TCPV4/TCPV6, ECN bit allowed; checksum
 * partial or complete) is cut into gso_size segments exactly as
 * stack.wire.gso.segment_frame (gso_segment) does. A frame with gso_type NONE
 * and NEEDS_CSUM (flags & 1) gets its checksum completed (complete_checksum);
 * with neither it goes as it is. Offsets are frame-relative (as on a link).
 * Errors are returned negated; the names after TSK_GSO_E_ are the ParseError
 * reasons of the twin in upper case. */
enum tsk_gso_rc {
    TSK_GSO_E_BAD_SIZE = 1,
    TSK_GSO_E_TRUNCATED = 2,
    TSK_GSO_E_NOT_TCP = 3,
    TSK_GSO_E_BAD_GSO = 4,
    TSK_GSO_E_CSUM_OFFSET = 5,
    TSK_GSO_E_SPACE = 6
};

/* What one tsk_gso_write did (zeroed at its start). A failed write stops the
 * call: that frame and every one after it count in full (EAGAIN), down (EIO) or
 * errors (any other errno, which is in err). */
struct tsk_gso_tx {
    uint64_t frames;   /* frames written */
    uint64_t bytes;    /* their bytes */
    uint64_t full;
    uint64_t down;
    uint64_t errors;
    int32_t err;       /* errno of the failed write, 0 if none failed */
};

/* Cut and write each frame with one writev(2) to non-blocking `fd`. Returns the
 * number of frames written, or -TSK_GSO_E_* (nothing written) for a bad shape. */
int tsk_gso_write(int fd, const char *frame, size_t len, uint32_t flags, uint32_t gso_type,
                  uint32_t gso_size, uint32_t csum_start, uint32_t csum_offset, struct tsk_gso_tx *tx);

/* The same cut into `out` (frames back to back, lens[i] = length of frame i).
 * Returns the number of frames, or -TSK_GSO_E_* (-TSK_GSO_E_SPACE: more than
 * maxsegs frames or more than outcap bytes). */
int tsk_gso_cut(const char *frame, size_t len, uint32_t flags, uint32_t gso_type, uint32_t gso_size,
                uint32_t csum_start, uint32_t csum_offset, char *out, size_t outcap,
                uint32_t *lens, uint32_t maxsegs);

#endif
