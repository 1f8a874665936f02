/* Unaligned network (big-endian) and virtio (little-endian) field access, shared
 * by the C files of the native module. Internal: not part of tapstack_native.h,
 * which cffi parses. */
#ifndef TAPSTACK_BYTEORDER_H
#define TAPSTACK_BYTEORDER_H

#include <stdint.h>

static inline uint32_t rd16(const unsigned char *p)
{
    return ((uint32_t)p[0] << 8) | p[1];
}

static inline uint32_t rd32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void wr16(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static inline void wr32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* virtio_net_hdr fields are little-endian on the hosts we run on */
static inline uint32_t rd16le(const unsigned char *p)
{
    return ((uint32_t)p[1] << 8) | p[0];
}

static inline void wr16le(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

#endif
