/* Internet checksum (RFC 1071) for tapstack.
 *
 * 64-bit accumulation over unaligned 8-byte loads (memcpy, so any alignment and
 * any memoryview offset is safe), end-around carry per add, then a fold to 16
 * bits. The sum is taken in host byte order and byte-swapped at the end on
 * little-endian hosts: RFC 1071 §2(B) "byte order independence".
 */
#include <string.h>

#include "byteorder.h"
#include "tapstack_native.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define TSK_HOST_IS_BE 1
#else
#define TSK_HOST_IS_BE 0
#endif

static inline uint64_t add_carry(uint64_t acc, uint64_t w)
{
    acc += w;
    return acc + (acc < w); /* end-around carry */
}

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* Fold a 64-bit one's-complement accumulator to 16 bits. Never turns a
 * non-zero value into 0 (the result is in 1..0xffff then). */
static inline uint32_t fold64(uint64_t acc)
{
    acc = (acc & 0xffffffffu) + (acc >> 32);
    acc = (acc & 0xffffffffu) + (acc >> 32);
    acc = (acc & 0xffffu) + (acc >> 16);
    acc = (acc & 0xffffu) + (acc >> 16);
    acc = (acc & 0xffffu) + (acc >> 16);
    return (uint32_t)acc;
}

/* Sum of buf[0:len] in host order, folded to 16 bits. */
static uint32_t host_sum(const unsigned char *p, size_t n)
{
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    while (n >= 32) {
        a0 = add_carry(a0, load64(p));
        a1 = add_carry(a1, load64(p + 8));
        a2 = add_carry(a2, load64(p + 16));
        a3 = add_carry(a3, load64(p + 24));
        p += 32;
        n -= 32;
    }
    while (n >= 8) {
        a0 = add_carry(a0, load64(p));
        p += 8;
        n -= 8;
    }
    if (n) {
        /* The tail, zero-padded: an odd last byte is the high byte of a
         * big-endian word whose low byte is 0 (RFC 1071 §4.1). */
        unsigned char tail[8] = {0};
        memcpy(tail, p, n);
        a1 = add_carry(a1, load64(tail));
    }
    a0 = add_carry(a0, a1);
    a2 = add_carry(a2, a3);
    return fold64(add_carry(a0, a2));
}

uint32_t tsk_ones_sum(const char *buf, size_t len, uint32_t initial)
{
    uint32_t s = host_sum((const unsigned char *)buf, len);
#if !TSK_HOST_IS_BE
    s = ((s & 0xffu) << 8) | (s >> 8);
#endif
    return fold64((uint64_t)s + initial);
}

static uint64_t words(const unsigned char *p, size_t n)
{
    uint64_t acc = 0;
    for (size_t i = 0; i < n; i += 2)
        acc += rd16(p + i);
    return acc;
}

uint32_t tsk_pseudo_sum6(const char *src, const char *dst, uint32_t length, uint32_t nh)
{
    /* RFC 8200 §8.1: src, dst, 32-bit upper-layer length, 3 zero bytes, next header. */
    uint64_t acc = words((const unsigned char *)src, 16) + words((const unsigned char *)dst, 16);
    acc += (length >> 16) + (length & 0xffffu) + nh;
    return fold64(acc);
}

uint32_t tsk_pseudo_sum4(const char *src, const char *dst, uint32_t length, uint32_t proto)
{
    /* RFC 768 / RFC 9293 §3.1: src, dst, zero, protocol, 16-bit length. */
    uint64_t acc = words((const unsigned char *)src, 4) + words((const unsigned char *)dst, 4);
    acc += (length >> 16) + (length & 0xffffu) + proto;
    return fold64(acc);
}
