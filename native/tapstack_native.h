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

#endif
