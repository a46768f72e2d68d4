/* Macros that print a struct's real layout, as the compiler lays it out.
 *
 * The output is the ground truth that tests/test_pahole_oracle.py compares the parsed pahole
 * output against (see layouts.c).  One record per line, tab-separated:
 *   S  <key> <sizeof>                        starts a layout; the lines below belong to it
 *   M  <key> <path> <offsetof> <sizeof> <dims>  a plain member (dims "-" or e.g. "2,3")
 *   B  <key> <path> <bitpos> <width> <sizeof(declared type)>
 *      a bitfield: bitpos = index of its lowest bit counted from bit 0 of byte 0 of the
 *      struct (found by setting the field in a zeroed struct), width = number of its bits.
 */
#ifndef ORACLE_CHECK_H
#define ORACLE_CHECK_H

#include <stddef.h>
#include <stdio.h>
#include <string.h>

static inline int lowest_set_bit(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        for (int bit = 0; bit < 8; bit++)
            if (b[i] & (1u << bit))
                return (int)(i * 8 + bit);
    return -1;
}

static inline int count_set_bits(const void *p, size_t n)
{
    const unsigned char *b = p;
    int count = 0;
    for (size_t i = 0; i < n; i++)
        count += __builtin_popcount(b[i]);
    return count;
}

#define S(T) printf("S\t%s\t%zu\n", #T, sizeof(T))

#define M(T, path) \
    printf("M\t%s\t%s\t%zu\t%zu\t-\n", #T, #path, offsetof(T, path), sizeof(((T *)0)->path))

/* An array member; dims is written out by hand ("2,3,4"), as C can't enumerate them. */
#define A(T, path, dims) \
    printf("M\t%s\t%s\t%zu\t%zu\t%s\n", #T, #path, offsetof(T, path), \
           sizeof(((T *)0)->path), dims)

/* A flexible array member: sizeof is not allowed on it, its size is 0. */
#define FLEX(T, path) printf("M\t%s\t%s\t%zu\t0\t0\n", #T, #path, offsetof(T, path))

/* Assigning -1 sets every bit of an unsigned field (conversion is modulo 2^width) and of a
 * signed one (two's complement); assigning 1 sets its lowest bit (for a signed 1-bit field
 * gcc stores -1, which is still exactly that one bit). */
#define B(T, path, ctype) do {                                              \
        T s_;                                                               \
        int lo_, width_;                                                    \
        memset(&s_, 0, sizeof s_);                                          \
        s_.path = 1;                                                        \
        lo_ = lowest_set_bit(&s_, sizeof s_);                               \
        memset(&s_, 0, sizeof s_);                                          \
        s_.path = -1;                                                       \
        width_ = count_set_bits(&s_, sizeof s_);                            \
        printf("B\t%s\t%s\t%d\t%d\t%zu\n", #T, #path, lo_, width_, sizeof(ctype)); \
    } while (0)

#endif
