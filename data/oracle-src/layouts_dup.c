/* A second, different `struct dup` in another compilation unit: a name with two layouts,
 * as the kernel has (e.g. several `struct irq_info`).  Part of the layouts.c program. */
#include "check.h"

struct dup {
    char tag;
    long value;
    struct dup *next;
};

void check_dup(void)
{
    struct dup d = {0};
    (void)d;
    S(struct dup);
    M(struct dup, tag);
    M(struct dup, value);
    M(struct dup, next);
}
