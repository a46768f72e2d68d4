/* The BTF reader's hot path in C: raw BTF bytes -> the model objects reader.py's _Parser
 * makes from them (types, functions, variables, data sections, decl tags), every reference
 * already turned from a BTF id into a model id, and the graph's checks
 * (model.check_references: ids that exist, no reference cycle) done.
 *
 * Valid input only.  Anything the Python parser would refuse (a truncated record, an
 * unknown kind or linkage, a string offset outside the section, a reference to a record
 * that is no type, a cycle) makes parse() return None, and the caller runs the Python
 * parser, the reference, which raises its own error with its own message.  So the two
 * cannot disagree on what an error says; tests/test_btf_cparse.py holds them together on
 * real BTF and on damaged copies of it.  A kernel's base BTF only (no split BTF).
 *
 * The model classes are slotted dataclasses with no __post_init__: an object is made by
 * allocating it and storing every slot, as their generated __init__ would.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

enum {
    K_INT = 1, K_PTR, K_ARRAY, K_STRUCT, K_UNION, K_ENUM, K_FWD, K_TYPEDEF, K_VOLATILE,
    K_CONST, K_RESTRICT, K_FUNC, K_FUNC_PROTO, K_VAR, K_DATASEC, K_FLOAT, K_DECL_TAG,
    K_TYPE_TAG, K_ENUM64, K_MAX = K_ENUM64
};

/* what a BTF record becomes in the model */
enum { R_TYPE, R_FUNC, R_VAR, R_DATASEC, R_DECL_TAG };

/* ---- the model's classes and strings (configure) ------------------------------------ */

typedef struct {
    PyTypeObject *cls;
    int n;
    Py_ssize_t off[12];
} Shape;

enum { T_KIND, T_NAME, T_SIZE, T_REF, T_MEMBERS, T_ENUMERATORS, T_NELEMS, T_PARAMS,
       T_VARIADIC, T_SIGNED, T_ENCODING, T_ORIGIN, T_NFIELDS };
static const char *type_fields[] = {"kind", "name", "size", "ref", "members", "enumerators",
                                    "nelems", "params", "variadic", "signed", "encoding",
                                    "origin", NULL};
static const char *member_fields[] = {"name", "type", "bit_offset", "bit_size", NULL};
static const char *param_fields[] = {"name", "type", NULL};
static const char *function_fields[] = {"name", "proto", "static", "file", "line", "module",
                                        NULL};
static const char *variable_fields[] = {"name", "type", "linkage", NULL};
static const char *datasec_fields[] = {"name", "size", "entries", NULL};
static const char *decl_tag_fields[] = {"value", "target_kind", "target", "component", NULL};

static Shape S_type, S_member, S_param, S_function, S_variable, S_datasec, S_decl_tag;
static int configured;

/* the model's kind strings, by BTF kind (the model compares kinds by identity) */
static PyObject *kind_str[K_MAX + 1];
static PyObject *s_bool, *s_char, *s_signed, *s_unsigned, *s_struct, *s_union, *s_vm;
static PyObject *s_linkage[3];                  /* static, global, extern */
static PyObject *s_target[3];                   /* type, func, var (what a record became) */

static int shape_of(Shape *s, PyObject *cls, const char **fields)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "configure: a model class expected");
        return -1;
    }
    s->cls = (PyTypeObject *)cls;
    s->n = 0;
    for (const char **f = fields; *f; f++) {
        PyObject *d = PyDict_GetItemString(s->cls->tp_dict, *f);
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) ||
                ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "configure: %s.%s is not a slot",
                         s->cls->tp_name, *f);
            return -1;
        }
        s->off[s->n++] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    Py_INCREF(cls);
    return 0;
}

/* A new object of shape `s` with its slots set to `v` (references stolen, all of them,
 * also on failure; a NULL among them is a failure). */
static PyObject *make(Shape *s, PyObject **v)
{
    int ok = 1;
    for (int i = 0; i < s->n; i++)
        ok &= v[i] != NULL;
    PyObject *o = ok ? s->cls->tp_alloc(s->cls, 0) : NULL;
    for (int i = 0; i < s->n; i++) {
        if (o)
            *(PyObject **)((char *)o + s->off[i]) = v[i];
        else
            Py_XDECREF(v[i]);
    }
    return o;
}

static PyObject *py_configure(PyObject *self, PyObject *args)
{
    PyObject *t, *m, *p, *f, *v, *d, *g, *kinds, *words;
    if (!PyArg_ParseTuple(args, "OOOOOOOO!O!", &t, &m, &p, &f, &v, &d, &g,
                          &PyDict_Type, &kinds, &PyDict_Type, &words))
        return NULL;
    if (shape_of(&S_type, t, type_fields) || shape_of(&S_member, m, member_fields) ||
            shape_of(&S_param, p, param_fields) || shape_of(&S_function, f, function_fields) ||
            shape_of(&S_variable, v, variable_fields) ||
            shape_of(&S_datasec, d, datasec_fields) || shape_of(&S_decl_tag, g, decl_tag_fields))
        return NULL;
    for (int k = 0; k <= K_MAX; k++) {
        PyObject *key = PyLong_FromLong(k), *s;
        if (!key)
            return NULL;
        s = PyDict_GetItemWithError(kinds, key);
        Py_DECREF(key);
        if (s == NULL && PyErr_Occurred())
            return NULL;
        Py_XINCREF(s);
        kind_str[k] = s;
    }
    const char *names[] = {"bool", "char", "signed", "unsigned", "struct", "union", "vm",
                           "static", "global", "extern", "type", "func", "var"};
    PyObject **dest[] = {&s_bool, &s_char, &s_signed, &s_unsigned, &s_struct, &s_union, &s_vm,
                         &s_linkage[0], &s_linkage[1], &s_linkage[2],
                         &s_target[0], &s_target[1], &s_target[2]};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        PyObject *s = PyDict_GetItemString(words, names[i]);
        if (s == NULL) {
            PyErr_Format(PyExc_KeyError, "configure: no word %s", names[i]);
            return NULL;
        }
        Py_INCREF(s);
        *dest[i] = s;
    }
    configured = 1;
    Py_RETURN_NONE;
}

/* ---- one parse ------------------------------------------------------------------------ */

typedef struct {                        /* a string offset -> its text, decoded once */
    uint32_t key;
    PyObject *val;
} Slot;

typedef struct {
    const uint8_t *data;
    int big;                            /* big-endian BTF */
    const uint8_t *strs;
    uint32_t str_len;
    Slot *cache;
    size_t cap, used;
    /* per BTF id: where its record starts, what it became, its index there */
    uint32_t *pos;
    uint8_t *what;
    uint32_t *index;
    uint32_t n;                         /* BTF ids, void included */
    /* the cycle checks' edges, per model type id (CSR: start[i]..start[i+1]) */
    uint32_t *val_start, *val_to, *sp_start, *sp_to;
    size_t nval, nsp, cap_val, cap_sp;
    uint32_t ntypes;
} P;

static inline uint32_t rd32(const P *p, const uint8_t *b)
{
    uint32_t v;
    memcpy(&v, b, 4);
    return p->big ? __builtin_bswap32(v) : v;
}

/* the text at string offset `off` (a new reference; Py_None for 0), NULL with no exception
 * set for an offset the Python parser refuses; NULL with an exception on a real error */
static PyObject *string_at(P *p, uint32_t off)
{
    if (off == 0)
        Py_RETURN_NONE;
    if (off >= p->str_len)
        return NULL;
    size_t mask = p->cap - 1, h = (off * 2654435761u) & mask;
    while (p->cache[h].val) {
        if (p->cache[h].key == off) {
            Py_INCREF(p->cache[h].val);
            return p->cache[h].val;
        }
        h = (h + 1) & mask;
    }
    const uint8_t *s = p->strs + off, *end = p->strs + p->str_len;
    const uint8_t *nul = memchr(s, 0, end - s);
    if (nul == NULL) {
        /* a string that starts right after a NUL runs to the section's end; one that
         * starts inside another must end in a NUL (reader._Strings) */
        if (s[-1] != 0)
            return NULL;
        nul = end;
    }
    PyObject *v = PyUnicode_DecodeUTF8((const char *)s, nul - s, "replace");
    if (v == NULL)
        return NULL;
    if (2 * (p->used + 1) > p->cap) {              /* grow, keep at most half full */
        size_t ncap = p->cap * 2;
        Slot *nc = PyMem_Calloc(ncap, sizeof(Slot));
        if (!nc) {
            Py_DECREF(v);
            PyErr_NoMemory();
            return NULL;
        }
        for (size_t i = 0; i < p->cap; i++)
            if (p->cache[i].val) {
                size_t j = (p->cache[i].key * 2654435761u) & (ncap - 1);
                while (nc[j].val)
                    j = (j + 1) & (ncap - 1);
                nc[j] = p->cache[i];
            }
        PyMem_Free(p->cache);
        p->cache = nc;
        p->cap = ncap;
        mask = ncap - 1;
        h = (off * 2654435761u) & mask;
        while (p->cache[h].val)
            h = (h + 1) & mask;
    }
    p->cache[h].key = off;
    p->cache[h].val = v;
    p->used++;
    Py_INCREF(v);
    return v;
}

/* BTF id -> model type id; -1 when it names no type (void is 0) */
static inline long model_type(const P *p, uint32_t id)
{
    if (id == 0)
        return 0;
    if (id >= p->n || p->what[id] != R_TYPE)
        return -1;
    return p->index[id];
}

static int push(uint32_t **to, size_t *len, size_t *cap, uint32_t v)
{
    if (*len == *cap) {
        size_t ncap = *cap ? *cap * 2 : 1024;
        uint32_t *n = PyMem_Realloc(*to, ncap * sizeof(uint32_t));
        if (!n) {
            PyErr_NoMemory();
            return -1;
        }
        *to = n;
        *cap = ncap;
    }
    (*to)[(*len)++] = v;
    return 0;
}

#define EDGE_VAL(v) do { if (push(&p->val_to, &p->nval, &p->cap_val, (uint32_t)(v))) \
    goto error; } while (0)
#define EDGE_SP(v) do { if (push(&p->sp_to, &p->nsp, &p->cap_sp, (uint32_t)(v))) \
    goto error; } while (0)

/* 1 when the edges (CSR over p->ntypes nodes) hold a cycle (Kahn: what cannot be peeled),
 * 0 when not, -1 on no memory */
static int has_cycle(uint32_t n, const uint32_t *start, const uint32_t *to)
{
    uint32_t *indeg = PyMem_Calloc(n ? n : 1, sizeof(uint32_t));
    uint32_t *todo = PyMem_Malloc((n ? n : 1) * sizeof(uint32_t));
    if (!indeg || !todo) {
        PyMem_Free(indeg);
        PyMem_Free(todo);
        PyErr_NoMemory();
        return -1;
    }
    for (size_t e = 0; e < start[n]; e++)
        indeg[to[e]]++;
    uint32_t top = 0, seen = 0;
    for (uint32_t i = 0; i < n; i++)
        if (indeg[i] == 0)
            todo[top++] = i;
    while (top) {
        uint32_t i = todo[--top];
        seen++;
        for (uint32_t e = start[i]; e < start[i + 1]; e++)
            if (--indeg[to[e]] == 0)
                todo[top++] = to[e];
    }
    PyMem_Free(indeg);
    PyMem_Free(todo);
    return seen != n;
}

/* pass 1: every record's extent, kind and what it becomes; 0 valid, 1 refused */
static int index_records(P *p, uint32_t start, uint32_t end)
{
    uint32_t cap = 1024, counts[5] = {1, 0, 0, 0, 0};   /* types: void is model id 0 */
    p->pos = PyMem_Malloc(cap * sizeof(uint32_t));
    p->what = PyMem_Malloc(cap);
    p->index = PyMem_Malloc(cap * sizeof(uint32_t));
    if (!p->pos || !p->what || !p->index)
        goto nomem;
    p->n = 1;
    p->what[0] = R_TYPE;
    p->index[0] = 0;
    p->pos[0] = 0;
    uint64_t pos = start;
    while (pos < end) {
        if (pos + 12 > end)
            return 1;
        const uint8_t *r = p->data + pos;
        uint32_t info = rd32(p, r + 4);
        uint32_t kind = (info >> 24) & 0x1f, vlen = info & 0xffff;
        uint64_t extra = 0;
        int what = R_TYPE;
        switch (kind) {
        case K_INT: case K_VAR: case K_DECL_TAG: extra = 4; break;
        case K_ARRAY: extra = 12; break;
        case K_STRUCT: case K_UNION: case K_ENUM64: case K_DATASEC: extra = 12ull * vlen; break;
        case K_ENUM: case K_FUNC_PROTO: extra = 8ull * vlen; break;
        case K_PTR: case K_FWD: case K_TYPEDEF: case K_VOLATILE: case K_CONST:
        case K_RESTRICT: case K_FUNC: case K_FLOAT: case K_TYPE_TAG: break;
        default: return 1;
        }
        if (pos + 12 + extra > end)
            return 1;
        if (kind == K_FUNC) {
            if (vlen > 2)
                return 1;
            what = R_FUNC;
        } else if (kind == K_VAR) {
            if (rd32(p, r + 12) > 2)
                return 1;
            what = R_VAR;
        } else if (kind == K_DATASEC) {
            what = R_DATASEC;
        } else if (kind == K_DECL_TAG) {
            what = R_DECL_TAG;
        }
        if (p->n == cap) {
            if (cap > (1u << 30))
                return 1;
            cap *= 2;
            uint32_t *np = PyMem_Realloc(p->pos, cap * sizeof(uint32_t));
            if (np) p->pos = np;
            uint8_t *nw = PyMem_Realloc(p->what, cap);
            if (nw) p->what = nw;
            uint32_t *ni = PyMem_Realloc(p->index, cap * sizeof(uint32_t));
            if (ni) p->index = ni;
            if (!np || !nw || !ni)
                goto nomem;
        }
        p->pos[p->n] = (uint32_t)pos;
        p->what[p->n] = (uint8_t)what;
        p->index[p->n] = counts[what]++;
        p->n++;
        pos += 12 + extra;
    }
    p->ntypes = counts[R_TYPE];
    return 0;
nomem:
    PyErr_NoMemory();
    return -1;
}

/* PyLong from a C integer, for the slots (NULL on no memory, which make() passes on) */
#define L(x) PyLong_FromLongLong((long long)(x))
#define UL(x) PyLong_FromUnsignedLongLong((unsigned long long)(x))
#define NONE() (Py_INCREF(Py_None), Py_None)
#define BOOL(x) PyBool_FromLong(x)
#define REF(o) (Py_INCREF(o), (o))

/* pass 2: the objects.  Returns 0 and fills out[] (new lists), 1 refused, -1 error. */
static int build(P *p, PyObject *types, PyObject **out)
{
    PyObject *functions = PyList_New(0), *variables = PyList_New(0),
             *datasecs = PyList_New(0), *decl_tags = PyList_New(0);
    PyObject *name = NULL, *obj = NULL, *list = NULL;
    int refused = 0;
    if (!functions || !variables || !datasecs || !decl_tags)
        goto error;
    p->val_start = PyMem_Malloc((p->ntypes + 1) * sizeof(uint32_t));
    p->sp_start = PyMem_Malloc((p->ntypes + 1) * sizeof(uint32_t));
    if (!p->val_start || !p->sp_start) {
        PyErr_NoMemory();
        goto error;
    }
    p->val_start[0] = p->sp_start[0] = 0;         /* void: no edges */
    p->val_start[1] = p->sp_start[1] = 0;
    uint32_t tid = 1;
    for (uint32_t id = 1; id < p->n; id++) {
        const uint8_t *r = p->data + p->pos[id], *e = r + 12;
        uint32_t info = rd32(p, r + 4), st = rd32(p, r + 8);
        uint32_t kind = (info >> 24) & 0x1f, vlen = info & 0xffff, kflag = info >> 31;
        name = string_at(p, rd32(p, r));
        if (name == NULL)
            goto refuse_or_error;
        if (p->what[id] != R_TYPE) {
            long m;
            switch (kind) {
            case K_FUNC:
                if ((m = model_type(p, st)) < 0)
                    goto refuse;
                obj = make(&S_function, (PyObject *[]){name, L(m), BOOL(vlen == 0), NONE(),
                                                         NONE(), REF(s_vm)});
                list = functions;
                break;
            case K_VAR:
                if ((m = model_type(p, st)) < 0)
                    goto refuse;
                obj = make(&S_variable, (PyObject *[]){name, L(m),
                                                         REF(s_linkage[rd32(p, e)])});
                list = variables;
                break;
            case K_DATASEC: {
                PyObject *entries = PyList_New(vlen);
                if (!entries)
                    goto error;
                for (uint32_t i = 0; i < vlen; i++, e += 12) {
                    uint32_t t = rd32(p, e);
                    if (t == 0 || t >= p->n || (p->what[t] != R_VAR && p->what[t] != R_FUNC)) {
                        Py_DECREF(entries);
                        goto refuse;
                    }
                    PyObject *ent = Py_BuildValue("(OIII)", s_target[p->what[t] == R_VAR ? 2 : 1],
                                                  p->index[t], rd32(p, e + 4), rd32(p, e + 8));
                    if (!ent) {
                        Py_DECREF(entries);
                        goto error;
                    }
                    PyList_SET_ITEM(entries, i, ent);
                }
                obj = make(&S_datasec, (PyObject *[]){name, UL(st), entries});
                list = datasecs;
                break;
            }
            default: {              /* DECL_TAG */
                if (st == 0 || st >= p->n || p->what[st] == R_DATASEC ||
                        p->what[st] == R_DECL_TAG)
                    goto refuse;
                int32_t component;
                uint32_t c = rd32(p, e);
                memcpy(&component, &c, 4);
                obj = make(&S_decl_tag, (PyObject *[]){name, REF(s_target[p->what[st]]),
                                                         L(p->index[st]), L(component)});
                list = decl_tags;
            }
            }
            name = NULL;                        /* make() took it */
            if (!obj || PyList_Append(list, obj))
                goto error;
            Py_CLEAR(obj);
            continue;
        }
        /* a type: its slots, with the defaults of model.Type */
        PyObject *v[T_NFIELDS] = {REF(kind_str[kind]), name, NONE(), NONE(), NONE(), NONE(),
                                  NONE(), NONE(), REF(Py_False), NONE(), NONE(), NONE()};
        name = NULL;
        long m;
#define SET(slot, val) do { Py_DECREF(v[slot]); v[slot] = (val); } while (0)
#define REFUSE_T() do { for (int i_ = 0; i_ < T_NFIELDS; i_++) Py_XDECREF(v[i_]); \
                        goto refuse; } while (0)
#define ERROR_T() do { for (int i_ = 0; i_ < T_NFIELDS; i_++) Py_XDECREF(v[i_]); \
                       goto error; } while (0)
        switch (kind) {
        case K_PTR: case K_TYPEDEF: case K_VOLATILE: case K_CONST: case K_RESTRICT:
        case K_TYPE_TAG:
            if ((m = model_type(p, st)) < 0)
                REFUSE_T();
            SET(T_REF, L(m));
            if (kind != K_PTR)
                EDGE_VAL(m);
            if (kind != K_TYPEDEF)
                EDGE_SP(m);
            break;
        case K_FUNC_PROTO: {
            if ((m = model_type(p, st)) < 0)
                REFUSE_T();
            SET(T_NAME, NONE());
            SET(T_REF, L(m));
            EDGE_SP(m);
            int variadic = 0;
            uint32_t kept = 0;
            for (uint32_t i = 0; i < vlen; i++)
                if (rd32(p, e + 8 * i) == 0 && rd32(p, e + 8 * i + 4) == 0)
                    variadic = 1;
            for (uint32_t i = 0; i < vlen; i++)      /* variadic: the (0, 0) pairs go */
                kept += !(variadic && rd32(p, e + 8 * i) == 0 && rd32(p, e + 8 * i + 4) == 0);
            PyObject *params = PyList_New(kept);
            if (!params)
                ERROR_T();
            SET(T_PARAMS, params);
            SET(T_VARIADIC, BOOL(variadic));
            for (uint32_t i = 0, j = 0; i < vlen; i++, e += 8) {
                uint32_t n_off = rd32(p, e), t = rd32(p, e + 4);
                if (variadic && n_off == 0 && t == 0)
                    continue;
                PyObject *pn = string_at(p, n_off);
                if (pn == NULL) {
                    for (int i_ = 0; i_ < T_NFIELDS; i_++) Py_XDECREF(v[i_]);
                    goto refuse_or_error;
                }
                if ((m = model_type(p, t)) < 0) {
                    Py_DECREF(pn);
                    REFUSE_T();
                }
                PyObject *po = make(&S_param, (PyObject *[]){pn, L(m)});
                if (!po)
                    ERROR_T();
                PyList_SET_ITEM(params, j++, po);
                EDGE_SP(m);
            }
            break;
        }
        case K_STRUCT: case K_UNION: {
            SET(T_SIZE, UL(st));
            PyObject *members = PyList_New(vlen);
            if (!members)
                ERROR_T();
            SET(T_MEMBERS, members);
            for (uint32_t i = 0; i < vlen; i++, e += 12) {
                uint32_t n_off = rd32(p, e), t = rd32(p, e + 4), off = rd32(p, e + 8);
                uint64_t bit_off = kflag ? (off & 0xffffff) : off, bits = kflag ? off >> 24 : 0;
                PyObject *mn = string_at(p, n_off);
                if (mn == NULL) {
                    for (int i_ = 0; i_ < T_NFIELDS; i_++) Py_XDECREF(v[i_]);
                    goto refuse_or_error;
                }
                /* without kind_flag a bitfield's width and extra offset are in its INT */
                if (bits == 0 && t && t < p->n && p->what[t] == R_TYPE) {
                    const uint8_t *ir = p->data + p->pos[t];
                    if (((rd32(p, ir + 4) >> 24) & 0x1f) == K_INT) {
                        uint32_t enc = rd32(p, ir + 12), isize = rd32(p, ir + 8);
                        uint32_t ibits = enc & 0xff, ioff = (enc >> 16) & 0xff;
                        if (ibits != (uint64_t)isize * 8 || ioff) {
                            bits = ibits;
                            bit_off += ioff;
                        }
                    }
                }
                if ((m = model_type(p, t)) < 0) {
                    Py_DECREF(mn);
                    REFUSE_T();
                }
                PyObject *mo = make(&S_member, (PyObject *[]){mn, L(m), UL(bit_off), UL(bits)});
                if (!mo)
                    ERROR_T();
                PyList_SET_ITEM(members, i, mo);
                EDGE_VAL(m);
            }
            break;
        }
        case K_INT: {
            uint32_t enc = rd32(p, e), encoding = (enc >> 24) & 0xf;
            int is_signed = encoding & 1;
            SET(T_SIZE, UL(st));
            SET(T_SIGNED, BOOL(is_signed));
            SET(T_ENCODING, REF(encoding & 4 ? s_bool : encoding & 2 ? s_char :
                                is_signed ? s_signed : s_unsigned));
            break;
        }
        case K_ARRAY: {
            uint32_t elem = rd32(p, e), nelems = rd32(p, e + 8);
            if ((m = model_type(p, elem)) < 0)
                REFUSE_T();
            SET(T_NAME, NONE());
            SET(T_REF, L(m));
            SET(T_NELEMS, UL(nelems));
            EDGE_VAL(m);
            EDGE_SP(m);
            break;
        }
        case K_ENUM: case K_ENUM64: {
            SET(T_SIZE, UL(st));
            SET(T_SIGNED, BOOL(kflag));
            PyObject *vals = PyList_New(vlen);
            if (!vals)
                ERROR_T();
            SET(T_ENUMERATORS, vals);
            size_t step = kind == K_ENUM ? 8 : 12;
            for (uint32_t i = 0; i < vlen; i++, e += step) {
                PyObject *en = string_at(p, rd32(p, e)), *val, *pair;
                if (en == NULL) {
                    for (int i_ = 0; i_ < T_NFIELDS; i_++) Py_XDECREF(v[i_]);
                    goto refuse_or_error;
                }
                uint32_t lo = rd32(p, e + 4);
                if (kind == K_ENUM) {
                    int32_t s;
                    memcpy(&s, &lo, 4);
                    val = kflag ? L(s) : UL(lo);
                } else {
                    uint64_t u = ((uint64_t)rd32(p, e + 8) << 32) | lo;
                    val = kflag ? L((int64_t)u) : UL(u);
                }
                pair = val ? PyTuple_Pack(2, en, val) : NULL;
                Py_DECREF(en);
                Py_XDECREF(val);
                if (!pair)
                    ERROR_T();
                PyList_SET_ITEM(vals, i, pair);
            }
            break;
        }
        case K_FWD:
            SET(T_ENCODING, REF(kflag ? s_union : s_struct));
            break;
        default:                                    /* FLOAT */
            SET(T_SIZE, UL(st));
        }
        obj = make(&S_type, v);
        if (!obj || PyList_Append(types, obj))
            goto error;
        Py_CLEAR(obj);
        tid++;
        /* the edges pushed since the row began are this type's: where the next begins */
        p->val_start[tid] = (uint32_t)p->nval;
        p->sp_start[tid] = (uint32_t)p->nsp;
        continue;
    refuse_or_error:
        if (PyErr_Occurred())
            goto error;
        goto refuse;
    }
    out[0] = functions;
    out[1] = variables;
    out[2] = datasecs;
    out[3] = decl_tags;
    return 0;
refuse:
    refused = 1;
error:
    Py_XDECREF(name);
    Py_XDECREF(obj);
    Py_XDECREF(functions);
    Py_XDECREF(variables);
    Py_XDECREF(datasecs);
    Py_XDECREF(decl_tags);
    return refused && !PyErr_Occurred() ? 1 : -1;
}

static void release(P *p)
{
    if (p->cache)
        for (size_t i = 0; i < p->cap; i++)
            Py_XDECREF(p->cache[i].val);
    PyMem_Free(p->cache);
    PyMem_Free(p->pos);
    PyMem_Free(p->what);
    PyMem_Free(p->index);
    PyMem_Free(p->val_start);
    PyMem_Free(p->val_to);
    PyMem_Free(p->sp_start);
    PyMem_Free(p->sp_to);
}

/* parse(data, big_endian, types_start, types_end, strs_start, strs_end, types)
 *   -> (functions, variables, datasecs, decl_tags), the types appended to `types` (a list
 *   holding void); or None: refused (the Python parser says why). */
static PyObject *py_parse(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    int big;
    Py_ssize_t ts, te, ss, se;
    PyObject *types;
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "_cbtf.configure() was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*pnnnnO!", &buf, &big, &ts, &te, &ss, &se,
                          &PyList_Type, &types))
        return NULL;
    PyObject *result = NULL;
    P p;
    memset(&p, 0, sizeof p);
    if (ts < 0 || te < ts || te > buf.len || ss < 0 || se < ss || se > buf.len ||
            se - ss > UINT32_MAX || te > UINT32_MAX) {
        result = NONE();
        goto done;
    }
    p.data = buf.buf;
    p.big = big;
    p.strs = (const uint8_t *)buf.buf + ss;
    p.str_len = (uint32_t)(se - ss);
    p.cap = 1 << 16;
    p.cache = PyMem_Calloc(p.cap, sizeof(Slot));
    if (!p.cache) {
        PyErr_NoMemory();
        goto done;
    }
    int r = index_records(&p, (uint32_t)ts, (uint32_t)te);
    if (r < 0)
        goto done;
    if (r > 0) {
        result = NONE();
        goto done;
    }
    Py_ssize_t before = PyList_GET_SIZE(types);
    PyObject *out[4];
    r = build(&p, types, out);
    if (r == 0) {
        /* model.check_references: the ids exist by construction; the cycles remain */
        int c = has_cycle(p.ntypes, p.val_start, p.val_to);
        if (c == 0)
            c = has_cycle(p.ntypes, p.sp_start, p.sp_to);
        if (c == 0)
            result = Py_BuildValue("(NNNN)", out[0], out[1], out[2], out[3]);
        else {
            for (int i = 0; i < 4; i++)
                Py_DECREF(out[i]);
            if (c > 0)
                r = 1;
        }
    }
    if (r != 0 || result == NULL) {             /* leave `types` as it was */
        if (PyList_SetSlice(types, before, PyList_GET_SIZE(types), NULL) == 0 && r == 1 &&
                !PyErr_Occurred())
            result = NONE();
    }
done:
    release(&p);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef methods[] = {
    {"configure", py_configure, METH_VARARGS, "Set the model's classes and strings."},
    {"parse", py_parse, METH_VARARGS, "Raw BTF -> the model's objects, or None (refused)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cbtf", "The BTF reader's hot path (see reader.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__cbtf(void)
{
    return PyModule_Create(&module);
}
