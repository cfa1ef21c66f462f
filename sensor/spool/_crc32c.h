/*
 * CRC32C (Castagnoli), as google_crc32c computes it: the checksum of NMSG
 * payloads. SSE4.2's instruction where the CPU has it, else a table.
 * Shared by the C parts that write payloads (sensor/spool/_nmsgpack.c) and read
 * them (collector/_nmsgscan.c); call crc32c_init() once at import.
 */
#ifndef SENSOR_CRC32C_H
#define SENSOR_CRC32C_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc32c_table(const unsigned char *p, Py_ssize_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <nmmintrin.h>
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(const unsigned char *p, Py_ssize_t n)
{
    uint64_t c = 0xFFFFFFFFu;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = _mm_crc32_u64(c, word);
    }
    uint32_t c32 = (uint32_t)c;
    while (n--)
        c32 = _mm_crc32_u8(c32, *p++);
    return c32 ^ 0xFFFFFFFFu;
}
#endif

static uint32_t (*crc32c)(const unsigned char *, Py_ssize_t) = crc32c_table;

static void crc32c_init(void)
{
    crc_init();
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2"))
        crc32c = crc32c_sse42;
#endif
}

#endif
