/* The DWARF reader's hot paths in C: the scanner (the same walk and the same records as
 * dbhive/dwarf/scan.py's UnitScan) and the interner's loop over a unit's records (the same
 * keys as dbhive/dwarf/keys.py's UnitInterner.unit / rid).  The Python code stays the
 * reference implementation and the fallback when this extension is not built
 * (DBHIVE_DWARF_PURE=1 forces it; tests/test_dwarf_cscan.py holds the two together).
 *
 * What it does, for one unit: walk the children of the unit DIE over the raw section
 * bytes, decode the attributes the type model needs, and store scan.py's record tuples in
 * a dict keyed by virtual DIE offset.  Everything file-specific that is rare or needs the
 * Python side's checks (string tables on a cache miss, DW_FORM_strx*, type signatures,
 * the supplementary file's strings) goes through the Python helpers given to configure().
 * Every read is bounds-checked; malformed input raises the FormError class given to
 * configure(), with the offset.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

/* ---- DWARF numbers ------------------------------------------------------------------ */
enum {
    F_addr = 0x01, F_block2 = 0x03, F_block4 = 0x04, F_data2 = 0x05, F_data4 = 0x06,
    F_data8 = 0x07, F_string = 0x08, F_block = 0x09, F_block1 = 0x0a, F_data1 = 0x0b,
    F_flag = 0x0c, F_sdata = 0x0d, F_strp = 0x0e, F_udata = 0x0f, F_ref_addr = 0x10,
    F_ref1 = 0x11, F_ref2 = 0x12, F_ref4 = 0x13, F_ref8 = 0x14, F_ref_udata = 0x15,
    F_indirect = 0x16, F_sec_offset = 0x17, F_exprloc = 0x18, F_flag_present = 0x19,
    F_strx = 0x1a, F_addrx = 0x1b, F_ref_sup4 = 0x1c, F_strp_sup = 0x1d, F_data16 = 0x1e,
    F_line_strp = 0x1f, F_ref_sig8 = 0x20, F_implicit_const = 0x21, F_loclistx = 0x22,
    F_rnglistx = 0x23, F_ref_sup8 = 0x24, F_strx1 = 0x25, F_strx2 = 0x26, F_strx3 = 0x27,
    F_strx4 = 0x28, F_addrx1 = 0x29, F_addrx2 = 0x2a, F_addrx3 = 0x2b, F_addrx4 = 0x2c,
    F_GNU_addr_index = 0x1f01, F_GNU_str_index = 0x1f02, F_GNU_ref_alt = 0x1f20,
    F_GNU_strp_alt = 0x1f21,
};

/* the attributes the records need: their slot numbers */
enum {
    A_NAME, A_BYTE_SIZE, A_TYPE, A_DECLARATION, A_ENCODING, A_SIBLING, A_SIGNATURE,
    A_DECL_FILE, A_DECL_LINE, A_DATA_MEMBER_LOCATION, A_DATA_BIT_OFFSET, A_BIT_OFFSET,
    A_BIT_SIZE, A_CONST_VALUE, A_UPPER_BOUND, A_COUNT, A_LOWER_BOUND, A_ABSTRACT_ORIGIN,
    A_EXTERNAL, A_LOW_PC, A_RANGES, A_INLINE, A_SPECIFICATION, A_ENTRY_PC, NSLOTS
};

static int slot_of_at(uint64_t at)
{
    switch (at) {
    case 0x03: return A_NAME;            case 0x0b: return A_BYTE_SIZE;
    case 0x49: return A_TYPE;            case 0x3c: return A_DECLARATION;
    case 0x3e: return A_ENCODING;        case 0x01: return A_SIBLING;
    case 0x69: return A_SIGNATURE;       case 0x3a: return A_DECL_FILE;
    case 0x3b: return A_DECL_LINE;       case 0x38: return A_DATA_MEMBER_LOCATION;
    case 0x6b: return A_DATA_BIT_OFFSET; case 0x0c: return A_BIT_OFFSET;
    case 0x0d: return A_BIT_SIZE;        case 0x1c: return A_CONST_VALUE;
    case 0x2f: return A_UPPER_BOUND;     case 0x37: return A_COUNT;
    case 0x22: return A_LOWER_BOUND;     case 0x31: return A_ABSTRACT_ORIGIN;
    case 0x3f: return A_EXTERNAL;        case 0x11: return A_LOW_PC;
    case 0x55: return A_RANGES;          case 0x20: return A_INLINE;
    case 0x47: return A_SPECIFICATION;   case 0x52: return A_ENTRY_PC;
    }
    return -1;
}

/* scan.py's actions and record kinds */
enum { S_SKIP, S_BASE, S_PTR, S_TYPEDEF, S_QUAL, S_STRUCT, S_ENUM, S_ARRAY, S_SUBRTYPE,
       S_UNSPEC, S_SUBPROGRAM, S_MEMBER, S_ENUMERATOR, S_SUBRANGE, S_PARAM, S_VARIADIC };
enum { R_BASE, R_UNSPEC, R_PTR, R_QUAL, R_TYPEDEF, R_STRUCT, R_ENUM, R_ARRAY, R_PROTO,
       R_SUB, R_ALIAS, R_KNOWN };
#define TAG_LEXICAL_BLOCK 0x0b
#define MAX_DEPTH 4000

/* ---- configuration (configure()) ---------------------------------------------------- */
static PyObject *FormError, *TagAction, *QualKind, *AggKind, *EnumKind;
static PyObject *H_strp, *H_line_strp, *H_alt_strp, *H_strx, *H_sig, *MsbTag, *HeaderSuffix;
static uint64_t AltBase;
static PyObject *RecKind[12];

/* ---- form classes (forms.py: _form_ok, fixed_size) ----------------------------------- */
static int is_str_form(uint64_t f)
{
    return f == F_string || f == F_strp || f == F_line_strp || f == F_strx || f == F_strx1 ||
           f == F_strx2 || f == F_strx3 || f == F_strx4 || f == F_GNU_strp_alt ||
           f == F_strp_sup || f == F_GNU_str_index;
}
static int is_ref_form(uint64_t f)
{
    return f == F_ref1 || f == F_ref2 || f == F_ref4 || f == F_ref8 || f == F_ref_udata ||
           f == F_ref_addr || f == F_ref_sig8 || f == F_GNU_ref_alt || f == F_ref_sup4 ||
           f == F_ref_sup8;
}
static int is_const_form(uint64_t f)
{
    return f == F_data1 || f == F_data2 || f == F_data4 || f == F_data8 || f == F_data16 ||
           f == F_sdata || f == F_udata || f == F_implicit_const || f == F_flag ||
           f == F_flag_present;
}
static int is_block_form(uint64_t f)
{
    return f == F_block1 || f == F_block2 || f == F_block4 || f == F_block || f == F_exprloc;
}
static int form_ok(int slot, uint64_t f)
{
    switch (slot) {
    case A_NAME:
        return is_str_form(f);
    case A_TYPE: case A_SIBLING: case A_ABSTRACT_ORIGIN: case A_SPECIFICATION:
    case A_SIGNATURE:
        return is_ref_form(f);
    case A_DATA_MEMBER_LOCATION:
        return is_const_form(f) || is_block_form(f);
    case A_LOW_PC: case A_RANGES: case A_ENTRY_PC: case A_INLINE:
        return 1;
    }
    return is_const_form(f) || f == F_sec_offset;
}
/* size of a fixed-size form, -1 if variable */
static int fixed_size(uint64_t f, int asz, int osz, int ver)
{
    switch (f) {
    case F_addr: return asz;
    case F_data1: case F_ref1: case F_flag: case F_strx1: case F_addrx1: return 1;
    case F_data2: case F_ref2: case F_strx2: case F_addrx2: return 2;
    case F_strx3: case F_addrx3: return 3;
    case F_data4: case F_ref4: case F_strx4: case F_addrx4: case F_ref_sup4: return 4;
    case F_data8: case F_ref8: case F_ref_sig8: case F_ref_sup8: return 8;
    case F_data16: return 16;
    case F_flag_present: case F_implicit_const: return 0;
    case F_strp: case F_line_strp: case F_sec_offset: case F_strp_sup: case F_GNU_ref_alt:
    case F_GNU_strp_alt: return osz;
    case F_ref_addr: return ver <= 2 ? asz : osz;
    }
    return -1;
}

/* ---- the abbreviation table of a unit: Table objects ---------------------------------- */
typedef struct {
    uint64_t form;
    int64_t ic;           /* implicit_const value */
    int slot;             /* A_* or -1: not needed */
    int size;             /* fixed size or -1 */
} Spec;

typedef struct {
    int present;
    uint64_t tag;
    int children;
    int action;
    int has_sib;          /* children and a DW_AT_sibling attribute */
    int fixed;            /* total size when every form is fixed, else -1 */
    int nspecs;
    Spec *specs;
} Abb;

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    Abb *abbs;
    Spec *pool;
    int asz, osz, ver;
} Table;

static void Table_dealloc(Table *t)
{
    PyMem_Free(t->abbs);
    PyMem_Free(t->pool);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyTypeObject TableType;

/* Table(abbrevs: {code: forms.Abbrev}, addr_size, off_size, version) */
static PyObject *Table_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *abbrevs;
    int asz, osz, ver;
    if (!PyArg_ParseTuple(args, "O!iii", &PyDict_Type, &abbrevs, &asz, &osz, &ver))
        return NULL;
    Table *t = (Table *)type->tp_alloc(type, 0);
    if (!t)
        return NULL;
    t->asz = asz; t->osz = osz; t->ver = ver;
    Py_ssize_t top = 0, total = 0, pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(abbrevs, &pos, &k, &v)) {
        Py_ssize_t c = PyLong_AsSsize_t(k);
        if (c == -1 && PyErr_Occurred())
            goto fail;
        if (c < 0 || c > 1000000) {
            PyErr_Format(FormError, "abbreviation code %zd is implausibly large", c);
            goto fail;
        }
        if (c > top)
            top = c;
        PyObject *specs = PyObject_GetAttrString(v, "specs");
        if (!specs)
            goto fail;
        total += PyTuple_Size(specs);
        Py_DECREF(specs);
    }
    t->n = top + 1;
    t->abbs = PyMem_Calloc(t->n, sizeof(Abb));
    t->pool = PyMem_Calloc(total ? total : 1, sizeof(Spec));
    if (!t->abbs || !t->pool) {
        PyErr_NoMemory();
        goto fail;
    }
    Py_ssize_t used = 0;
    pos = 0;
    while (PyDict_Next(abbrevs, &pos, &k, &v)) {
        Abb *a = &t->abbs[PyLong_AsSsize_t(k)];
        PyObject *tag = PyObject_GetAttrString(v, "tag");
        PyObject *ch = PyObject_GetAttrString(v, "children");
        PyObject *specs = PyObject_GetAttrString(v, "specs");
        if (!tag || !ch || !specs) {
            Py_XDECREF(tag); Py_XDECREF(ch); Py_XDECREF(specs);
            goto fail;
        }
        a->present = 1;
        a->tag = PyLong_AsUnsignedLongLongMask(tag);
        a->children = PyObject_IsTrue(ch);
        PyObject *act = PyDict_GetItemWithError(TagAction, tag);
        a->action = act ? (int)PyLong_AsLong(act) : S_SKIP;
        Py_DECREF(tag); Py_DECREF(ch);
        a->nspecs = (int)PyTuple_GET_SIZE(specs);
        a->specs = t->pool + used;
        used += a->nspecs;
        a->fixed = 0;
        a->has_sib = 0;
        for (int i = 0; i < a->nspecs; i++) {
            PyObject *sp = PyTuple_GET_ITEM(specs, i);
            uint64_t at = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(sp, 0));
            Spec *s = &a->specs[i];
            s->form = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(sp, 1));
            PyObject *ic = PyTuple_GET_ITEM(sp, 2);
            s->ic = ic == Py_None ? 0 : PyLong_AsLongLong(ic);
            if (s->ic == -1 && PyErr_Occurred()) {       /* an implicit const beyond 64 bits */
                Py_DECREF(specs);
                goto fail;
            }
            int slot = slot_of_at(at);
            s->slot = (slot >= 0 && form_ok(slot, s->form)) ? slot : -1;
            s->size = fixed_size(s->form, asz, osz, ver);
            if (at == 0x01 && a->children)
                a->has_sib = 1;
            if (s->size < 0)
                a->fixed = -1;
            else if (a->fixed >= 0)
                a->fixed += s->size;
        }
        Py_DECREF(specs);
    }
    return (PyObject *)t;
fail:
    Py_DECREF(t);
    return NULL;
}

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dbhive.dwarf._cscan.Table",
    .tp_basicsize = sizeof(Table),
    .tp_dealloc = (destructor)Table_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Table_new,
    .tp_doc = "A unit's abbreviation table prepared for scanning.",
};

/* ---- one scan ----------------------------------------------------------------------- */
enum { V_U, V_S, V_TRUE, V_BIG, V_BLOCK, V_STR };   /* decoded value kinds */

typedef struct {
    int kind;
    uint64_t form;
    uint64_t u;            /* V_U value, V_S (as int64), V_STR raw (offset / index) */
    const uint8_t *p;      /* V_BIG, V_BLOCK, inline V_STR */
    Py_ssize_t n;
} Val;

typedef struct {
    const uint8_t *d;
    Py_ssize_t size;       /* of the section buffer */
    Py_ssize_t end;        /* of the unit */
    uint64_t space, base;
    Table *t;
    PyObject *cu, *records, *known, *files_fn, *files, *headers, *str_cache;
    const uint8_t *str;      /* the unit's .debug_str (strp without a Python call) */
    Py_ssize_t str_len;
    int depth;
    uint32_t have;         /* bit per slot */
    Val v[NSLOTS];
} Scan;

static PyObject *form_error(const char *msg, Py_ssize_t off)
{
    PyObject *e = PyObject_CallFunction(FormError, "sn", msg, off);
    if (e) {
        PyErr_SetObject(FormError, e);
        Py_DECREF(e);
    }
    return NULL;
}
#define TRUNC(o) (form_error("DIE data runs past the end of its section", (o)), -1)

static Py_ssize_t read_uleb(Scan *s, Py_ssize_t o, uint64_t *out)
{
    uint64_t v = 0;
    int shift = 0;
    for (;;) {
        if (o >= s->size)
            return TRUNC(o);
        uint8_t b = s->d[o++];
        if (shift < 64)
            v |= (uint64_t)(b & 0x7f) << shift;
        else if (b & 0x7f) {
            form_error("LEB128 number wider than 64 bits", o);
            return -1;
        }
        shift += 7;
        if (!(b & 0x80))
            break;
    }
    *out = v;
    return o;
}

static Py_ssize_t read_sleb(Scan *s, Py_ssize_t o, int64_t *out)
{
    uint64_t v = 0;
    int shift = 0;
    uint8_t b;
    do {
        if (o >= s->size)
            return TRUNC(o);
        b = s->d[o++];
        if (shift < 64)
            v |= (uint64_t)(b & 0x7f) << shift;
        else if ((b & 0x7f) != 0 && (b & 0x7f) != 0x7f) {
            form_error("LEB128 number wider than 64 bits", o);
            return -1;
        }
        shift += 7;
    } while (b & 0x80);
    if (shift < 64 && (b & 0x40))
        v |= ~(uint64_t)0 << shift;
    *out = (int64_t)v;
    return o;
}

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Decode the attributes of a DIE of abbreviation `a` at `o` into s->v / s->have;
 * returns the offset after them, -1 on error. */
static Py_ssize_t decode(Scan *s, Abb *a, Py_ssize_t o)
{
    s->have = 0;
    const uint8_t *d = s->d;
    for (int i = 0; i < a->nspecs; i++) {
        Spec *sp = &a->specs[i];
        uint64_t f = sp->form;
        Val *v = sp->slot >= 0 ? &s->v[sp->slot] : NULL;
        if (sp->size >= 0) {
            if (o + sp->size > s->size)
                return TRUNC(o);
            if (v) {
                v->form = f;
                if (f == F_flag_present) {
                    v->kind = V_TRUE;
                } else if (f == F_implicit_const) {
                    v->kind = V_S;
                    v->u = (uint64_t)sp->ic;
                } else if (f == F_data16) {
                    v->kind = V_BIG;
                    v->p = d + o;
                    v->n = 16;
                } else {
                    v->kind = is_str_form(f) ? V_STR : V_U;
                    v->u = le(d + o, sp->size);
                }
                s->have |= 1u << sp->slot;
            }
            o += sp->size;
            continue;
        }
        switch (f) {
        case F_udata: case F_ref_udata: case F_strx: case F_addrx: case F_loclistx:
        case F_rnglistx: case F_GNU_addr_index: case F_GNU_str_index: {
            uint64_t x;
            if ((o = read_uleb(s, o, &x)) < 0)
                return -1;
            if (v) {
                v->form = f;
                v->kind = is_str_form(f) ? V_STR : V_U;
                v->u = x;
                s->have |= 1u << sp->slot;
            }
            break;
        }
        case F_sdata: {
            int64_t x;
            if ((o = read_sleb(s, o, &x)) < 0)
                return -1;
            if (v) {
                v->form = f;
                v->kind = V_S;
                v->u = (uint64_t)x;
                s->have |= 1u << sp->slot;
            }
            break;
        }
        case F_string: {
            const uint8_t *z = o < s->size ? memchr(d + o, 0, s->size - o) : NULL;
            if (!z)
                return TRUNC(o);
            if (v) {
                v->form = f;
                v->kind = V_STR;
                v->p = d + o;
                v->n = z - (d + o);
                s->have |= 1u << sp->slot;
            }
            o = z - d + 1;
            break;
        }
        case F_block1: case F_block2: case F_block4: case F_block: case F_exprloc: {
            uint64_t n;
            if (f == F_block1 || f == F_block2 || f == F_block4) {
                int w = f == F_block1 ? 1 : f == F_block2 ? 2 : 4;
                if (o + w > s->size)
                    return TRUNC(o);
                n = le(d + o, w);
                o += w;
            } else if ((o = read_uleb(s, o, &n)) < 0) {
                return -1;
            }
            if (n > (uint64_t)(s->size - o))
                return TRUNC(o);
            if (v) {
                v->form = f;
                v->kind = V_BLOCK;
                v->p = d + o;
                v->n = (Py_ssize_t)n;
                s->have |= 1u << sp->slot;
            }
            o += (Py_ssize_t)n;
            break;
        }
        case F_indirect:
            form_error("DW_FORM_indirect is not supported", o);
            return -1;
        default: {
            char msg[64];
            snprintf(msg, sizeof msg, "unknown attribute form 0x%llx", (unsigned long long)f);
            form_error(msg, o);
            return -1;
        }
        }
    }
    return o;
}

#define HAS(s, a) ((s)->have & (1u << (a)))

/* the Python value of a non-string, non-reference attribute (None when absent) */
static PyObject *num(Scan *s, int a)
{
    if (!HAS(s, a))
        Py_RETURN_NONE;
    Val *v = &s->v[a];
    switch (v->kind) {
    case V_U: return PyLong_FromUnsignedLongLong(v->u);
    case V_S: return PyLong_FromLongLong((int64_t)v->u);
    case V_TRUE: Py_RETURN_TRUE;
    case V_BIG: return _PyLong_FromByteArray(v->p, 16, 1, 0);
    case V_BLOCK: return PyBytes_FromStringAndSize((const char *)v->p, v->n);
    }
    Py_RETURN_NONE;                     /* a string form where a number was expected */
}

/* truthiness of a flag-like attribute */
static int flag(Scan *s, int a)
{
    if (!HAS(s, a))
        return 0;
    Val *v = &s->v[a];
    switch (v->kind) {
    case V_U: case V_S: return v->u != 0;
    case V_TRUE: return 1;
    case V_BIG: for (int i = 0; i < 16; i++) if (v->p[i]) return 1; return 0;
    case V_BLOCK: return v->n != 0;
    }
    return 0;
}

static PyObject *call_helper(PyObject *fn, Scan *s, uint64_t x)
{
    return PyObject_CallFunction(fn, "OK", s->cu, (unsigned long long)x);
}

/* the name (a str) or None */
static PyObject *str(Scan *s, int a)
{
    if (!HAS(s, a))
        Py_RETURN_NONE;
    Val *v = &s->v[a];
    switch (v->form) {
    case F_string:
        return PyUnicode_DecodeUTF8((const char *)v->p, v->n, "replace");
    case F_strp: {
        PyObject *key = PyLong_FromUnsignedLongLong(v->u);
        if (!key)
            return NULL;
        PyObject *r = PyDict_GetItemWithError(s->str_cache, key);
        Py_DECREF(key);
        if (r) {
            Py_INCREF(r);
            return r;
        }
        if (PyErr_Occurred())
            return NULL;
        /* a valid offset: decode and cache here; anything else: the Python helper, which
         * raises the error (reader.StrTab.get) */
        if (s->str && v->u < (uint64_t)s->str_len) {
            const uint8_t *z = memchr(s->str + v->u, 0, s->str_len - v->u);
            if (z) {
                PyObject *k2 = PyLong_FromUnsignedLongLong(v->u);
                PyObject *val = k2 ? PyUnicode_DecodeUTF8((const char *)s->str + v->u,
                                                          z - (s->str + v->u), "replace")
                                   : NULL;
                if (!val || PyDict_SetItem(s->str_cache, k2, val) < 0) {
                    Py_XDECREF(k2);
                    Py_XDECREF(val);
                    return NULL;
                }
                Py_DECREF(k2);
                return val;
            }
        }
        return call_helper(H_strp, s, v->u);
    }
    case F_line_strp:
        return call_helper(H_line_strp, s, v->u);
    case F_strx: case F_strx1: case F_strx2: case F_strx4: case F_GNU_str_index:
    case F_strx3:
        return call_helper(H_strx, s, v->u);
    case F_GNU_strp_alt: case F_strp_sup:
        return call_helper(H_alt_strp, s, v->u);
    }
    Py_RETURN_NONE;
}

/* a reference as a virtual DIE offset: 0 and *ok = 0 when absent; -1 on error */
static int ref(Scan *s, int a, uint64_t *out)
{
    if (!HAS(s, a))
        return 0;
    Val *v = &s->v[a];
    switch (v->form) {
    case F_ref1: case F_ref2: case F_ref4: case F_ref8: case F_ref_udata:
        *out = v->u + s->base;
        return 1;
    case F_ref_addr:
        *out = v->u + s->space;
        return 1;
    case F_GNU_ref_alt: case F_ref_sup4: case F_ref_sup8:
        *out = v->u + AltBase;
        return 1;
    case F_ref_sig8: {
        PyObject *r = call_helper(H_sig, s, v->u);
        if (!r)
            return -1;
        *out = PyLong_AsUnsignedLongLong(r);
        Py_DECREF(r);
        if (PyErr_Occurred())
            return -1;
        return 1;
    }
    }
    return 0;
}

static PyObject *ref_obj(Scan *s, int a)
{
    uint64_t x;
    int r = ref(s, a, &x);
    if (r < 0)
        return NULL;
    if (r == 0)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(x);
}

static int store(Scan *s, Py_ssize_t off, PyObject *rec)
{
    if (!rec)
        return -1;
    PyObject *key = PyLong_FromUnsignedLongLong((uint64_t)off + s->space);
    if (!key) {
        Py_DECREF(rec);
        return -1;
    }
    int r = PyDict_SetItem(s->records, key, rec);
    Py_DECREF(key);
    Py_DECREF(rec);
    return r;
}

static Abb *abb_at(Scan *s, uint64_t code, Py_ssize_t where)
{
    if (code < (uint64_t)s->t->n && s->t->abbs[code].present)
        return &s->t->abbs[code];
    char msg[96];
    snprintf(msg, sizeof msg, "DIE uses abbreviation code %llu, absent from its table",
             (unsigned long long)code);
    form_error(msg, where);
    return NULL;
}

static Py_ssize_t read_code(Scan *s, Py_ssize_t o, uint64_t *code)
{
    if (o < s->size && s->d[o] < 0x80) {
        *code = s->d[o];
        return o + 1;
    }
    return read_uleb(s, o, code);
}

static Py_ssize_t skip_children(Scan *s, Py_ssize_t o);

/* the offset after the DIE (and subtree) whose attributes start at `o` */
static Py_ssize_t skip(Scan *s, Abb *a, Py_ssize_t o)
{
    if (a->has_sib) {
        if (decode(s, a, o) < 0)
            return -1;
        uint64_t sib;
        int r = ref(s, A_SIBLING, &sib);
        if (r < 0)
            return -1;
        if (r == 0)
            return form_error("DW_AT_sibling of a form that is not a reference", o), -1;
        uint64_t x = sib - s->space;
        if (!((uint64_t)o < x && x <= (uint64_t)s->end)) {
            char msg[64];
            snprintf(msg, sizeof msg, "DW_AT_sibling 0x%llx outside its unit",
                     (unsigned long long)x);
            form_error(msg, o);
            return -1;
        }
        return (Py_ssize_t)x;
    }
    if (a->fixed >= 0)
        o += a->fixed;
    else if ((o = decode(s, a, o)) < 0)
        return -1;
    if (a->children)
        o = skip_children(s, o);
    return o;
}

static Py_ssize_t skip_children(Scan *s, Py_ssize_t o)
{
    if (++s->depth > MAX_DEPTH)
        return form_error("DIE tree nested too deeply", o), -1;
    for (;;) {
        if (o >= s->end)
            return form_error("DIE children run past the end of their unit", o), -1;
        uint64_t code;
        Py_ssize_t at = o;
        if ((o = read_code(s, o, &code)) < 0)
            return -1;
        if (code == 0)
            break;
        Abb *a = abb_at(s, code, at);
        if (!a || (o = skip(s, a, o)) < 0)
            return -1;
    }
    s->depth--;
    return o;
}

static Py_ssize_t handle(Scan *s, Abb *a, Py_ssize_t o, Py_ssize_t off);

static int is_type_action(int a)
{
    return a == S_BASE || a == S_PTR || a == S_TYPEDEF || a == S_QUAL || a == S_STRUCT ||
           a == S_ENUM || a == S_ARRAY || a == S_SUBRTYPE || a == S_UNSPEC;
}

static int append(PyObject *list, PyObject *x)
{
    if (!x)
        return -1;
    int r = PyList_Append(list, x);
    Py_DECREF(x);
    return r;
}

/* forms.expr_offset: a constant DW_AT_data_member_location expression, or None */
static PyObject *expr_offset(const uint8_t *p, Py_ssize_t n)
{
    int64_t stack[64];
    int sp = 0;
    stack[sp++] = 0;
    Py_ssize_t o = 0;
    while (o < n) {
        uint8_t op = p[o++];
        uint64_t x = 0;
        if (op == 0x23 || op == 0x10) {                  /* plus_uconst, constu */
            int shift = 0;
            uint8_t b;
            do {
                if (o >= n)
                    Py_RETURN_NONE;
                b = p[o++];
                if (shift < 64)
                    x |= (uint64_t)(b & 0x7f) << shift;
                shift += 7;
            } while (b & 0x80);
            if (op == 0x23)
                stack[sp - 1] += (int64_t)x;
            else if (sp < 64)
                stack[sp++] = (int64_t)x;
            else
                Py_RETURN_NONE;
        } else if (op == 0x11) {                         /* consts */
            int shift = 0;
            uint8_t b;
            do {
                if (o >= n)
                    Py_RETURN_NONE;
                b = p[o++];
                if (shift < 64)
                    x |= (uint64_t)(b & 0x7f) << shift;
                shift += 7;
            } while (b & 0x80);
            if (shift < 64 && (b & 0x40))
                x |= ~(uint64_t)0 << shift;
            if (sp >= 64)
                Py_RETURN_NONE;
            stack[sp++] = (int64_t)x;
        } else if (op >= 0x30 && op <= 0x4f) {           /* lit0..31 */
            if (sp >= 64)
                Py_RETURN_NONE;
            stack[sp++] = op - 0x30;
        } else if (op == 0x08 || op == 0x0a || op == 0x0c || op == 0x0e) {
            int w = op == 0x08 ? 1 : op == 0x0a ? 2 : op == 0x0c ? 4 : 8;
            if (o + w > n || sp >= 64)
                Py_RETURN_NONE;
            stack[sp++] = (int64_t)le(p + o, w);
            o += w;
        } else if (op == 0x22) {                         /* plus */
            if (sp < 2)
                Py_RETURN_NONE;
            sp--;
            stack[sp - 1] += stack[sp];
        } else {
            Py_RETURN_NONE;
        }
    }
    return PyLong_FromLongLong(stack[sp - 1]);
}

/* an attribute as a plain int for arithmetic: 1 if it is one, 0 if not */
static int as_i64(Scan *s, int a, int64_t *out)
{
    Val *v = &s->v[a];
    if (v->kind == V_U || v->kind == V_S) {
        *out = (int64_t)v->u;
        return 1;
    }
    if (v->kind == V_TRUE) {
        *out = 1;
        return 1;
    }
    return 0;
}

/* forms.FINISH_MEMBER: append name, type, bit offset, bit size */
static int member(Scan *s, PyObject *out)
{
    if (append(out, str(s, A_NAME)) < 0 || append(out, ref_obj(s, A_TYPE)) < 0)
        return -1;
    PyObject *base;
    if (HAS(s, A_DATA_MEMBER_LOCATION)) {
        Val *v = &s->v[A_DATA_MEMBER_LOCATION];
        PyObject *loc = v->kind == V_BLOCK ? expr_offset(v->p, v->n)
                                           : num(s, A_DATA_MEMBER_LOCATION);
        if (!loc)
            return -1;
        if (PyLong_CheckExact(loc)) {
            PyObject *eight = PyLong_FromLong(8);
            base = PyNumber_Multiply(loc, eight);
            Py_DECREF(eight);
        } else {
            base = PyLong_FromLong(0);
        }
        Py_DECREF(loc);
    } else {
        base = PyLong_FromLong(0);
    }
    if (!base)
        return -1;
    PyObject *bit;
    if (HAS(s, A_DATA_BIT_OFFSET)) {
        bit = num(s, A_DATA_BIT_OFFSET);
    } else if (HAS(s, A_BIT_OFFSET) && HAS(s, A_BIT_SIZE)) {
        int64_t b, bo, bs, bsz;
        if (!PyLong_CheckExact(base) || !as_i64(s, A_BIT_OFFSET, &bo) ||
                !as_i64(s, A_BIT_SIZE, &bs)) {
            Py_DECREF(base);
            return form_error("member bit offset of an unexpected form", 0), -1;
        }
        if (HAS(s, A_BYTE_SIZE)) {
            if (!as_i64(s, A_BYTE_SIZE, &bsz)) {
                Py_DECREF(base);
                return form_error("member byte size of an unexpected form", 0), -1;
            }
            b = PyLong_AsLongLong(base);
            bit = PyLong_FromLongLong(b + bsz * 8 - bo - bs);
        } else {
            PyObject *bo_obj = num(s, A_BIT_OFFSET);
            bit = bo_obj ? PyTuple_Pack(3, MsbTag, base, bo_obj) : NULL;
            Py_XDECREF(bo_obj);
        }
    } else {
        bit = base;
        Py_INCREF(bit);
    }
    Py_DECREF(base);
    if (append(out, bit) < 0)
        return -1;
    return append(out, HAS(s, A_BIT_SIZE) ? num(s, A_BIT_SIZE) : PyLong_FromLong(0));
}

static int enumerator(Scan *s, PyObject *out)
{
    if (append(out, str(s, A_NAME)) < 0)
        return -1;
    PyObject *val = num(s, A_CONST_VALUE);
    if (val && !PyLong_CheckExact(val)) {
        Py_DECREF(val);
        val = PyLong_FromLong(0);
    }
    return append(out, val);
}

static int param(Scan *s, PyObject *out)
{
    if (append(out, str(s, A_NAME)) < 0 || append(out, ref_obj(s, A_TYPE)) < 0)
        return -1;
    return append(out, ref_obj(s, A_ABSTRACT_ORIGIN));
}

/* children of a struct/union (S_MEMBER) or enum (S_ENUMERATOR): the flat list in *out */
static Py_ssize_t body(Scan *s, Py_ssize_t o, int action, const char *what, PyObject **out)
{
    PyObject *list = PyList_New(0);
    if (!list)
        return -1;
    if (++s->depth > MAX_DEPTH)
        goto nested;
    for (;;) {
        if (o >= s->end) {
            char msg[64];
            snprintf(msg, sizeof msg, "%s run past the end of their unit", what);
            form_error(msg, o);
            goto fail;
        }
        Py_ssize_t doff = o;
        uint64_t code;
        if ((o = read_code(s, o, &code)) < 0)
            goto fail;
        if (code == 0)
            break;
        Abb *q = abb_at(s, code, doff);
        if (!q)
            goto fail;
        if (q->action == action) {
            if ((o = decode(s, q, o)) < 0)
                goto fail;
            if ((action == S_MEMBER ? member(s, list) : enumerator(s, list)) < 0)
                goto fail;
            if (q->children && (o = skip_children(s, o)) < 0)
                goto fail;
        } else if (is_type_action(q->action)) {
            if ((o = handle(s, q, o, doff)) < 0)
                goto fail;
        } else if ((o = skip(s, q, o)) < 0) {
            goto fail;
        }
    }
    s->depth--;
    *out = list;
    return o;
nested:
    form_error("DIE tree nested too deeply", o);
fail:
    Py_DECREF(list);
    return -1;
}

static Py_ssize_t fbody(Scan *s, Py_ssize_t o);

/* direct formal parameters; with `is_body`, the rest of a function's children go to fbody */
static Py_ssize_t params(Scan *s, Py_ssize_t o, int is_body, PyObject **out, int *variadic)
{
    PyObject *list = PyList_New(0);
    if (!list)
        return -1;
    *variadic = 0;
    for (;;) {
        if (o >= s->end) {
            form_error("parameters run past the end of their unit", o);
            goto fail;
        }
        Py_ssize_t doff = o;
        uint64_t code;
        if ((o = read_code(s, o, &code)) < 0)
            goto fail;
        if (code == 0)
            break;
        Abb *q = abb_at(s, code, doff);
        if (!q)
            goto fail;
        if (q->action == S_PARAM) {
            if ((o = decode(s, q, o)) < 0 || param(s, list) < 0)
                goto fail;
            if (q->children && (o = skip_children(s, o)) < 0)
                goto fail;
        } else if (q->action == S_VARIADIC) {
            *variadic = 1;
            if ((o = skip(s, q, o)) < 0)
                goto fail;
        } else if (is_body) {
            if ((o = fbody(s, doff)) < 0)
                goto fail;
            break;
        } else if ((o = skip(s, q, o)) < 0) {
            goto fail;
        }
    }
    *out = list;
    return o;
fail:
    Py_DECREF(list);
    return -1;
}

/* a function's or lexical block's children after its parameters */
static Py_ssize_t fbody(Scan *s, Py_ssize_t o)
{
    if (++s->depth > MAX_DEPTH)
        return form_error("DIE tree nested too deeply", o), -1;
    for (;;) {
        if (o >= s->end)
            return form_error("function body runs past the end of its unit", o), -1;
        Py_ssize_t doff = o;
        uint64_t code;
        if ((o = read_code(s, o, &code)) < 0)
            return -1;
        if (code == 0)
            break;
        Abb *q = abb_at(s, code, doff);
        if (!q)
            return -1;
        if (q->action == S_SKIP) {
            if (q->tag == TAG_LEXICAL_BLOCK && q->children) {
                if (q->fixed >= 0)
                    o += q->fixed;
                else if ((o = decode(s, q, o)) < 0)
                    return -1;
                if ((o = fbody(s, o)) < 0)
                    return -1;
            } else if ((o = skip(s, q, o)) < 0) {
                return -1;
            }
        } else if (is_type_action(q->action)) {
            if ((o = handle(s, q, o, doff)) < 0)
                return -1;
        } else if ((o = skip(s, q, o)) < 0) {
            return -1;
        }
    }
    s->depth--;
    return o;
}

/* scan.UnitScan.skey: (kind, name, size, header file, line, subtree length) or NULL
 * (no error) when the definition has no identity */
static PyObject *skey(Scan *s, PyObject *kind, PyObject *name, PyObject *size,
                      Py_ssize_t length, int *err)
{
    *err = 0;
    if (!s->files) {           /* the unit's decl_file table (units.FileNames, lazy) */
        Py_ssize_t n;
        if (!(s->files = PyObject_CallNoArgs(s->files_fn)) ||
                (n = PyObject_Length(s->files)) < 0 || !(s->headers = PyList_New(n))) {
            *err = 1;
            return NULL;
        }
        for (Py_ssize_t j = 0; j < n; j++)      /* NotImplemented: not looked at yet */
            PyList_SET_ITEM(s->headers, j, Py_NewRef(Py_NotImplemented));
    }
    Val *v = &s->v[A_DECL_FILE];
    if (!(v->kind == V_U || v->kind == V_S))
        return NULL;
    int64_t i = (int64_t)v->u;
    if (v->kind == V_U && v->u > (uint64_t)INT64_MAX)
        return NULL;
    if (i < 0 || i >= PyList_GET_SIZE(s->headers))
        return NULL;
    PyObject *f = PyList_GET_ITEM(s->headers, i);
    if (f == Py_NotImplemented) {      /* only headers count (scan.UnitScan.skey) */
        f = PySequence_GetItem(s->files, i);
        if (!f) {
            *err = 1;
            return NULL;
        }
        if (!PyUnicode_Check(f) || PyUnicode_GET_LENGTH(f) < 2 ||
                PyUnicode_Tailmatch(f, HeaderSuffix, 0, PY_SSIZE_T_MAX, 1) != 1) {
            PyErr_Clear();
            Py_DECREF(f);
            f = Py_NewRef(Py_None);
        }
        PyList_SetItem(s->headers, i, f);
    }
    if (f == Py_None)
        return NULL;
    PyObject *line = num(s, A_DECL_LINE);
    PyObject *len = PyLong_FromSsize_t(length);
    PyObject *k = (line && len) ? PyTuple_Pack(6, kind, name, size, f, line, len) : NULL;
    Py_XDECREF(line);
    Py_XDECREF(len);
    if (!k)
        *err = 1;
    return k;
}

/* struct/union/enum: the definition's record, or R_KNOWN when seen in an earlier unit */
static Py_ssize_t aggregate(Scan *s, Abb *a, Py_ssize_t o, Py_ssize_t off, int is_enum)
{
    if ((o = decode(s, a, o)) < 0)
        return -1;
    PyObject *kind, *name = NULL, *size = NULL, *key = NULL, *typ = NULL, *list = NULL;
    int decl = flag(s, A_DECLARATION);
    int has_sig = HAS(s, A_SIGNATURE) != 0;
    uint64_t sig = 0, sib = 0;
    int has_sib;
    if (is_enum) {
        kind = EnumKind;
    } else {
        PyObject *t = PyLong_FromUnsignedLongLong(a->tag);
        kind = t ? PyDict_GetItemWithError(AggKind, t) : NULL;
        Py_XDECREF(t);
        if (!kind) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_KeyError, "aggregate tag");
            return -1;
        }
    }
    if (has_sig && ref(s, A_SIGNATURE, &sig) < 0)
        return -1;
    if ((has_sib = ref(s, A_SIBLING, &sib)) < 0)
        return -1;
    if (!(name = str(s, A_NAME)) || !(size = num(s, A_BYTE_SIZE)))
        goto fail;
    if (is_enum && !(typ = ref_obj(s, A_TYPE)))
        goto fail;
    if (s->known && name != Py_None && HAS(s, A_DECL_FILE) && !decl && !has_sig) {
        Py_ssize_t after = has_sib ? (Py_ssize_t)(sib - s->space) : -1;
        if (has_sib && o < after && after <= s->end) {
            int err;
            key = skey(s, kind, name, size, after - o, &err);
            if (err)
                goto fail;
            if (key) {
                PyObject *tid = PyDict_GetItemWithError(s->known, key);
                if (tid) {                          /* seen in an earlier unit: jump over */
                    PyObject *rec = PyTuple_Pack(5, RecKind[R_KNOWN], tid, kind, name, size);
                    Py_DECREF(key);
                    Py_DECREF(name);
                    Py_DECREF(size);
                    Py_XDECREF(typ);
                    if (store(s, off, rec) < 0)
                        return -1;
                    return after;
                }
                if (PyErr_Occurred())
                    goto fail;
            }
        }
    }
    if (a->children) {
        Py_ssize_t before = PyDict_GET_SIZE(s->records);
        o = is_enum ? body(s, o, S_ENUMERATOR, "enumerators", &list)
                    : body(s, o, S_MEMBER, "struct members", &list);
        if (o < 0)
            goto fail;
        if (PyDict_GET_SIZE(s->records) != before)
            Py_CLEAR(key);              /* nested type DIEs: other DIEs may refer to them */
    } else if (!(list = PyList_New(0))) {
        goto fail;
    }
    PyObject *rec;
    PyObject *k = key ? key : Py_None;
    if (has_sig) {
        PyObject *so = PyLong_FromUnsignedLongLong(sig);
        rec = so ? PyTuple_Pack(2, RecKind[R_ALIAS], so) : NULL;
        Py_XDECREF(so);
    } else if (is_enum) {
        rec = PyTuple_Pack(7, RecKind[R_ENUM], name, size, decl ? Py_True : Py_False, list,
                           typ, k);
    } else {
        rec = PyTuple_Pack(7, RecKind[R_STRUCT], kind, name, size, decl ? Py_True : Py_False,
                           list, k);
    }
    Py_XDECREF(key);
    Py_DECREF(name);
    Py_DECREF(size);
    Py_XDECREF(typ);
    Py_DECREF(list);
    if (store(s, off, rec) < 0)
        return -1;
    return o;
fail:
    Py_XDECREF(key);
    Py_XDECREF(name);
    Py_XDECREF(size);
    Py_XDECREF(typ);
    Py_XDECREF(list);
    return -1;
}

static Py_ssize_t array(Scan *s, Abb *a, Py_ssize_t o, Py_ssize_t off)
{
    if ((o = decode(s, a, o)) < 0)
        return -1;
    PyObject *typ = ref_obj(s, A_TYPE);
    PyObject *dims = PyList_New(0);
    if (!typ || !dims)
        goto fail;
    if (a->children) {
        for (;;) {
            if (o >= s->end) {
                form_error("array subranges run past the end of their unit", o);
                goto fail;
            }
            uint64_t code;
            Py_ssize_t at = o;
            if ((o = read_code(s, o, &code)) < 0)
                goto fail;
            if (code == 0)
                break;
            Abb *q = abb_at(s, code, at);
            if (!q)
                goto fail;
            if (q->action == S_SUBRANGE) {
                if ((o = decode(s, q, o)) < 0)
                    goto fail;
                /* scan.UnitScan._array: count, else upper - lower + 1 */
                PyObject *n;
                int64_t x;
                Val *cv = &s->v[A_COUNT], *uv = &s->v[A_UPPER_BOUND];
                if (HAS(s, A_COUNT) && (cv->kind == V_U || cv->kind == V_S ||
                                        cv->kind == V_BIG)) {
                    n = num(s, A_COUNT);
                } else if (HAS(s, A_UPPER_BOUND) && (uv->kind == V_U || uv->kind == V_S ||
                                                     uv->kind == V_BIG)) {
                    PyObject *ub = num(s, A_UPPER_BOUND);
                    if (!ub)
                        goto fail;
                    if (uv->kind == V_U && uv->u >= (1ull << 63)) {
                        x = (int64_t)uv->u;                   /* ub -= 1 << 64 */
                        Py_DECREF(ub);
                        ub = PyLong_FromLongLong(x);
                    } else if (uv->kind == V_U && uv->u == 0xFFFFFFFFull) {
                        Py_DECREF(ub);
                        ub = PyLong_FromLong(-1);
                    }
                    Val *lv = &s->v[A_LOWER_BOUND];
                    PyObject *lb = (HAS(s, A_LOWER_BOUND) && (lv->kind == V_U ||
                                    lv->kind == V_S || lv->kind == V_BIG))
                                   ? num(s, A_LOWER_BOUND) : PyLong_FromLong(0);
                    PyObject *one = PyLong_FromLong(1);
                    PyObject *t = (ub && lb) ? PyNumber_Subtract(ub, lb) : NULL;
                    n = (t && one) ? PyNumber_Add(t, one) : NULL;
                    Py_XDECREF(ub); Py_XDECREF(lb); Py_XDECREF(one); Py_XDECREF(t);
                } else {
                    n = PyLong_FromLong(0);
                }
                if (!n)
                    goto fail;
                int pos = PyObject_RichCompareBool(n, Py_False, Py_GT);  /* n > 0 */
                if (pos < 0) {
                    Py_DECREF(n);
                    goto fail;
                }
                if (!pos) {
                    Py_DECREF(n);
                    n = PyLong_FromLong(0);
                }
                if (append(dims, n) < 0)
                    goto fail;
                if (q->children && (o = skip_children(s, o)) < 0)
                    goto fail;
            } else if ((o = skip(s, q, o)) < 0) {
                goto fail;
            }
        }
    }
    if (PyList_GET_SIZE(dims) == 0 && append(dims, PyLong_FromLong(0)) < 0)
        goto fail;
    PyObject *rec = PyTuple_Pack(3, RecKind[R_ARRAY], typ, dims);
    Py_DECREF(typ);
    Py_DECREF(dims);
    return store(s, off, rec) < 0 ? -1 : o;
fail:
    Py_XDECREF(typ);
    Py_XDECREF(dims);
    return -1;
}

static Py_ssize_t subrtype(Scan *s, Abb *a, Py_ssize_t o, Py_ssize_t off)
{
    if ((o = decode(s, a, o)) < 0)
        return -1;
    PyObject *typ = ref_obj(s, A_TYPE), *list = NULL;
    int variadic = 0;
    if (!typ)
        return -1;
    if (a->children)
        o = params(s, o, 0, &list, &variadic);
    else
        list = PyList_New(0);
    if (o < 0 || !list) {
        Py_DECREF(typ);
        Py_XDECREF(list);
        return -1;
    }
    PyObject *rec = PyTuple_Pack(4, RecKind[R_PROTO], typ, list,
                                 variadic ? Py_True : Py_False);
    Py_DECREF(typ);
    Py_DECREF(list);
    return store(s, off, rec) < 0 ? -1 : o;
}

static Py_ssize_t subprogram(Scan *s, Abb *a, Py_ssize_t o, Py_ssize_t off)
{
    if ((o = decode(s, a, o)) < 0)
        return -1;
    PyObject *name = str(s, A_NAME), *typ = NULL, *dfile = NULL, *dline = NULL;
    PyObject *origin = NULL, *list = NULL, *rec = NULL;
    int ext = flag(s, A_EXTERNAL), decl = flag(s, A_DECLARATION), variadic = 0;
    /* 2: machine code; 1: a definition without code of its own; 0: abstract inline */
    int has_code = (HAS(s, A_LOW_PC) && s->v[A_LOW_PC].kind != V_STR) ||
                   (HAS(s, A_RANGES) && s->v[A_RANGES].kind != V_STR) ||
                   (HAS(s, A_ENTRY_PC) && s->v[A_ENTRY_PC].kind != V_STR) ? 2
                   : (HAS(s, A_INLINE) && s->v[A_INLINE].kind != V_STR) ? 0 : 1;
    if (!name || !(typ = ref_obj(s, A_TYPE)) || !(dfile = num(s, A_DECL_FILE)) ||
            !(dline = num(s, A_DECL_LINE)))
        goto done;
    origin = ref_obj(s, A_ABSTRACT_ORIGIN);
    if (origin == Py_None) {
        Py_DECREF(origin);
        origin = ref_obj(s, A_SPECIFICATION);
    }
    if (!origin)
        goto done;
    if (a->children)
        o = params(s, o, 1, &list, &variadic);
    else
        list = PyList_New(0);
    if (o < 0 || !list)
        goto done;
    PyObject *hc = PyLong_FromLong(has_code);
    rec = hc ? PyTuple_Pack(11, RecKind[R_SUB], name, typ, ext ? Py_True : Py_False,
                            decl ? Py_True : Py_False, dfile, dline, hc, origin, list,
                            variadic ? Py_True : Py_False) : NULL;
    Py_XDECREF(hc);
done:
    Py_XDECREF(name); Py_XDECREF(typ); Py_XDECREF(dfile); Py_XDECREF(dline);
    Py_XDECREF(origin); Py_XDECREF(list);
    if (!rec)
        return -1;
    return store(s, off, rec) < 0 ? -1 : o;
}

/* the one-field records: base, pointer, typedef, qualifier, unspecified */
static Py_ssize_t simple(Scan *s, Abb *a, Py_ssize_t o, Py_ssize_t off)
{
    if ((o = decode(s, a, o)) < 0)
        return -1;
    PyObject *rec = NULL, *x = NULL, *y = NULL;
    switch (a->action) {
    case S_BASE:
        if ((x = str(s, A_NAME)) && (y = num(s, A_BYTE_SIZE))) {
            PyObject *enc = num(s, A_ENCODING);
            rec = enc ? PyTuple_Pack(4, RecKind[R_BASE], x, y, enc) : NULL;
            Py_XDECREF(enc);
        }
        break;
    case S_PTR:
        if ((x = ref_obj(s, A_TYPE)) && (y = num(s, A_BYTE_SIZE)))
            rec = PyTuple_Pack(3, RecKind[R_PTR], x, y);
        break;
    case S_TYPEDEF:
        if ((x = str(s, A_NAME)) && (y = ref_obj(s, A_TYPE)))
            rec = PyTuple_Pack(3, RecKind[R_TYPEDEF], x, y);
        break;
    case S_QUAL: {
        PyObject *t = PyLong_FromUnsignedLongLong(a->tag);
        PyObject *qk = t ? PyDict_GetItemWithError(QualKind, t) : NULL;
        Py_XDECREF(t);
        if (qk && (x = ref_obj(s, A_TYPE)))
            rec = PyTuple_Pack(3, RecKind[R_QUAL], qk, x);
        else if (!qk && !PyErr_Occurred())
            PyErr_SetString(PyExc_KeyError, "qualifier tag");
        break;
    }
    case S_UNSPEC:
        if ((x = str(s, A_NAME)))
            rec = PyTuple_Pack(2, RecKind[R_UNSPEC], x);
        break;
    }
    Py_XDECREF(x);
    Py_XDECREF(y);
    if (!rec || store(s, off, rec) < 0)
        return -1;
    return a->children ? skip_children(s, o) : o;
}

/* a DIE whose action is not S_SKIP at unit level or nested in a body */
static Py_ssize_t handle(Scan *s, Abb *a, Py_ssize_t o, Py_ssize_t off)
{
    if (++s->depth > MAX_DEPTH)
        return form_error("DIE tree nested too deeply", o), -1;
    Py_ssize_t r;
    switch (a->action) {
    case S_BASE: case S_PTR: case S_TYPEDEF: case S_QUAL: case S_UNSPEC:
        r = simple(s, a, o, off); break;
    case S_STRUCT: r = aggregate(s, a, o, off, 0); break;
    case S_ENUM: r = aggregate(s, a, o, off, 1); break;
    case S_ARRAY: r = array(s, a, o, off); break;
    case S_SUBRTYPE: r = subrtype(s, a, o, off); break;
    case S_SUBPROGRAM: r = subprogram(s, a, o, off); break;
    default: r = skip(s, a, o); break;
    }
    s->depth--;
    return r;
}

/* scan(d, o, end, table, cu, records, known, files, str_cache, str_data) -> offset after
 * the unit DIE's children (scan.UnitScan.top); str_data: the unit's .debug_str */
static PyObject *py_scan(PyObject *self, PyObject *args)
{
    Py_buffer buf, sbuf;
    Py_ssize_t o, end;
    PyObject *table, *cu, *records, *known, *files_fn, *cache;
    if (!PyArg_ParseTuple(args, "y*nnO!OO!OOO!y*", &buf, &o, &end, &TableType, &table, &cu,
                          &PyDict_Type, &records, &known, &files_fn, &PyDict_Type, &cache,
                          &sbuf))
        return NULL;
    Scan s;
    memset(&s, 0, sizeof s);
    s.str = sbuf.buf;
    s.str_len = sbuf.len;
    s.d = buf.buf;
    s.size = buf.len;
    s.end = end < buf.len ? end : buf.len;
    s.t = (Table *)table;
    s.cu = cu;
    s.records = records;
    s.known = (known != Py_None && files_fn != Py_None) ? known : NULL;
    s.files_fn = files_fn;
    s.str_cache = cache;
    PyObject *space = PyObject_GetAttrString(cu, "space");
    PyObject *base = space ? PyObject_GetAttrString(cu, "base") : NULL;
    if (!base) {
        Py_XDECREF(space);
        PyBuffer_Release(&buf);
        PyBuffer_Release(&sbuf);
        return NULL;
    }
    s.space = PyLong_AsUnsignedLongLong(space);
    s.base = PyLong_AsUnsignedLongLong(base);
    Py_DECREF(space);
    Py_DECREF(base);
    PyObject *result = NULL;
    if (PyErr_Occurred())
        goto out;
    for (;;) {
        if (o >= s.end) {
            if (o == s.end) {            /* some producers omit the unit's final null entry */
                result = PyLong_FromSsize_t(o);
                goto out;
            }
            form_error("DIE tree runs past the end of its unit", o);
            goto out;
        }
        Py_ssize_t off = o;
        uint64_t code;
        if ((o = read_code(&s, o, &code)) < 0)
            goto out;
        if (code == 0) {
            result = PyLong_FromSsize_t(o);
            goto out;
        }
        Abb *a = abb_at(&s, code, off);
        if (!a)
            goto out;
        o = a->action == S_SKIP ? skip(&s, a, o) : handle(&s, a, o, off);
        if (o < 0)
            goto out;
    }
out:
    Py_XDECREF(s.files);
    Py_XDECREF(s.headers);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&sbuf);
    return result;
}

/* ---- the interner's hot loop (keys.UnitInterner.unit / rid) ------------------------- */
static PyObject *K_FWD, *K_PTR, *K_TYPEDEF, *K_FUNC_PROTO, *K_ARRAY, *K_ENUM, *K_FLOAT, *K_INT;
static PyObject *K_CONST, *K_VOLATILE, *K_RESTRICT, *K_TYPE_TAG, *K_STRUCT, *K_UNION;
static PyObject *Ate, *AteDefault, *Eight, *Zero;
#define VP (1ull << 62)
#define MAX_RID_DEPTH 5000

typedef struct {
    PyObject *recs, *memo, *pmemo, *ids, *keys, *origins, *origin, *known, *other;
    uint64_t lo, hi;
    Py_ssize_t dangling;
    int depth;
    Py_ssize_t unit_offset;
} Interner;

/* the record at a virtual offset (borrowed from recs, or a new ref from other(); *own set) */
static PyObject *rec_at(Interner *it, uint64_t off, int *own)
{
    *own = 0;
    if (it->lo <= off && off < it->hi) {
        PyObject *k = PyLong_FromUnsignedLongLong(off);
        if (!k)
            return NULL;
        PyObject *r = PyDict_GetItemWithError(it->recs, k);
        Py_DECREF(k);
        if (!r && !PyErr_Occurred())
            return Py_None;
        return r;
    }
    PyObject *r = PyObject_CallFunction(it->other, "K", (unsigned long long)off);
    if (r)
        *own = 1;
    return r;
}

static int off_of(PyObject *o, uint64_t *out)
{
    *out = PyLong_AsUnsignedLongLong(o);
    return (*out == (uint64_t)-1 && PyErr_Occurred()) ? -1 : 0;
}

static long rec_kind(PyObject *rec)
{
    return PyLong_AsLong(PyTuple_GET_ITEM(rec, 0));
}

static PyObject *rid(Interner *it, PyObject *off, int vp);

/* memo.get(key) if present else rid(t, vp) -- a new reference */
static PyObject *rid_memo(Interner *it, PyObject *t, int vp)
{
    if (t == Py_None)
        return Py_NewRef(Zero);
    PyObject *r;
    if (vp) {
        uint64_t o;
        if (off_of(t, &o) < 0)
            return NULL;
        PyObject *mk = PyLong_FromUnsignedLongLong(o | VP);
        if (!mk)
            return NULL;
        r = PyDict_GetItemWithError(it->memo, mk);
        Py_DECREF(mk);
    } else {
        r = PyDict_GetItemWithError(it->memo, t);
    }
    if (r)
        return Py_NewRef(r);
    if (PyErr_Occurred())
        return NULL;
    return rid(it, t, vp);
}

/* keys.UnitInterner._size_of: the byte size of a member's type, or None */
static PyObject *size_of(Interner *it, PyObject *t)
{
    if (t == Py_None)
        Py_RETURN_NONE;
    uint64_t o;
    if (off_of(t, &o) < 0)
        return NULL;
    int own;
    PyObject *r = rec_at(it, o, &own);
    PyObject *res = NULL;
    for (int seen = 0; r && r != Py_None && seen < 32; seen++) {
        long k = rec_kind(r);
        PyObject *next = NULL;
        if (k == R_BASE || k == R_ENUM) {
            res = Py_NewRef(PyTuple_GET_ITEM(r, 2));
        } else if (k == R_STRUCT) {
            res = Py_NewRef(PyTuple_GET_ITEM(r, 3));
        } else if (k == R_KNOWN) {
            res = Py_NewRef(PyTuple_GET_ITEM(r, 4));
        } else if (k == R_PTR) {
            PyObject *sz = PyTuple_GET_ITEM(r, 2);
            int t2 = PyObject_IsTrue(sz);
            res = t2 < 0 ? NULL : Py_NewRef(t2 ? sz : Eight);
            if (!res) { if (own) Py_DECREF(r); return NULL; }
        } else if (k == R_TYPEDEF || k == R_QUAL) {
            next = PyTuple_GET_ITEM(r, 2);
        } else {
            break;
        }
        if (res) {
            if (own)
                Py_DECREF(r);
            return res;
        }
        if (next == Py_None) {
            if (own) Py_DECREF(r);
            Py_RETURN_NONE;
        }
        uint64_t no;
        if (off_of(next, &no) < 0) {
            if (own) Py_DECREF(r);
            return NULL;
        }
        PyObject *old = own ? r : NULL;
        r = rec_at(it, no, &own);
        Py_XDECREF(old);
    }
    if (!r)
        return NULL;
    if (own)
        Py_DECREF(r);
    Py_RETURN_NONE;
}

/* keys.UnitInterner._signed */
static int enum_signed(Interner *it, PyObject *under, PyObject *values)
{
    if (under != Py_None) {
        uint64_t o;
        if (off_of(under, &o) < 0)
            return -1;
        int own;
        PyObject *r = rec_at(it, o, &own);
        int seen = 0;
        while (r && r != Py_None && seen < 16) {
            long k = rec_kind(r);
            if (k != R_TYPEDEF && k != R_QUAL)
                break;
            PyObject *next = PyTuple_GET_ITEM(r, 2);
            PyObject *old = own ? r : NULL;
            if (next == Py_None) {
                r = Py_None;
                own = 0;
            } else if (off_of(next, &o) < 0) {
                Py_XDECREF(old);
                return -1;
            } else {
                r = rec_at(it, o, &own);
            }
            Py_XDECREF(old);
            seen++;
        }
        if (!r)
            return -1;
        if (r != Py_None && rec_kind(r) == R_BASE) {
            PyObject *e = PyDict_GetItemWithError(Ate, PyTuple_GET_ITEM(r, 3));
            int res = e ? PyTuple_GET_ITEM(e, 1) == Py_True : 0;
            if (own)
                Py_DECREF(r);
            if (!e && PyErr_Occurred())
                return -1;
            return res;
        }
        if (own)
            Py_DECREF(r);
    }
    Py_ssize_t n = PyList_GET_SIZE(values);
    for (Py_ssize_t j = 1; j < n; j += 2) {
        int neg = PyObject_RichCompareBool(PyList_GET_ITEM(values, j), Zero, Py_LT);
        if (neg)
            return neg;
    }
    return 0;
}

static PyObject *intern_key(Interner *it, PyObject *key, PyObject *origin)
{
    PyObject *r = PyDict_GetItemWithError(it->ids, key);
    if (r)
        return Py_NewRef(r);
    if (PyErr_Occurred())
        return NULL;
    r = PyLong_FromSsize_t(PyList_GET_SIZE(it->keys));
    if (!r || PyDict_SetItem(it->ids, key, r) < 0 || PyList_Append(it->keys, key) < 0 ||
            PyList_Append(it->origins, origin) < 0) {
        Py_XDECREF(r);
        return NULL;
    }
    return r;
}

/* keys.UnitInterner._proto_key */
static PyObject *proto_key(Interner *it, PyObject *ret, PyObject *params, PyObject *variadic)
{
    Py_ssize_t n = PyList_GET_SIZE(params) / 3;
    PyObject *key = PyTuple_New(3 + 2 * n);
    if (!key)
        return NULL;
    PyObject *r = rid_memo(it, ret, 1);
    if (!r)
        goto fail;
    PyTuple_SET_ITEM(key, 0, Py_NewRef(K_FUNC_PROTO));
    PyTuple_SET_ITEM(key, 1, r);
    PyTuple_SET_ITEM(key, 2, Py_NewRef(variadic));
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(params, 3 * i + 1);
        PyTuple_SET_ITEM(key, 3 + 2 * i, Py_NewRef(PyList_GET_ITEM(params, 3 * i)));
        PyObject *x = rid_memo(it, t, 1);
        if (!x)
            goto fail;
        PyTuple_SET_ITEM(key, 4 + 2 * i, x);
    }
    return key;
fail:
    Py_DECREF(key);
    return NULL;
}

static PyObject *tuple2(PyObject *a, PyObject *b) { return PyTuple_Pack(2, a, b); }

/* keys.UnitInterner.rid: the type id of the DIE at virtual offset `off` (new ref) */
static PyObject *rid(Interner *it, PyObject *offo, int vp)
{
    if (offo == Py_None)
        return Py_NewRef(Zero);
    uint64_t off;
    if (off_of(offo, &off) < 0)
        return NULL;
    PyObject *mk = vp ? PyLong_FromUnsignedLongLong(off | VP) : Py_NewRef(offo);
    if (!mk)
        return NULL;
    PyObject *r = PyDict_GetItemWithError(it->memo, mk), *rec = NULL, *key = NULL;
    PyObject *skey = Py_None;
    int own = 0;
    if (r) {
        Py_DECREF(mk);
        return Py_NewRef(r);
    }
    if (PyErr_Occurred())
        goto fail;
    if (++it->depth > MAX_RID_DEPTH) {
        form_error("type references form a cycle", it->unit_offset);
        goto fail;
    }
    int local = it->lo <= off && off < it->hi;
    if (local) {
        rec = PyDict_GetItemWithError(it->recs, offo);
        if (!rec) {
            if (PyErr_Occurred())
                goto fail;
            rec = Py_None;
        }
    } else {
        r = PyDict_GetItemWithError(it->pmemo, mk);
        if (r) {
            if (PyDict_SetItem(it->memo, mk, r) < 0)
                goto fail;
            Py_DECREF(mk);
            it->depth--;
            return Py_NewRef(r);
        }
        if (PyErr_Occurred())
            goto fail;
        rec = PyObject_CallFunction(it->other, "O", offo);
        if (!rec)
            goto fail;
        own = 1;
    }
    if (rec == Py_None) {
        it->dangling++;
        r = Py_NewRef(Zero);
        goto done;            /* Python does not memoize a dangling reference */
    }
    long k = rec_kind(rec);
    r = NULL;
    if (k == R_STRUCT) {
        PyObject *kind = PyTuple_GET_ITEM(rec, 1), *name = PyTuple_GET_ITEM(rec, 2);
        PyObject *size = PyTuple_GET_ITEM(rec, 3), *members = PyTuple_GET_ITEM(rec, 5);
        int decl = PyObject_IsTrue(PyTuple_GET_ITEM(rec, 4));
        skey = PyTuple_GET_ITEM(rec, 6);
        if (decl || size == Py_None || (vp && name != Py_None)) {
            skey = Py_None;
            if (name != Py_None && !(key = PyTuple_Pack(3, K_FWD, kind, name)))
                goto fail;
        } else {
            Py_ssize_t n = PyList_GET_SIZE(members);
            key = PyTuple_New(3 + n);
            if (!key)
                goto fail;
            PyTuple_SET_ITEM(key, 0, Py_NewRef(kind));
            PyTuple_SET_ITEM(key, 1, Py_NewRef(name));
            PyTuple_SET_ITEM(key, 2, Py_NewRef(size));
            for (Py_ssize_t j = 0; j < n; j += 4) {
                PyObject *t = PyList_GET_ITEM(members, j + 1);
                PyObject *x = rid_memo(it, t, 0);
                if (!x)
                    goto fail;
                PyObject *bit = PyList_GET_ITEM(members, j + 2);
                PyObject *bs = PyList_GET_ITEM(members, j + 3);
                PyTuple_SET_ITEM(key, 3 + j, Py_NewRef(PyList_GET_ITEM(members, j)));
                PyTuple_SET_ITEM(key, 4 + j, x);
                if (PyTuple_CheckExact(bit)) {
                    /* ('msb', base bits, DW_AT_bit_offset): numbered from the top of a
                     * storage unit the size of the member's type */
                    PyObject *sz = size_of(it, t);
                    if (!sz)
                        goto fail;
                    int truthy = PyObject_IsTrue(sz);
                    PyObject *a = PyNumber_Multiply(truthy > 0 ? sz : Zero, Eight);
                    PyObject *b = a ? PyNumber_Add(PyTuple_GET_ITEM(bit, 1), a) : NULL;
                    PyObject *c = b ? PyNumber_Subtract(b, PyTuple_GET_ITEM(bit, 2)) : NULL;
                    PyObject *d = c ? PyNumber_Subtract(c, bs) : NULL;
                    Py_DECREF(sz); Py_XDECREF(a); Py_XDECREF(b); Py_XDECREF(c);
                    if (!d)
                        goto fail;
                    PyTuple_SET_ITEM(key, 5 + j, d);
                } else {
                    PyTuple_SET_ITEM(key, 5 + j, Py_NewRef(bit));
                }
                PyTuple_SET_ITEM(key, 6 + j, Py_NewRef(bs));
            }
        }
    } else if (k == R_PTR) {
        PyObject *x = rid_memo(it, PyTuple_GET_ITEM(rec, 1), 1);
        if (!x)
            goto fail;
        PyObject *sz = PyTuple_GET_ITEM(rec, 2);
        int keep = 0;
        if (sz != Py_None) {
            keep = PyObject_RichCompareBool(sz, Eight, Py_NE);
            if (keep < 0) { Py_DECREF(x); goto fail; }
        }
        key = keep ? PyTuple_Pack(3, K_PTR, x, sz) : tuple2(K_PTR, x);
        Py_DECREF(x);
        if (!key)
            goto fail;
    } else if (k == R_TYPEDEF) {
        PyObject *name = PyTuple_GET_ITEM(rec, 1);
        if (vp && name != Py_None) {
            key = PyTuple_Pack(3, K_FWD, K_TYPEDEF, name);
        } else {
            PyObject *x = rid_memo(it, PyTuple_GET_ITEM(rec, 2), 0);
            if (!x)
                goto fail;
            key = PyTuple_Pack(3, K_TYPEDEF, name, x);
            Py_DECREF(x);
        }
        if (!key)
            goto fail;
    } else if (k == R_QUAL) {
        PyObject *x = rid_memo(it, PyTuple_GET_ITEM(rec, 2), vp);
        if (!x)
            goto fail;
        if (PyTuple_GET_ITEM(rec, 1) != Py_None) {
            key = tuple2(PyTuple_GET_ITEM(rec, 1), x);
            Py_DECREF(x);
            if (!key)
                goto fail;
        } else {
            r = x;                                    /* _Atomic: transparent */
        }
    } else if (k == R_BASE) {
        PyObject *name = PyTuple_GET_ITEM(rec, 1), *size = PyTuple_GET_ITEM(rec, 2);
        PyObject *e = PyDict_GetItemWithError(Ate, PyTuple_GET_ITEM(rec, 3));
        if (!e) {
            if (PyErr_Occurred())
                goto fail;
            e = AteDefault;
        }
        if (PyTuple_GET_ITEM(e, 0) == K_FLOAT)
            key = PyTuple_Pack(3, K_FLOAT, name, size);
        else
            key = PyTuple_Pack(5, K_INT, name, size, PyTuple_GET_ITEM(e, 1),
                               PyTuple_GET_ITEM(e, 2));
        if (!key)
            goto fail;
    } else if (k == R_PROTO) {
        if (!(key = proto_key(it, PyTuple_GET_ITEM(rec, 1), PyTuple_GET_ITEM(rec, 2),
                              PyTuple_GET_ITEM(rec, 3))))
            goto fail;
    } else if (k == R_ARRAY) {
        PyObject *dims = PyTuple_GET_ITEM(rec, 2);
        r = rid_memo(it, PyTuple_GET_ITEM(rec, 1), vp);
        for (Py_ssize_t j = PyList_GET_SIZE(dims) - 1; r && j >= 0; j--) {
            PyObject *ak = PyTuple_Pack(3, K_ARRAY, r, PyList_GET_ITEM(dims, j));
            Py_DECREF(r);
            r = ak ? intern_key(it, ak, Py_None) : NULL;      /* arrays carry no origin */
            Py_XDECREF(ak);
        }
        if (!r)
            goto fail;
    } else if (k == R_KNOWN) {
        PyObject *kind = PyTuple_GET_ITEM(rec, 2);
        if (vp && kind != K_ENUM) {
            if (!(key = PyTuple_Pack(3, K_FWD, kind, PyTuple_GET_ITEM(rec, 3))))
                goto fail;
        } else {
            r = Py_NewRef(PyTuple_GET_ITEM(rec, 1));
        }
    } else if (k == R_ENUM) {
        PyObject *name = PyTuple_GET_ITEM(rec, 1), *size = PyTuple_GET_ITEM(rec, 2);
        PyObject *values = PyTuple_GET_ITEM(rec, 4);
        int decl = PyObject_IsTrue(PyTuple_GET_ITEM(rec, 3));
        skey = PyTuple_GET_ITEM(rec, 6);
        if (decl || size == Py_None) {
            skey = Py_None;
            if (name != Py_None && !(key = PyTuple_Pack(3, K_FWD, K_ENUM, name)))
                goto fail;
        } else {
            int sgn = enum_signed(it, PyTuple_GET_ITEM(rec, 5), values);
            if (sgn < 0)
                goto fail;
            Py_ssize_t n = PyList_GET_SIZE(values);
            key = PyTuple_New(4 + n);
            if (!key)
                goto fail;
            PyTuple_SET_ITEM(key, 0, Py_NewRef(K_ENUM));
            PyTuple_SET_ITEM(key, 1, Py_NewRef(name));
            PyTuple_SET_ITEM(key, 2, Py_NewRef(size));
            PyTuple_SET_ITEM(key, 3, Py_NewRef(sgn ? Py_True : Py_False));
            PyObject *mask = NULL;
            for (Py_ssize_t j = 0; j < n; j++) {
                PyObject *v = PyList_GET_ITEM(values, j);
                if (!sgn && (j & 1)) {
                    int neg = PyObject_RichCompareBool(v, Zero, Py_LT);
                    if (neg < 0) { Py_XDECREF(mask); goto fail; }
                    if (neg) {
                        if (!mask) {              /* (1 << (8 * size)) - 1 */
                            PyObject *bits = PyNumber_Multiply(size, Eight);
                            PyObject *one = PyLong_FromLong(1);
                            PyObject *sh = (bits && one) ? PyNumber_Lshift(one, bits) : NULL;
                            mask = sh ? PyNumber_Subtract(sh, one) : NULL;
                            Py_XDECREF(bits); Py_XDECREF(one); Py_XDECREF(sh);
                            if (!mask)
                                goto fail;
                        }
                        PyObject *m = PyNumber_And(v, mask);
                        if (!m) { Py_DECREF(mask); goto fail; }
                        PyTuple_SET_ITEM(key, 4 + j, m);
                        continue;
                    }
                }
                PyTuple_SET_ITEM(key, 4 + j, Py_NewRef(v));
            }
            Py_XDECREF(mask);
        }
    } else if (k == R_ALIAS) {
        if (!(r = rid_memo(it, PyTuple_GET_ITEM(rec, 1), vp)))
            goto fail;
    } else {                           /* R_UNSPEC (void), or a subprogram used as a type */
        if (k != R_UNSPEC)
            it->dangling++;
        r = Py_NewRef(Zero);
    }
    if (key) {
        Py_XDECREF(r);
        if (!(r = intern_key(it, key, it->origin)))
            goto fail;
        if (skey != Py_None && PyDict_SetItem(it->known, skey, r) < 0)
            goto fail;
    } else if (!r) {
        r = Py_NewRef(Zero);
    }
    if (PyDict_SetItem(it->memo, mk, r) < 0 || (!local && PyDict_SetItem(it->pmemo, mk, r) < 0))
        goto fail;
done:
    Py_XDECREF(key);
    if (own)
        Py_DECREF(rec);
    Py_DECREF(mk);
    it->depth--;
    return r;
fail:
    Py_XDECREF(key);
    Py_XDECREF(r);
    if (own)
        Py_XDECREF(rec);
    Py_DECREF(mk);
    return NULL;
}

/* intern_unit(records, lo, hi, memo, pmemo, ids, keys, origins, origin, known, other,
 *             unit_offset) -> (subprogram records [(off, rec)], dangling references):
 * keys.UnitInterner.unit's loop over the records */
static PyObject *py_intern_unit(PyObject *self, PyObject *args)
{
    Interner it;
    memset(&it, 0, sizeof it);
    unsigned long long lo, hi;
    if (!PyArg_ParseTuple(args, "O!KKO!O!O!O!O!OO!On", &PyDict_Type, &it.recs, &lo, &hi,
                          &PyDict_Type, &it.memo, &PyDict_Type, &it.pmemo, &PyDict_Type,
                          &it.ids, &PyList_Type, &it.keys, &PyList_Type, &it.origins,
                          &it.origin, &PyDict_Type, &it.known, &it.other, &it.unit_offset))
        return NULL;
    if (!K_FWD)
        return PyErr_Format(PyExc_RuntimeError, "configure_keys() was not called");
    it.lo = lo;
    it.hi = hi;
    PyObject *subs = PyList_New(0);
    if (!subs)
        return NULL;
    Py_ssize_t pos = 0;
    PyObject *off, *rec;
    while (PyDict_Next(it.recs, &pos, &off, &rec)) {
        if (rec_kind(rec) == R_SUB) {
            if (!PyObject_IsTrue(PyTuple_GET_ITEM(rec, 4))) {
                PyObject *pair = PyTuple_Pack(2, off, rec);
                if (!pair || PyList_Append(subs, pair) < 0) {
                    Py_XDECREF(pair);
                    goto fail;
                }
                Py_DECREF(pair);
            }
            continue;
        }
        int in = PyDict_Contains(it.memo, off);
        if (in < 0)
            goto fail;
        if (!in) {
            PyObject *r = rid(&it, off, 0);
            if (!r)
                goto fail;
            Py_DECREF(r);
        }
    }
    return Py_BuildValue("Nn", subs, it.dangling);
fail:
    Py_DECREF(subs);
    return NULL;
}

/* ---- key remapping (keys.remap_key) ---------------------------------------------------- */
static int same_kind(PyObject *a, PyObject *b)
{
    if (a == b)
        return 1;
    if (!PyUnicode_CheckExact(a))
        return 0;
    return PyUnicode_Compare(a, b) == 0;
}

/* m[old] for a type id: m a list; NULL on error */
static PyObject *mapped(PyObject *m, PyObject *old)
{
    Py_ssize_t i = PyLong_AsSsize_t(old);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0)
        i += PyList_GET_SIZE(m);
    if (i < 0 || i >= PyList_GET_SIZE(m)) {
        PyErr_SetString(PyExc_IndexError, "type id outside the id map");
        return NULL;
    }
    return Py_NewRef(PyList_GET_ITEM(m, i));
}

/* Where a key (of at least 2 items) holds type ids: key[start], key[start + step], ...
 * (step 0: only key[start]), and key[1] too when also1.  0 when it holds none. */
static int id_positions(PyObject *key, int *start, int *step, int *also1)
{
    PyObject *k = PyTuple_GET_ITEM(key, 0);
    *also1 = 0;
    if (same_kind(k, K_PTR) || same_kind(k, K_CONST) || same_kind(k, K_VOLATILE) ||
            same_kind(k, K_RESTRICT) || same_kind(k, K_TYPE_TAG) || same_kind(k, K_ARRAY)) {
        *start = 1; *step = 0;
    } else if (same_kind(k, K_TYPEDEF)) {
        *start = 2; *step = 0;
    } else if (same_kind(k, K_STRUCT) || same_kind(k, K_UNION)) {
        *start = 4; *step = 4;
    } else if (same_kind(k, K_FUNC_PROTO)) {
        *start = 4; *step = 2; *also1 = 1;
    } else {
        return 0;
    }
    return 1;
}

static int is_id_position(Py_ssize_t j, int start, int step, int also1)
{
    return (also1 && j == 1) || (step == 0 ? j == start
                                           : (j >= start && (j - start) % step == 0));
}

/* `key` with each type id x replaced by map(ctx, x) (a new reference, or NULL): the key
 * itself when it holds none */
static PyObject *remap_by(PyObject *key, PyObject *(*map)(void *, PyObject *), void *ctx)
{
    Py_ssize_t n = PyTuple_GET_SIZE(key);
    int start, step, also1;
    if (n < 2 || !id_positions(key, &start, &step, &also1))
        return Py_NewRef(key);
    PyObject *out = PyTuple_New(n);
    if (!out)
        return NULL;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *x = PyTuple_GET_ITEM(key, j);
        int is_id = is_id_position(j, start, step, also1);
        PyObject *y = is_id ? map(ctx, x) : Py_NewRef(x);
        if (!y) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, j, y);
    }
    return out;
}

static PyObject *map_by_list(void *m, PyObject *old)
{
    return mapped((PyObject *)m, old);
}

/* keys.remap_key(key, m) with m a list: a new reference */
static PyObject *remap(PyObject *key, PyObject *m)
{
    return remap_by(key, map_by_list, m);
}

static PyObject *py_remap_key(PyObject *self, PyObject *args)
{
    PyObject *key, *m;
    if (!PyArg_ParseTuple(args, "O!O!", &PyTuple_Type, &key, &PyList_Type, &m))
        return NULL;
    if (!K_FWD)
        return PyErr_Format(PyExc_RuntimeError, "configure_keys() was not called");
    return remap(key, m);
}

/* closure(keys, ids) -> set: keys.closure (ids, and every id their keys hold, transitively;
 * ids only point down, to keys before their own) */
static PyObject *py_closure(PyObject *self, PyObject *args)
{
    PyObject *keys, *seeds;
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &keys, &seeds))
        return NULL;
    if (!K_FWD)
        return PyErr_Format(PyExc_RuntimeError, "configure_keys() was not called");
    PyObject *seen = PySet_New(seeds);
    if (!seen)
        return NULL;
    PyObject *stack = PySequence_List(seen);
    if (!stack)
        goto fail;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    while (PyList_GET_SIZE(stack)) {
        Py_ssize_t top = PyList_GET_SIZE(stack) - 1;
        Py_ssize_t i = PyLong_AsSsize_t(PyList_GET_ITEM(stack, top));
        if (i == -1 && PyErr_Occurred())
            goto fail;
        if (PyList_SetSlice(stack, top, top + 1, NULL) < 0)
            goto fail;
        if (i < 0 || i >= n) {
            PyErr_SetString(PyExc_IndexError, "type id outside the key table");
            goto fail;
        }
        PyObject *key = PyList_GET_ITEM(keys, i);
        if (!PyTuple_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "a key is not a tuple");
            goto fail;
        }
        Py_ssize_t len = PyTuple_GET_SIZE(key);
        int start, step, also1;
        if (len < 2 || !id_positions(key, &start, &step, &also1))
            continue;
        for (Py_ssize_t j = 1; j < len; j++) {
            if (!is_id_position(j, start, step, also1))
                continue;
            PyObject *c = PyTuple_GET_ITEM(key, j);
            int has = PySet_Contains(seen, c);
            if (has < 0)
                goto fail;
            if (!has && (PySet_Add(seen, c) < 0 || PyList_Append(stack, c) < 0))
                goto fail;
        }
    }
    Py_DECREF(stack);
    return seen;
fail:
    Py_XDECREF(stack);
    Py_DECREF(seen);
    return NULL;
}

/* dry_ids(keys, ids) -> dry: dry[i] = ids[remap_key(keys[i], dry)] or ~i (merge.differing) */
static PyObject *py_dry_ids(PyObject *self, PyObject *args)
{
    PyObject *keys, *ids;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &keys, &PyDict_Type, &ids))
        return NULL;
    if (!K_FWD)
        return PyErr_Format(PyExc_RuntimeError, "configure_keys() was not called");
    Py_ssize_t n = PyList_GET_SIZE(keys);
    PyObject *dry = PyList_New(n);
    if (!dry)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        PyList_SET_ITEM(dry, i, Py_NewRef(Zero));
    for (Py_ssize_t i = 1; i < n; i++) {
        PyObject *k = remap(PyList_GET_ITEM(keys, i), dry);
        if (!k)
            goto fail;
        PyObject *g = PyDict_GetItemWithError(ids, k);
        Py_DECREF(k);
        if (!g && PyErr_Occurred())
            goto fail;
        PyObject *v = g ? Py_NewRef(g) : PyLong_FromSsize_t(~i);
        if (!v)
            goto fail;
        PyList_SetItem(dry, i, v);
    }
    return dry;
fail:
    Py_DECREF(dry);
    return NULL;
}

/* merge_into(keys, origins, ids, tkeys, torigins) -> m: KeyTable.merge (intern every key of
 * another table in its order into this one; m[old id] = new id) */
static PyObject *py_merge_into(PyObject *self, PyObject *args)
{
    Interner it;
    memset(&it, 0, sizeof it);
    PyObject *keys, *origins;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!", &PyList_Type, &keys, &PyList_Type, &origins,
                          &PyDict_Type, &it.ids, &PyList_Type, &it.keys, &PyList_Type,
                          &it.origins))
        return NULL;
    if (!K_FWD)
        return PyErr_Format(PyExc_RuntimeError, "configure_keys() was not called");
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(origins) != n)
        return PyErr_Format(PyExc_ValueError, "keys and origins differ in length");
    PyObject *m = PyList_New(n);
    if (!m)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        PyList_SET_ITEM(m, i, Py_NewRef(Zero));
    for (Py_ssize_t i = 1; i < n; i++) {
        PyObject *k = remap(PyList_GET_ITEM(keys, i), m);
        if (!k)
            goto fail;
        PyObject *r = intern_key(&it, k, PyList_GET_ITEM(origins, i));
        Py_DECREF(k);
        if (!r)
            goto fail;
        PyList_SetItem(m, i, r);
    }
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}

/* merge_identical(keys, canon, rounds) -> None: step 2 of keys.finalize.  `canon` (a list
 * of ids, a union-find forest: canon[i] == i for a root) gets every key that, with its ids
 * replaced by their roots, equals an earlier root's, merged into that one; up to `rounds`
 * passes, until one changes nothing.  The same passes, in the same order, as the Python
 * loop, so the same roots, but for the last one: the pass that would change nothing is
 * left out when it provably would.  Ids point to earlier keys, so a root's key, remapped
 * when the pass comes to it, holds only roots already passed, which stay roots: its form
 * is final, unless one of its ids led to a root at or after it (a placeholder resolved to
 * a later definition).  Those roots' forms are kept ("ahead"); if after the pass each of
 * them remaps to the same form again, every root's form is the one the pass put into its
 * dict, where they are all different: a next pass would merge nothing (the vmlinux: 0.035
 * of 0.09 s). */
typedef struct {
    Py_ssize_t *c;          /* the forest */
    PyObject **ints;        /* id -> its int object, made once */
    Py_ssize_t n;
    Py_ssize_t cur;         /* the key being remapped */
    int ahead;              /* one of its ids led to a root >= cur */
} Forest;

static PyObject *id_object(Forest *f, Py_ssize_t i)
{
    if (!f->ints[i])
        f->ints[i] = PyLong_FromSsize_t(i);
    return f->ints[i];                  /* borrowed (NULL on error) */
}

/* the root of type id `old` (path halving, as keys.merge_identical's find) */
static PyObject *map_to_root(void *ctx, PyObject *old)
{
    Forest *f = ctx;
    Py_ssize_t i = PyLong_AsSsize_t(old);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0 || i >= f->n) {
        PyErr_SetString(PyExc_IndexError, "type id outside the key table");
        return NULL;
    }
    while (f->c[i] != i) {
        f->c[i] = f->c[f->c[i]];
        i = f->c[i];
    }
    if (i >= f->cur)
        f->ahead = 1;
    PyObject *r = id_object(f, i);
    return r ? Py_NewRef(r) : NULL;
}

/* 1 if every root kept in `ahead` (its form when the last pass came to it) remaps to that
   same form now, 0 if one does not, -1 on error */
static int ahead_forms_hold(Forest *f, PyObject *keys, PyObject **ahead)
{
    f->cur = f->n;
    for (Py_ssize_t i = 0; i < f->n; i++) {
        if (!ahead[i] || f->c[i] != i)
            continue;
        PyObject *k = remap_by(PyList_GET_ITEM(keys, i), map_to_root, f);
        if (!k)
            return -1;
        int same = PyObject_RichCompareBool(k, ahead[i], Py_EQ);
        Py_DECREF(k);
        if (same != 1)
            return same;
    }
    return 1;
}

static PyObject *py_merge_identical(PyObject *self, PyObject *args)
{
    PyObject *keys, *canon;
    int rounds;
    if (!PyArg_ParseTuple(args, "O!O!i", &PyList_Type, &keys, &PyList_Type, &canon, &rounds))
        return NULL;
    if (!K_FWD)
        return PyErr_Format(PyExc_RuntimeError, "configure_keys() was not called");
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(canon) != n)
        return PyErr_Format(PyExc_ValueError, "keys and canon differ in length");
    Forest f = {PyMem_Malloc((n ? n : 1) * sizeof *f.c),
                PyMem_Calloc(n ? n : 1, sizeof *f.ints), n, 0, 0};
    PyObject **ahead = PyMem_Calloc(n ? n : 1, sizeof *ahead);
    PyObject *seen = NULL, *result = NULL;
    if (!f.c || !f.ints || !ahead) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        f.c[i] = PyLong_AsSsize_t(PyList_GET_ITEM(canon, i));
        if (f.c[i] == -1 && PyErr_Occurred())
            goto done;
        if (f.c[i] < 0 || f.c[i] >= n) {
            PyErr_SetString(PyExc_IndexError, "canon holds an id outside the key table");
            goto done;
        }
    }
    for (int round = 0; round < rounds; round++) {
        int changed = 0;
        if (round > 0) {                /* would this pass merge anything? */
            int hold = ahead_forms_hold(&f, keys, ahead);
            if (hold < 0)
                goto done;
            if (hold)
                break;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            Py_CLEAR(ahead[i]);
        Py_XSETREF(seen, PyDict_New());
        if (!seen)
            goto done;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (f.c[i] != i)
                continue;
            PyObject *key = PyList_GET_ITEM(keys, i), *me = id_object(&f, i);
            if (!me)
                goto done;
            if (!PyTuple_Check(key)) {
                PyErr_SetString(PyExc_TypeError, "a key is not a tuple");
                goto done;
            }
            f.cur = i;
            f.ahead = 0;
            PyObject *k = remap_by(key, map_to_root, &f);
            if (!k)
                goto done;
            PyObject *j = PyDict_SetDefault(seen, k, me);     /* borrowed */
            if (j == me && f.ahead)
                ahead[i] = Py_NewRef(k);
            Py_DECREF(k);
            if (!j)
                goto done;
            if (j != me) {              /* an earlier root's: one int object per id */
                Py_ssize_t to = PyLong_AsSsize_t(j);
                if (to == -1 && PyErr_Occurred())
                    goto done;
                f.c[i] = to;
                changed = 1;
            }
        }
        if (!changed)
            break;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromSsize_t(f.c[i]);
        if (!v)
            goto done;
        PyList_SetItem(canon, i, v);
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(seen);
    if (f.ints)
        for (Py_ssize_t i = 0; i < n; i++)
            Py_XDECREF(f.ints[i]);
    if (ahead)
        for (Py_ssize_t i = 0; i < n; i++)
            Py_XDECREF(ahead[i]);
    PyMem_Free(ahead);
    PyMem_Free(f.ints);
    PyMem_Free(f.c);
    return result;
}

/* configure_keys(kinds: dict of the model's kind names, ate: keys._ATE) */
static PyObject *py_configure_keys(PyObject *self, PyObject *args)
{
    PyObject *kinds, *ate;
    if (!PyArg_ParseTuple(args, "O!O!", &PyDict_Type, &kinds, &PyDict_Type, &ate))
        return NULL;
    PyObject **dst[] = {&K_FWD, &K_PTR, &K_TYPEDEF, &K_FUNC_PROTO, &K_ARRAY, &K_ENUM,
                        &K_FLOAT, &K_INT, &K_CONST, &K_VOLATILE, &K_RESTRICT, &K_TYPE_TAG,
                        &K_STRUCT, &K_UNION};
    const char *names[] = {"FWD", "PTR", "TYPEDEF", "FUNC_PROTO", "ARRAY", "ENUM", "FLOAT",
                           "INT", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG", "STRUCT",
                           "UNION"};
    for (int i = 0; i < 14; i++) {
        PyObject *v = PyDict_GetItemString(kinds, names[i]);
        if (!v)
            return PyErr_Format(PyExc_KeyError, "kind %s missing", names[i]);
        Py_XSETREF(*dst[i], Py_NewRef(v));
    }
    Py_XSETREF(Ate, Py_NewRef(ate));
    Py_XSETREF(AteDefault, Py_BuildValue("(OOs)", K_INT, Py_False, "unsigned"));
    if (!Eight)
        Eight = PyLong_FromLong(8);
    if (!Zero)
        Zero = PyLong_FromLong(0);
    if (!AteDefault || !Eight || !Zero)
        return NULL;
    Py_RETURN_NONE;
}

/* parse_abbrevs(d, o, end) -> [(code, tag, children, ((at, form, implicit_const|None), ...))]
 * of the table at `o` (forms.parse_abbrev_table's loop), or None when it is malformed (the
 * Python parser then says why) */
static Py_ssize_t abbrev_uleb(const uint8_t *d, Py_ssize_t n, Py_ssize_t o, uint64_t *out,
                              int sign)
{
    uint64_t v = 0;
    int shift = 0;
    uint8_t b;
    do {
        if (o >= n || shift >= 64)
            return -1;
        b = d[o++];
        v |= (uint64_t)(b & 0x7f) << shift;
        shift += 7;
    } while (b & 0x80);
    if (sign && shift < 64 && (b & 0x40))
        v |= ~(uint64_t)0 << shift;
    *out = v;
    return o;
}

static PyObject *py_parse_abbrevs(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t o, end;
    if (!PyArg_ParseTuple(args, "y*nn", &buf, &o, &end))
        return NULL;
    const uint8_t *d = buf.buf;
    Py_ssize_t n = buf.len;
    PyObject *out = PyList_New(0), *specs = NULL;
    if (!out)
        goto fail;
    for (;;) {
        uint64_t code, tag, at, form, ic;
        if ((o = abbrev_uleb(d, n, o, &code, 0)) < 0)
            goto bad;
        if (code == 0)
            break;
        if ((o = abbrev_uleb(d, n, o, &tag, 0)) < 0 || o >= n)
            goto bad;
        int children = d[o++] != 0;
        if (!(specs = PyList_New(0)))
            goto fail;
        for (;;) {
            if ((o = abbrev_uleb(d, n, o, &at, 0)) < 0 ||
                    (o = abbrev_uleb(d, n, o, &form, 0)) < 0)
                goto bad;
            if (at == 0 && form == 0)
                break;
            PyObject *spec;
            if (form == F_implicit_const) {
                if ((o = abbrev_uleb(d, n, o, &ic, 1)) < 0)
                    goto bad;
                spec = Py_BuildValue("(KKL)", (unsigned long long)at,
                                     (unsigned long long)form, (long long)(int64_t)ic);
            } else {
                spec = Py_BuildValue("(KKO)", (unsigned long long)at,
                                     (unsigned long long)form, Py_None);
            }
            if (!spec || PyList_Append(specs, spec) < 0) {
                Py_XDECREF(spec);
                goto fail;
            }
            Py_DECREF(spec);
        }
        PyObject *st = PyList_AsTuple(specs);
        Py_CLEAR(specs);
        PyObject *e = st ? Py_BuildValue("(KKON)", (unsigned long long)code,
                                         (unsigned long long)tag,
                                         children ? Py_True : Py_False, st) : NULL;
        if (!e || PyList_Append(out, e) < 0) {
            Py_XDECREF(e);
            goto fail;
        }
        Py_DECREF(e);
        if (o > end)
            goto bad;
    }
    PyBuffer_Release(&buf);
    return out;
bad:
    Py_XDECREF(specs);
    Py_XDECREF(out);
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(specs);
    Py_XDECREF(out);
    PyBuffer_Release(&buf);
    return NULL;
}

/* ---- relocations of a module's debug sections (elf.Elf.relocated_section's loop) ------ */
static uint64_t get_word(const uint8_t *p, int w, int little)
{
    uint64_t v = 0;
    if (little)
        for (int i = w - 1; i >= 0; i--) v = (v << 8) | p[i];
    else
        for (int i = 0; i < w; i++) v = (v << 8) | p[i];
    return v;
}

static void put_word(uint8_t *p, int w, int little, uint64_t v)
{
    for (int i = 0; i < w; i++) {
        int at = little ? i : w - 1 - i;
        p[at] = (uint8_t)(v >> (8 * i));
    }
}

/* apply_abs_relocs(out: bytearray, raw, is64, is_rela, little, widths {type: 4|8},
 *                  values [symbol value]) -> None, or (type, offset) of the first entry that
 *                  is unsupported or out of range (nothing is guaranteed written then) */
static PyObject *py_apply_abs_relocs(PyObject *self, PyObject *args)
{
    Py_buffer out, raw;
    int is64, is_rela, little;
    PyObject *widths, *values;
    if (!PyArg_ParseTuple(args, "w*y*pppO!O!", &out, &raw, &is64, &is_rela, &little,
                          &PyDict_Type, &widths, &PyList_Type, &values))
        return NULL;
    int ws = is64 ? 8 : 4;
    Py_ssize_t ent = (is_rela ? 3 : 2) * ws;
    Py_ssize_t n = raw.len / ent, nsym = PyList_GET_SIZE(values);
    const uint8_t *r = raw.buf;
    uint8_t *o = out.buf;
    int wtab[1024];                    /* width by relocation type (0: not absolute) */
    for (int i = 0; i < 1024; i++)
        wtab[i] = 0;
    Py_ssize_t pos = 0;
    PyObject *k, *v, *result = NULL;
    while (PyDict_Next(widths, &pos, &k, &v)) {
        long t = PyLong_AsLong(k), w = PyLong_AsLong(v);
        if (t >= 0 && t < 1024 && (w == 4 || w == 8))
            wtab[t] = (int)w;
    }
    if (PyErr_Occurred())
        goto done;
    for (Py_ssize_t i = 0; i < n; i++, r += ent) {
        uint64_t off = get_word(r, ws, little), info = get_word(r + ws, ws, little);
        uint64_t rtype = is64 ? (info & 0xFFFFFFFFu) : (info & 0xFF);
        uint64_t sym = is64 ? (info >> 32) : (info >> 8);
        if (rtype == 0)
            continue;
        int w = rtype < 1024 ? wtab[rtype] : 0;
        if (!w || sym >= (uint64_t)nsym || off > (uint64_t)out.len ||
                off + w > (uint64_t)out.len) {
            result = Py_BuildValue("(KK)", (unsigned long long)rtype, (unsigned long long)off);
            goto done;
        }
        uint64_t addend;
        if (is_rela) {
            addend = get_word(r + 2 * ws, ws, little);
            if (!is64 && (addend & 0x80000000u))       /* Elf32_Sword */
                addend |= 0xFFFFFFFF00000000ull;
        } else {
            addend = get_word(o + off, w, little);
        }
        uint64_t sv = PyLong_AsUnsignedLongLongMask(PyList_GET_ITEM(values, sym));
        if (PyErr_Occurred())
            goto done;
        put_word(o + off, w, little, sv + addend);     /* masked to the width by put_word */
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&out);
    PyBuffer_Release(&raw);
    return result;
}

/* func_symbol_names(symtab, strtab, is64, little) -> set of the names (str, UTF-8 with
 * errors replaced) of the defined STT_FUNC entries of a symbol table: elf.py's loop over a
 * vmlinux's 119k entries in C (it is on the serial path of every DWARF read) */
static PyObject *py_func_symbol_names(PyObject *self, PyObject *args)
{
    Py_buffer sym, str;
    int is64, little;
    if (!PyArg_ParseTuple(args, "y*y*pp", &sym, &str, &is64, &little))
        return NULL;
    PyObject *names = PySet_New(NULL);
    Py_ssize_t ent = is64 ? 24 : 16, n = sym.len / ent;
    const uint8_t *r = sym.buf;
    const char *sb = str.buf;
    for (Py_ssize_t i = 0; names && i < n; i++, r += ent) {
        /* Elf64_Sym: name u32, info u8, other u8, shndx u16, value, size;
         * Elf32_Sym: name u32, value u32, size u32, info u8, other u8, shndx u16 */
        uint64_t st_name = get_word(r, 4, little);
        uint8_t info = is64 ? r[4] : r[12];
        uint64_t shndx = get_word(r + (is64 ? 6 : 14), 2, little);
        if ((info & 0xF) != 2 || shndx == 0 || st_name == 0 || st_name >= (uint64_t)str.len)
            continue;
        const char *start = sb + st_name;
        const char *end = memchr(start, 0, (size_t)(str.len - (Py_ssize_t)st_name));
        Py_ssize_t len = end ? end - start : str.len - (Py_ssize_t)st_name;
        PyObject *name = PyUnicode_DecodeUTF8(start, len, "replace");
        if (!name || PySet_Add(names, name) < 0)
            Py_CLEAR(names);
        Py_XDECREF(name);
    }
    PyBuffer_Release(&sym);
    PyBuffer_Release(&str);
    return names;
}

/* configure(FormError, tag_action, qual_kind, agg_kind, enum_kind, helpers, alt_base) */
static PyObject *py_configure(PyObject *self, PyObject *args)
{
    PyObject *fe, *ta, *qk, *ak, *ek, *helpers, *ab;
    if (!PyArg_ParseTuple(args, "OO!O!O!OO!O", &fe, &PyDict_Type, &ta, &PyDict_Type, &qk,
                          &PyDict_Type, &ak, &ek, &PyDict_Type, &helpers, &ab))
        return NULL;
    PyObject *h[5];
    const char *names[5] = {"STRP", "LINE_STRP", "ALT_STRP", "STRX", "SIG"};
    for (int i = 0; i < 5; i++) {
        h[i] = PyDict_GetItemString(helpers, names[i]);
        if (!h[i])
            return PyErr_Format(PyExc_KeyError, "helper %s missing", names[i]);
    }
    AltBase = PyLong_AsUnsignedLongLong(ab);
    if (PyErr_Occurred())
        return NULL;
    Py_XSETREF(FormError, Py_NewRef(fe));
    Py_XSETREF(TagAction, Py_NewRef(ta));
    Py_XSETREF(QualKind, Py_NewRef(qk));
    Py_XSETREF(AggKind, Py_NewRef(ak));
    Py_XSETREF(EnumKind, Py_NewRef(ek));
    Py_XSETREF(H_strp, Py_NewRef(h[0]));
    Py_XSETREF(H_line_strp, Py_NewRef(h[1]));
    Py_XSETREF(H_alt_strp, Py_NewRef(h[2]));
    Py_XSETREF(H_strx, Py_NewRef(h[3]));
    Py_XSETREF(H_sig, Py_NewRef(h[4]));
    if (!MsbTag && !(MsbTag = PyUnicode_InternFromString("msb")))
        return NULL;
    if (!HeaderSuffix && !(HeaderSuffix = PyUnicode_InternFromString(".h")))
        return NULL;
    for (int i = 0; i < 12; i++)
        if (!RecKind[i] && !(RecKind[i] = PyLong_FromLong(i)))
            return NULL;
    Py_RETURN_NONE;
}

/* ---- keys.finalize's steps 1 and 3 (the placeholders' targets; the graph's types) ------
 * The same cases in the same order as keys.py's Python loops (the reference, which
 * tests/test_dwarf_cscan.py holds them to).  The types are made as __init__ would make
 * them: every slot of the model's dataclass set (configure_model gives the classes). */

enum { T_KIND, T_NAME, T_SIZE, T_REF, T_MEMBERS, T_ENUMERATORS, T_NELEMS, T_PARAMS,
       T_VARIADIC, T_SIGNED, T_ENCODING, T_ORIGIN, NT };
static const char *model_type_fields[NT] = {"kind", "name", "size", "ref", "members",
                                            "enumerators", "nelems", "params", "variadic",
                                            "signed", "encoding", "origin"};
static const char *model_member_fields[4] = {"name", "type", "bit_offset", "bit_size"};
static const char *model_param_fields[2] = {"name", "type"};
static const char *model_function_fields[6] = {"name", "proto", "static", "file", "line",
                                               "module"};
static PyTypeObject *TypeCls, *MemberCls, *ParamCls, *FunctionCls;
static Py_ssize_t TypeOff[NT], MemberOff[4], ParamOff[2], FunctionOff[6];
static PyObject *K_VOID, *S_void;

static Py_ssize_t model_slot(PyTypeObject *cls, const char *name)
{
    PyObject *d = PyDict_GetItemString(cls->tp_dict, name);
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "configure_model: %s.%s is not a slot", cls->tp_name,
                     name);
        return -1;
    }
    return ((PyMemberDescrObject *)d)->d_member->offset;
}

/* configure_model(Type, Member, Param, Function, VOID): the model's classes and its void
 * kind */
static PyObject *py_configure_model(PyObject *self, PyObject *args)
{
    PyObject *t, *m, *p, *f, *v;
    if (!PyArg_ParseTuple(args, "O!O!O!O!U", &PyType_Type, &t, &PyType_Type, &m, &PyType_Type,
                          &p, &PyType_Type, &f, &v))
        return NULL;
    PyTypeObject *cls[4] = {(PyTypeObject *)t, (PyTypeObject *)m, (PyTypeObject *)p,
                            (PyTypeObject *)f};
    Py_ssize_t *offs[4] = {TypeOff, MemberOff, ParamOff, FunctionOff};
    const char **names[4] = {model_type_fields, model_member_fields, model_param_fields,
                             model_function_fields};
    int counts[4] = {NT, 4, 2, 6};
    for (int c = 0; c < 4; c++) {
        /* every slot set here, none left: the class has exactly these */
        Py_ssize_t want = counts[c];
        PyObject *slots = PyObject_GetAttrString((PyObject *)cls[c], "__slots__");
        if (!slots)
            return NULL;
        Py_ssize_t have = PyObject_Length(slots);
        Py_DECREF(slots);
        if (have != want)
            return PyErr_Format(PyExc_TypeError, "configure_model: %s has %zd slots, not %zd",
                                cls[c]->tp_name, have, want);
        for (int i = 0; i < counts[c]; i++)
            if ((offs[c][i] = model_slot(cls[c], names[c][i])) < 0)
                return NULL;
    }
    Py_XSETREF(TypeCls, (PyTypeObject *)Py_NewRef(t));
    Py_XSETREF(MemberCls, (PyTypeObject *)Py_NewRef(m));
    Py_XSETREF(ParamCls, (PyTypeObject *)Py_NewRef(p));
    Py_XSETREF(FunctionCls, (PyTypeObject *)Py_NewRef(f));
    Py_XSETREF(K_VOID, Py_NewRef(v));
    Py_XSETREF(S_void, PyUnicode_InternFromString("void"));
    if (!S_void)
        return NULL;
    Py_RETURN_NONE;
}

/* the model's own string for a kind equal to `k` (a worker's keys came pickled), or NULL
 * (borrowed; no error set) */
static PyObject *own_kind(PyObject *k)
{
    PyObject *kinds[] = {K_VOID, K_INT, K_FLOAT, K_FWD, K_PTR, K_CONST, K_VOLATILE,
                         K_RESTRICT, K_TYPE_TAG, K_TYPEDEF, K_ARRAY, K_STRUCT, K_UNION, K_ENUM,
                         K_FUNC_PROTO};
    size_t n = sizeof kinds / sizeof kinds[0];
    for (size_t i = 0; i < n; i++)
        if (k == kinds[i])
            return k;
    if (!PyUnicode_Check(k))
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (PyUnicode_Compare(k, kinds[i]) == 0)
            return kinds[i];
    PyErr_Clear();
    return NULL;
}

/* a new instance of `cls` with its slots (offsets `off`) set to new references of `v` */
static PyObject *new_slots(PyTypeObject *cls, const Py_ssize_t *off, PyObject **v, int n)
{
    PyObject *o = cls->tp_alloc(cls, 0);
    if (!o)
        return NULL;
    for (int i = 0; i < n; i++)
        *(PyObject **)((char *)o + off[i]) = Py_NewRef(v[i]);
    return o;
}

typedef struct {
    Py_ssize_t *new_id;     /* old id -> new id */
    PyObject **ints;        /* new id -> its int object, made once */
    Py_ssize_t n;           /* old ids */
} Renumber;

/* the new id (an int object, borrowed) of the old id `old` (an int); NULL: IndexError as
 * new_id[old] raises it, or TypeError */
static PyObject *renumbered(Renumber *r, PyObject *old)
{
    Py_ssize_t i = PyLong_AsSsize_t(old);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0)
        i += r->n;                      /* as a Python list index */
    if (i < 0 || i >= r->n) {
        PyErr_SetString(PyExc_IndexError, "list index out of range");
        return NULL;
    }
    Py_ssize_t j = r->new_id[i];
    if (!r->ints[j] && !(r->ints[j] = PyLong_FromSsize_t(j)))
        return NULL;
    return r->ints[j];
}

#define KEY_AT(key, i) (PyTuple_GET_SIZE(key) > (i) ? PyTuple_GET_ITEM(key, i) : NULL)

/* keys._type_from_key(remap_key(key, new_id), origin) */
static PyObject *type_from_key(Renumber *r, PyObject *key, PyObject *origin)
{
    if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) < 1) {
        PyErr_SetString(PyExc_TypeError, "a key is not a kind's tuple");
        return NULL;
    }
    Py_ssize_t len = PyTuple_GET_SIZE(key);
    PyObject *k = own_kind(PyTuple_GET_ITEM(key, 0));
    if (!k)
        return PyErr_Format(PyExc_ValueError, "unknown key kind %R", PyTuple_GET_ITEM(key, 0));
    PyObject *v[NT];
    for (int i = 0; i < NT; i++)
        v[i] = Py_None;
    v[T_KIND] = k;
    v[T_VARIADIC] = Py_False;
    PyObject *list = NULL, *out = NULL;
    int need = k == K_VOID ? 1 : (k == K_INT ? 5 : (k == K_FLOAT || k == K_FWD ||
               k == K_TYPEDEF || k == K_ARRAY || k == K_STRUCT || k == K_UNION ||
               k == K_FUNC_PROTO) ? 3 : (k == K_ENUM ? 4 : 2));
    if (len < need) {
        PyErr_SetString(PyExc_IndexError, "tuple index out of range");
        return NULL;
    }
    if (k == K_VOID) {
        v[T_NAME] = S_void;
    } else if (k == K_INT) {
        v[T_NAME] = KEY_AT(key, 1);
        v[T_SIZE] = KEY_AT(key, 2);
        v[T_SIGNED] = KEY_AT(key, 3);
        v[T_ENCODING] = KEY_AT(key, 4);
    } else if (k == K_FLOAT) {
        v[T_NAME] = KEY_AT(key, 1);
        v[T_SIZE] = KEY_AT(key, 2);
    } else if (k == K_FWD) {
        v[T_NAME] = KEY_AT(key, 2);
        PyObject *e = KEY_AT(key, 1);
        PyObject *own = own_kind(e);
        v[T_ENCODING] = own ? own : e;
    } else if (k == K_PTR) {
        if (!(v[T_REF] = renumbered(r, KEY_AT(key, 1))))
            return NULL;
        if (len > 2)
            v[T_SIZE] = KEY_AT(key, 2);
    } else if (k == K_CONST || k == K_VOLATILE || k == K_RESTRICT || k == K_TYPE_TAG) {
        if (!(v[T_REF] = renumbered(r, KEY_AT(key, 1))))
            return NULL;
    } else if (k == K_TYPEDEF) {
        v[T_NAME] = KEY_AT(key, 1);
        if (!(v[T_REF] = renumbered(r, KEY_AT(key, 2))))
            return NULL;
        v[T_ORIGIN] = origin;
    } else if (k == K_ARRAY) {
        if (!(v[T_REF] = renumbered(r, KEY_AT(key, 1))))
            return NULL;
        v[T_NELEMS] = KEY_AT(key, 2);
    } else if (k == K_STRUCT || k == K_UNION) {
        v[T_NAME] = KEY_AT(key, 1);
        v[T_SIZE] = KEY_AT(key, 2);
        v[T_ORIGIN] = origin;
        Py_ssize_t nm = (len - 3 + 3) / 4;            /* range(3, len, 4) */
        if (!(list = PyList_New(nm)))
            return NULL;
        for (Py_ssize_t m = 0; m < nm; m++) {
            Py_ssize_t j = 3 + 4 * m;
            if (j + 3 >= len) {
                PyErr_SetString(PyExc_IndexError, "tuple index out of range");
                goto done;
            }
            PyObject *mv[4] = {PyTuple_GET_ITEM(key, j), renumbered(r, PyTuple_GET_ITEM(key, j + 1)),
                               PyTuple_GET_ITEM(key, j + 2), PyTuple_GET_ITEM(key, j + 3)};
            if (!mv[1])
                goto done;
            PyObject *mem = new_slots(MemberCls, MemberOff, mv, 4);
            if (!mem)
                goto done;
            PyList_SET_ITEM(list, m, mem);
        }
        v[T_MEMBERS] = list;
    } else if (k == K_ENUM) {
        v[T_NAME] = KEY_AT(key, 1);
        v[T_SIZE] = KEY_AT(key, 2);
        v[T_SIGNED] = KEY_AT(key, 3);
        v[T_ORIGIN] = origin;
        Py_ssize_t ne = (len - 4 + 1) / 2;            /* range(4, len, 2) */
        if (!(list = PyList_New(ne)))
            return NULL;
        for (Py_ssize_t e = 0; e < ne; e++) {
            Py_ssize_t j = 4 + 2 * e;
            if (j + 1 >= len) {
                PyErr_SetString(PyExc_IndexError, "tuple index out of range");
                goto done;
            }
            PyObject *pair = PyTuple_Pack(2, PyTuple_GET_ITEM(key, j), PyTuple_GET_ITEM(key, j + 1));
            if (!pair)
                goto done;
            PyList_SET_ITEM(list, e, pair);
        }
        v[T_ENUMERATORS] = list;
    } else if (k == K_FUNC_PROTO) {
        if (!(v[T_REF] = renumbered(r, KEY_AT(key, 1))))
            return NULL;
        v[T_VARIADIC] = KEY_AT(key, 2);
        Py_ssize_t np = (len - 3 + 1) / 2;            /* range(3, len, 2) */
        if (!(list = PyList_New(np)))
            return NULL;
        for (Py_ssize_t p = 0; p < np; p++) {
            Py_ssize_t j = 3 + 2 * p;
            if (j + 1 >= len) {
                PyErr_SetString(PyExc_IndexError, "tuple index out of range");
                goto done;
            }
            PyObject *pv[2] = {PyTuple_GET_ITEM(key, j), renumbered(r, PyTuple_GET_ITEM(key, j + 1))};
            if (!pv[1])
                goto done;
            PyObject *par = new_slots(ParamCls, ParamOff, pv, 2);
            if (!par)
                goto done;
            PyList_SET_ITEM(list, p, par);
        }
        v[T_PARAMS] = list;
    } else {
        return PyErr_Format(PyExc_ValueError, "unknown key kind %R", k);
    }
    out = new_slots(TypeCls, TypeOff, v, NT);
done:
    Py_XDECREF(list);
    return out;
}

/* emit_types(keys, origins, canon) -> (types, new_id): keys.finalize's step 3 (the roots of
 * the forest `canon` in id order, renumbered from 0, each made a model Type) */
static PyObject *py_emit_types(PyObject *self, PyObject *args)
{
    PyObject *keys, *origins, *canon;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyList_Type, &keys, &PyList_Type, &origins,
                          &PyList_Type, &canon))
        return NULL;
    if (!K_FWD || !TypeCls)
        return PyErr_Format(PyExc_RuntimeError, "configure_keys()/configure_model() was not called");
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(canon) != n || PyList_GET_SIZE(origins) != n)
        return PyErr_Format(PyExc_ValueError, "keys, origins and canon differ in length");
    Py_ssize_t *c = PyMem_Malloc((n ? n : 1) * sizeof *c);
    Renumber r = {PyMem_Malloc((n ? n : 1) * sizeof *r.new_id),
                  PyMem_Calloc(n ? n : 1, sizeof *r.ints), n};
    PyObject *types = NULL, *ids = NULL, *result = NULL;
    if (!c || !r.new_id || !r.ints) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        c[i] = PyLong_AsSsize_t(PyList_GET_ITEM(canon, i));
        if (c[i] == -1 && PyErr_Occurred())
            goto done;
        if (c[i] < 0 || c[i] >= n) {
            PyErr_SetString(PyExc_IndexError, "canon holds an id outside the key table");
            goto done;
        }
    }
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i < n; i++) {        /* roots, numbered in id order */
        Py_ssize_t j = i;
        for (Py_ssize_t hops = 0; c[j] != j; hops++) {
            if (hops > n) {
                PyErr_SetString(PyExc_ValueError, "canon holds a cycle");
                goto done;
            }
            c[j] = c[c[j]];
            j = c[j];
        }
        if (j == i)
            r.new_id[i] = m++;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t j = i;
        while (c[j] != j)
            j = c[j];
        r.new_id[i] = r.new_id[j];
    }
    if (!(types = PyList_New(m)))
        goto done;
    for (Py_ssize_t i = 0, t = 0; i < n; i++) {
        if (c[i] != i)
            continue;
        PyObject *ty = type_from_key(&r, PyList_GET_ITEM(keys, i), PyList_GET_ITEM(origins, i));
        if (!ty)
            goto done;
        PyList_SET_ITEM(types, t++, ty);
    }
    if (!(ids = PyList_New(n)))
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t j = r.new_id[i];
        if (!r.ints[j] && !(r.ints[j] = PyLong_FromSsize_t(j)))
            goto done;
        PyList_SET_ITEM(ids, i, Py_NewRef(r.ints[j]));
    }
    result = PyTuple_Pack(2, types, ids);
done:
    Py_XDECREF(types);
    Py_XDECREF(ids);
    if (r.ints)
        for (Py_ssize_t i = 0; i < n; i++)
            Py_XDECREF(r.ints[i]);
    PyMem_Free(r.ints);
    PyMem_Free(r.new_id);
    PyMem_Free(c);
    return result;
}

/* placeholder_targets(keys, canon, targets|None) -> None: keys.finalize's step 1 (each
 * placeholder's canon entry: the given target, else the first complete type of its kind
 * and name, else void for a typedef's) */
static PyObject *py_placeholder_targets(PyObject *self, PyObject *args)
{
    PyObject *keys, *canon, *targets;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyList_Type, &keys, &PyList_Type, &canon, &targets))
        return NULL;
    if (!K_FWD)
        return PyErr_Format(PyExc_RuntimeError, "configure_keys() was not called");
    if (targets != Py_None && !PyDict_Check(targets))
        return PyErr_Format(PyExc_TypeError, "targets is not a dict");
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(canon) != n)
        return PyErr_Format(PyExc_ValueError, "keys and canon differ in length");
    PyObject *kinds[4] = {K_STRUCT, K_UNION, K_ENUM, K_TYPEDEF};
    PyObject *first[4] = {PyDict_New(), PyDict_New(), PyDict_New(), PyDict_New()};
    PyObject *result = NULL;
    for (int d = 0; d < 4; d++)
        if (!first[d])
            goto done;
    for (Py_ssize_t i = 0; i < n; i++) {        /* the first complete type of each name */
        PyObject *key = PyList_GET_ITEM(keys, i);
        if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) < 2)
            continue;
        PyObject *k = PyTuple_GET_ITEM(key, 0), *name = PyTuple_GET_ITEM(key, 1);
        int d = k == K_STRUCT ? 0 : k == K_UNION ? 1 : k == K_ENUM ? 2 : k == K_TYPEDEF ? 3 : -1;
        if (d < 0 && k != K_FWD && PyUnicode_Check(k)) {      /* a worker's kind string */
            PyObject *own = own_kind(k);
            for (int e = 0; e < 4 && own; e++)
                if (own == kinds[e])
                    d = e;
        }
        if (d < 0 || name == Py_None)
            continue;
        PyObject *at = PyLong_FromSsize_t(i);
        if (!at)
            goto done;
        PyObject *was = PyDict_SetDefault(first[d], name, at);
        Py_DECREF(at);
        if (!was)
            goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) < 1)
            continue;
        PyObject *k = PyTuple_GET_ITEM(key, 0);
        if (k != K_FWD && own_kind(k) != K_FWD)
            continue;
        if (PyTuple_GET_SIZE(key) < 3) {
            PyErr_SetString(PyExc_IndexError, "tuple index out of range");
            goto done;
        }
        PyObject *target = NULL;
        if (targets != Py_None) {
            PyObject *at = PyLong_FromSsize_t(i);
            if (!at)
                goto done;
            target = PyDict_GetItemWithError(targets, at);
            Py_DECREF(at);
            if (!target && PyErr_Occurred())
                goto done;
        }
        PyObject *of = own_kind(PyTuple_GET_ITEM(key, 1));
        if (target == NULL || target == Py_None) {
            target = NULL;
            for (int d = 0; d < 4 && of; d++)
                if (of == kinds[d]) {
                    target = PyDict_GetItemWithError(first[d], PyTuple_GET_ITEM(key, 2));
                    if (!target && PyErr_Occurred())
                        goto done;
                }
        }
        if (target != NULL) {
            if (PyList_SetItem(canon, i, Py_NewRef(target)) < 0)
                goto done;
        } else if (of == K_TYPEDEF) {
            if (PyList_SetItem(canon, i, Py_NewRef(Zero)) < 0)
                goto done;
        }
    }
    result = Py_NewRef(Py_None);
done:
    for (int d = 0; d < 4; d++)
        Py_XDECREF(first[d]);
    return result;
}

/* emit_functions(functions, new_id, module) -> [Function]: keys._add_functions (the
 * functions in the stable order of their ranks, renumbered, each (name, proto, static,
 * file, line, module) once); None for a rank that is no small int (the Python loop then) */
typedef struct {
    long rank;
    Py_ssize_t at;
} Ranked;

static int by_rank(const void *a, const void *b)
{
    const Ranked *x = a, *y = b;
    if (x->rank != y->rank)
        return x->rank < y->rank ? -1 : 1;
    return x->at < y->at ? -1 : x->at > y->at;
}

static PyObject *py_emit_functions(PyObject *self, PyObject *args)
{
    PyObject *functions, *new_id, *module;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyList_Type, &functions, &PyList_Type, &new_id,
                          &module))
        return NULL;
    if (!FunctionCls)
        return PyErr_Format(PyExc_RuntimeError, "configure_model() was not called");
    Py_ssize_t n = PyList_GET_SIZE(functions);
    Ranked *order = PyMem_Malloc((n ? n : 1) * sizeof *order);
    PyObject *seen = PySet_New(NULL), *out = PyList_New(0), *result = NULL;
    if (!order || !seen || !out) {
        if (!order)
            PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *f = PyList_GET_ITEM(functions, i);
        if (!PyTuple_Check(f) || PyTuple_GET_SIZE(f) < 6 || PyTuple_GET_SIZE(f) > 7 ||
                !PyLong_CheckExact(PyTuple_GET_ITEM(f, 5))) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        int over;
        order[i].rank = PyLong_AsLongAndOverflow(PyTuple_GET_ITEM(f, 5), &over);
        if (over) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        order[i].at = i;
    }
    qsort(order, n, sizeof *order, by_rank);
    Py_ssize_t nid = PyList_GET_SIZE(new_id);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *f = PyList_GET_ITEM(functions, order[k].at);
        Py_ssize_t proto = PyLong_AsSsize_t(PyTuple_GET_ITEM(f, 1));
        if (proto == -1 && PyErr_Occurred())
            goto done;
        if (proto < 0)
            proto += nid;                       /* as a Python list index */
        if (proto < 0 || proto >= nid) {
            PyErr_SetString(PyExc_IndexError, "list index out of range");
            goto done;
        }
        PyObject *v[6] = {PyTuple_GET_ITEM(f, 0), PyList_GET_ITEM(new_id, proto),
                          PyTuple_GET_ITEM(f, 2), PyTuple_GET_ITEM(f, 3),
                          PyTuple_GET_ITEM(f, 4),
                          PyTuple_GET_SIZE(f) > 6 ? PyTuple_GET_ITEM(f, 6) : module};
        PyObject *fk = PyTuple_Pack(6, v[0], v[1], v[2], v[3], v[4], v[5]);
        if (!fk)
            goto done;
        int had = PySet_Contains(seen, fk);
        if (had == 0)
            had = PySet_Add(seen, fk) < 0 ? -1 : 0;
        Py_DECREF(fk);
        if (had < 0)
            goto done;
        if (had)
            continue;
        PyObject *fn = new_slots(FunctionCls, FunctionOff, v, 6);
        if (!fn)
            goto done;
        int rc = PyList_Append(out, fn);
        Py_DECREF(fn);
        if (rc < 0)
            goto done;
    }
    result = Py_NewRef(out);
done:
    PyMem_Free(order);
    Py_XDECREF(seen);
    Py_XDECREF(out);
    return result;
}

static PyMethodDef methods[] = {
    {"configure", py_configure, METH_VARARGS, "Set the Python objects the scanner uses."},
    {"scan", py_scan, METH_VARARGS, "Scan one unit's DIE tree into records (scan.py)."},
    {"parse_abbrevs", py_parse_abbrevs, METH_VARARGS, "Parse one abbreviation table."},
    {"func_symbol_names", py_func_symbol_names, METH_VARARGS,
     "names of the defined function symbols of a symbol table"},
    {"apply_abs_relocs", py_apply_abs_relocs, METH_VARARGS,
     "Apply absolute relocations to a section's bytes."},
    {"remap_key", py_remap_key, METH_VARARGS, "keys.remap_key with a list map."},
    {"dry_ids", py_dry_ids, METH_VARARGS, "The ids a graph's keys already have in a table."},
    {"closure", py_closure, METH_VARARGS, "Ids and the ids their keys hold (keys.closure)."},
    {"merge_into", py_merge_into, METH_VARARGS, "Intern another table's keys (KeyTable.merge)."},
    {"merge_identical", py_merge_identical, METH_VARARGS,
     "Merge the keys that became identical (step 2 of keys.finalize)."},
    {"configure_keys", py_configure_keys, METH_VARARGS, "Set the model's kinds for interning."},
    {"configure_model", py_configure_model, METH_VARARGS,
     "Set the model's classes (emit_types makes their instances)."},
    {"placeholder_targets", py_placeholder_targets, METH_VARARGS,
     "Point the placeholders at their types (step 1 of keys.finalize)."},
    {"emit_functions", py_emit_functions, METH_VARARGS,
     "The graph's functions, in rank order, renumbered (keys.finalize)."},
    {"emit_types", py_emit_types, METH_VARARGS,
     "The graph's types from the merged keys (step 3 of keys.finalize)."},
    {"intern_unit", py_intern_unit, METH_VARARGS,
     "Intern one unit's type records (keys.UnitInterner.unit)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cscan", "The DWARF scanner's hot path (see scan.py).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__cscan(void)
{
    if (PyType_Ready(&TableType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Py_INCREF(&TableType);
    if (PyModule_AddObject(m, "Table", (PyObject *)&TableType) < 0) {
        Py_DECREF(&TableType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
