/* Layout shapes the kernel uses, for checking tests/pahole_oracle.py against the compiler.
 *
 * Build: gcc -g -O0 -o layouts layouts.c layouts_dup.c   (tests/test_pahole_oracle.py does it)
 * Run it to print the true layout of every struct below (format in check.h); run pahole on
 * the same binary to get the layouts the oracle parses.  Every member of every struct here
 * must be listed in main() below: the test checks that the sets of members are equal.
 */
#include "check.h"

struct rcu_head;   /* only ever pointed to */

enum color { RED, GREEN, BLUE = 7 };

/* Bitfields: units of different sizes, a field that doesn't fit in the rest of its unit,
 * signed/bool/enum fields, a :0 separator and an unnamed padding field. */
struct bits {
    unsigned int a : 3;
    unsigned int b : 30;          /* does not fit after a: starts the next int */
    unsigned long long c : 40;
    unsigned char d : 5;
    int e : 7;
    signed char neg : 3;
    _Bool flag : 1;
    enum color col : 4;
    unsigned short : 0;
    unsigned short after0 : 2;
    unsigned int : 5;             /* unnamed: not a member in C */
    unsigned int g : 4;
    long long plain;
    unsigned long long top : 64;  /* a whole unit */
};

/* Packed: bitfields straddle their declared type's natural unit. */
struct __attribute__((packed)) packed_bits {
    char c;
    unsigned int x : 12;
    unsigned int y : 20;
    unsigned long long z : 33;
    short s;
};

struct inner {
    int i1;
    char i2;
};

typedef struct {
    int counter;
} my_atomic_t;

/* Anonymous unions/structs (flattened by C), nested several levels deep, and members whose
 * type is an anonymous struct/union/enum declared in place. */
struct anon {
    long head;
    union {
        long u_long;
        struct {
            int lo;
            int hi;
        };
        struct {
            unsigned short w0 : 4;
            unsigned short w1 : 12;
            union {
                char deep_c;
                short deep_s;
            };
        };
    };
    struct inner named;           /* a named struct type: not expanded by pahole */
    my_atomic_t refs;             /* typedef of an anonymous struct: not expanded either */
    struct {
        int x;
        union {
            int y;
            float yf;
        };
        struct {
            char z;
        } zz;
    } in_place;                   /* anonymous type, named member */
    struct {
        short id;
        short proto;
    } vlan[3];                    /* array of an anonymous struct */
    struct {
        long pa;
        long pb;
    } *ptr_to_anon;               /* pointer: the pointee's members are not ours */
    enum {
        MODE_A,
        MODE_B = 5,
    } mode;
    enum {
        K_X = 1,
    } kind : 3;
    union {
        int tail_i;
        char tail_c[7];
    };
};

/* Arrays of every shape, including a flexible array member at the end. */
struct arrays {
    char comm[16];
    int m[2][3][4];
    int zero[0];
    char *argv[4];
    int (*ptr_to_arr)[5];
    void (*handlers[3])(int);
    const char *const names[2];
    struct inner inners[2][2];
    unsigned long tail[];
};

/* Function pointers. */
struct fnptrs {
    void (*func)(struct rcu_head *);
    char *(*get)(const char *, int);
    int (*vararg)(const char *, ...);
    void (*takes_fn)(void (*)(void), unsigned long);
    long (*noargs)(void);
    void *(*(*returns_fn)(int))(char);   /* returns a pointer to a function */
};

/* Attributes and qualifiers. */
struct attrs {
    char c;
    int aligned16 __attribute__((aligned(16)));
    const volatile int cv;
    char *const cp;
    const char *pc;
    volatile unsigned long *vp;
    struct inner packed_inner[2] __attribute__((aligned(64)));
} __attribute__((aligned(128)));

/* A union whose size (8) is larger than its largest member (5). */
union u {
    char five[5];
    int i;
    struct {
        short s1;
        short s2;
    };
};

struct empty {
};

struct has_empty {
    int before;
    struct empty e;
    int after;
};

/* Every struct size is over 64 bytes so that pahole prints cacheline markers. */
struct big {
    char pad[60];
    int across;                   /* ends exactly at a cacheline boundary */
    char more[70];
    double d;
};

void check_dup(void);   /* layouts_dup.c: another `struct dup` */

struct dup {
    int a;
    int b;
};

/* A struct declared inside a function: pahole only prints it with --show_private_classes. */
static void check_local(void)
{
    struct local_only {
        int lx;
        char ly[3];
    } v = {0};
    (void)v;
    S(struct local_only);
    M(struct local_only, lx);
    A(struct local_only, ly, "3");
}

int main(void)
{
    S(struct bits);
    B(struct bits, a, unsigned int);
    B(struct bits, b, unsigned int);
    B(struct bits, c, unsigned long long);
    B(struct bits, d, unsigned char);
    B(struct bits, e, int);
    B(struct bits, neg, signed char);
    B(struct bits, flag, _Bool);
    B(struct bits, col, enum color);
    B(struct bits, after0, unsigned short);
    B(struct bits, g, unsigned int);
    M(struct bits, plain);
    B(struct bits, top, unsigned long long);

    S(struct packed_bits);
    M(struct packed_bits, c);
    B(struct packed_bits, x, unsigned int);
    B(struct packed_bits, y, unsigned int);
    B(struct packed_bits, z, unsigned long long);
    M(struct packed_bits, s);

    S(struct inner);
    M(struct inner, i1);
    M(struct inner, i2);

    S(struct anon);
    M(struct anon, head);
    M(struct anon, u_long);
    M(struct anon, lo);
    M(struct anon, hi);
    B(struct anon, w0, unsigned short);
    B(struct anon, w1, unsigned short);
    M(struct anon, deep_c);
    M(struct anon, deep_s);
    M(struct anon, named);
    M(struct anon, refs);
    M(struct anon, in_place);
    M(struct anon, in_place.x);
    M(struct anon, in_place.y);
    M(struct anon, in_place.yf);
    M(struct anon, in_place.zz);
    M(struct anon, in_place.zz.z);
    A(struct anon, vlan, "3");
    M(struct anon, vlan[0].id);     /* pahole shows element 0's members */
    M(struct anon, vlan[0].proto);
    M(struct anon, ptr_to_anon);
    M(struct anon, mode);
    B(struct anon, kind, int);      /* an enum's storage unit: gcc makes it 4 bytes */
    M(struct anon, tail_i);
    A(struct anon, tail_c, "7");

    S(struct arrays);
    A(struct arrays, comm, "16");
    A(struct arrays, m, "2,3,4");
    A(struct arrays, zero, "0");
    A(struct arrays, argv, "4");
    M(struct arrays, ptr_to_arr);
    A(struct arrays, handlers, "3");
    A(struct arrays, names, "2");
    A(struct arrays, inners, "2,2");
    FLEX(struct arrays, tail);

    S(struct fnptrs);
    M(struct fnptrs, func);
    M(struct fnptrs, get);
    M(struct fnptrs, vararg);
    M(struct fnptrs, takes_fn);
    M(struct fnptrs, noargs);
    M(struct fnptrs, returns_fn);

    S(struct attrs);
    M(struct attrs, c);
    M(struct attrs, aligned16);
    M(struct attrs, cv);
    M(struct attrs, cp);
    M(struct attrs, pc);
    M(struct attrs, vp);
    A(struct attrs, packed_inner, "2");

    S(union u);
    A(union u, five, "5");
    M(union u, i);
    M(union u, s1);
    M(union u, s2);

    S(struct empty);

    S(struct has_empty);
    M(struct has_empty, before);
    M(struct has_empty, e);
    M(struct has_empty, after);

    S(struct big);
    A(struct big, pad, "60");
    M(struct big, across);
    A(struct big, more, "70");
    M(struct big, d);

    S(struct dup);
    M(struct dup, a);
    M(struct dup, b);
    check_dup();

    check_local();
    return 0;
}
