/* The DB writer's hot loops over the type model in C:
 *   spell_all   every type's C spelling (model._speller, for every id in id order);
 *   flat_rows   the surftrace `members` rows of structs (surftrace._flat);
 *   type_rows, function_rows   the surftrace `types`, `files` and `funs` rows.
 *
 * The same cases in the same order as the Python code, with the same memos (_speller: each
 * id's (spelling, left, right, nesting) made once from its target's).  What the Python code
 * would refuse or could not do (nesting deeper than its limits: a reference cycle; a
 * reference that is no type id; an object that is no model.Type; an integer past 64 bits)
 * makes them return None, and the caller runs the Python code, the reference, which raises
 * its own error.  tests/test_model_cloops.py holds the two together.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define MAX_DECL_DEPTH 256
#define MAX_CHAIN (1 << 16)

enum { F_KIND, F_NAME, F_REF, F_NELEMS, F_PARAMS, F_VARIADIC, F_ENCODING, F_SIZE, F_MEMBERS,
       NF };
static const char *type_fields[] = {"kind", "name", "ref", "nelems", "params", "variadic",
                                    "encoding", "size", "members", NULL};
enum { M_NAME, M_TYPE, M_BIT_OFFSET, M_BIT_SIZE, NM };
static const char *member_fields[] = {"name", "type", "bit_offset", "bit_size", NULL};
static PyTypeObject *type_cls, *param_cls, *member_cls;
static Py_ssize_t toff[NF], moff[NM], param_type_off;
static PyObject *k_ptr, *k_array, *k_func_proto, *k_const, *k_volatile, *k_restrict,
                *k_type_tag, *k_struct, *k_union, *k_enum, *k_fwd, *k_void, *k_int, *k_float,
                *k_typedef;
static PyObject *s_space, *s_star, *s_lparen_star, *s_rparen, *s_void, *s_dots, *s_comma,
                *s_anon, *s_empty, *s_dot;
static int configured;

static Py_ssize_t slot_offset(PyTypeObject *cls, const char *name)
{
    PyObject *d = PyDict_GetItemString(cls->tp_dict, name);
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "configure: %s.%s is not a slot", cls->tp_name, name);
        return -1;
    }
    return ((PyMemberDescrObject *)d)->d_member->offset;
}

static PyObject *py_configure(PyObject *self, PyObject *args)
{
    PyObject *t, *p, *m;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!O!(OOOOOOOOOOOOOOO)", &PyType_Type, &t, &PyType_Type, &p,
                          &PyType_Type, &m,
                          &k_ptr, &k_array, &k_func_proto, &k_const, &k_volatile, &k_restrict,
                          &k_type_tag, &k_struct, &k_union, &k_enum, &k_fwd, &k_void, &k_int,
                          &k_float, &k_typedef))
        return NULL;
    PyObject **keep[] = {&k_ptr, &k_array, &k_func_proto, &k_const, &k_volatile, &k_restrict,
                         &k_type_tag, &k_struct, &k_union, &k_enum, &k_fwd, &k_void, &k_int,
                         &k_float, &k_typedef};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        Py_INCREF(*keep[i]);
    type_cls = (PyTypeObject *)t;
    param_cls = (PyTypeObject *)p;
    member_cls = (PyTypeObject *)m;
    Py_INCREF(t);
    Py_INCREF(p);
    Py_INCREF(m);
    for (int i = 0; i < NF; i++)
        if ((toff[i] = slot_offset(type_cls, type_fields[i])) < 0)
            return NULL;
    for (int i = 0; i < NM; i++)
        if ((moff[i] = slot_offset(member_cls, member_fields[i])) < 0)
            return NULL;
    if ((param_type_off = slot_offset(param_cls, "type")) < 0)
        return NULL;
    const char *words[] = {" ", "*", "(*", ")", "void", "...", ", ", "{...}", "", "."};
    PyObject **dest[] = {&s_space, &s_star, &s_lparen_star, &s_rparen, &s_void, &s_dots,
                         &s_comma, &s_anon, &s_empty, &s_dot};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if ((*dest[i] = PyUnicode_InternFromString(words[i])) == NULL)
            return NULL;
    configured = 1;
    Py_RETURN_NONE;
}

/* one of the model's own kind strings (the Python code compares with ==: an equal string
 * that is not the model's is left to it) */
static inline int model_kind(PyObject *k)
{
    return k == k_ptr || k == k_array || k == k_func_proto || k == k_const ||
           k == k_volatile || k == k_restrict || k == k_type_tag || k == k_struct ||
           k == k_union || k == k_enum || k == k_fwd || k == k_void || k == k_int ||
           k == k_float || k == k_typedef;
}

typedef struct {
    PyObject *s, *left, *right;         /* s NULL: not made yet */
    long nest;
} Entry;

typedef struct {
    PyObject **types;
    Py_ssize_t n;
    Entry *e;
} Speller;

#define SLOT(o, i) (*(PyObject **)((char *)(o) + toff[i]))

/* refusals: 1 (no exception set), errors: -1 */
static int parts(Speller *sp, Py_ssize_t tid, int depth);

/* the type id in `ref` (a slot), or -1 if it is no id of this graph; `none_is` for None */
static Py_ssize_t id_of(Speller *sp, PyObject *ref, Py_ssize_t none_is)
{
    if (ref == Py_None)
        return none_is;
    if (!PyLong_CheckExact(ref))
        return -1;
    Py_ssize_t v = PyLong_AsSsize_t(ref);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    return v >= 0 && v < sp->n ? v : -1;
}

static inline PyObject *type_at(Speller *sp, Py_ssize_t tid)
{
    PyObject *t = sp->types[tid];
    return Py_IS_TYPE(t, type_cls) ? t : NULL;
}

/* the entry of `tid`, made if need be (NULL: refused or error, see parts) */
static Entry *get(Speller *sp, Py_ssize_t tid, int depth, int *rc)
{
    if (sp->e[tid].s == NULL && (*rc = parts(sp, tid, depth)) != 0)
        return NULL;
    return &sp->e[tid];
}

/* model.TypeGraph.strip_cv_kind */
static PyObject *strip_cv_kind(Speller *sp, Py_ssize_t tid)
{
    PyObject *t = type_at(sp, tid);
    for (int i = 0; t && i < MAX_CHAIN; i++) {
        PyObject *k = SLOT(t, F_KIND);
        if (k != k_const && k != k_volatile && k != k_restrict && k != k_type_tag)
            return k;
        Py_ssize_t r = id_of(sp, SLOT(t, F_REF), 0);
        t = r < 0 ? NULL : type_at(sp, r);
    }
    return NULL;
}

static PyObject *cat(PyObject *a, PyObject *b)
{
    return a && b ? PyUnicode_Concat(a, b) : NULL;
}

static int set(Entry *e, PyObject *s, PyObject *left, PyObject *right, long nest)
{
    if (!s || !left || !right) {
        Py_XDECREF(s);
        Py_XDECREF(left);
        Py_XDECREF(right);
        return -1;
    }
    e->s = s;
    e->left = left;
    e->right = right;
    e->nest = nest;
    return 0;
}

static int parts(Speller *sp, Py_ssize_t tid, int depth)
{
    if (depth > MAX_DECL_DEPTH)
        return 1;
    PyObject *t = type_at(sp, tid);
    if (t == NULL)
        return 1;
    PyObject *k = SLOT(t, F_KIND);
    Entry *me = &sp->e[tid], *x;
    int rc = 0;
    if (!model_kind(k))
        return 1;
    if (k == k_ptr) {
        PyObject *ref_obj = SLOT(t, F_REF);
        Py_ssize_t ref = id_of(sp, ref_obj, 0);
        if (ref < 0 || (x = get(sp, ref, depth + 1, &rc)) == NULL)
            return ref < 0 ? 1 : rc;
        PyObject *left, *right;
        PyObject *sk = ref_obj != Py_None ? strip_cv_kind(sp, ref) : NULL;
        if (ref_obj != Py_None && sk == NULL)
            return 1;                           /* a qualifier chain that loops */
        if (sk == k_array || sk == k_func_proto) {
            left = cat(x->left, s_lparen_star);
            right = cat(s_rparen, x->right);
        } else {
            left = cat(x->left, s_star);
            right = (Py_INCREF(x->right), x->right);
        }
        return set(me, cat(left, right), left, right, x->nest + 1);
    }
    if (k == k_array || k == k_type_tag) {
        Py_ssize_t ref = id_of(sp, SLOT(t, F_REF), -1);
        if (ref < 0 || (x = get(sp, ref, depth + 1, &rc)) == NULL)
            return ref < 0 ? 1 : rc;
        if (k == k_type_tag) {
            Py_INCREF(x->s);
            Py_INCREF(x->left);
            Py_INCREF(x->right);
            return set(me, x->s, x->left, x->right, x->nest + 1);
        }
        PyObject *ne = SLOT(t, F_NELEMS), *dim;
        int truth = PyObject_IsTrue(ne);
        if (truth < 0)
            return -1;
        dim = truth ? PyUnicode_FromFormat("[%S]", ne) : PyUnicode_FromString("[]");
        PyObject *right = cat(dim, x->right);
        Py_XDECREF(dim);
        Py_INCREF(x->left);
        return set(me, cat(x->left, right), x->left, right, x->nest + 1);
    }
    if (k == k_func_proto) {
        PyObject *params = SLOT(t, F_PARAMS);
        Py_ssize_t np = 0;
        long n = 0;
        if (params != Py_None) {
            if (!PyList_CheckExact(params))
                return 1;
            np = PyList_GET_SIZE(params);
        }
        int variadic = PyObject_IsTrue(SLOT(t, F_VARIADIC));
        if (variadic < 0)
            return -1;
        PyObject *ps = PyList_New(np + variadic);
        if (!ps)
            return -1;
        for (Py_ssize_t i = 0; i < np; i++) {
            PyObject *p = PyList_GET_ITEM(params, i);
            Py_ssize_t pt;
            if (!Py_IS_TYPE(p, param_cls) ||
                    (pt = id_of(sp, *(PyObject **)((char *)p + param_type_off), -1)) < 0) {
                Py_DECREF(ps);
                return 1;
            }
            if ((x = get(sp, pt, depth + 1, &rc)) == NULL) {
                Py_DECREF(ps);
                return rc;
            }
            Py_INCREF(x->s);
            PyList_SET_ITEM(ps, i, x->s);
            if (x->nest > n)
                n = x->nest;
        }
        if (variadic) {
            Py_INCREF(s_dots);
            PyList_SET_ITEM(ps, np, s_dots);
        }
        Py_ssize_t ref = id_of(sp, SLOT(t, F_REF), 0);
        if (ref < 0 || (x = get(sp, ref, depth + 1, &rc)) == NULL) {
            Py_DECREF(ps);
            return ref < 0 ? 1 : rc;
        }
        PyObject *joined = np + variadic ? PyUnicode_Join(s_comma, ps) : (Py_INCREF(s_void),
                                                                          s_void);
        Py_DECREF(ps);
        PyObject *args = joined ? PyUnicode_FromFormat("(%U)", joined) : NULL;
        Py_XDECREF(joined);
        PyObject *right = cat(args, x->right);
        Py_XDECREF(args);
        Py_INCREF(x->left);
        long rn = x->nest;
        return set(me, cat(x->left, right), x->left, right, (rn > n ? rn : n) + 1);
    }
    if (k == k_const || k == k_volatile || k == k_restrict) {
        PyObject *ref_obj = SLOT(t, F_REF);
        Py_ssize_t ref = id_of(sp, ref_obj, 0);
        if (ref < 0)
            return 1;
        PyObject *target = type_at(sp, ref);
        if (target == NULL)
            return 1;
        if ((x = get(sp, ref, depth + 1, &rc)) == NULL)
            return rc;
        if (SLOT(target, F_KIND) == k_ptr) {            /* `char * const p` */
            PyObject *lk = cat(x->left, k);
            PyObject *s = cat(lk, x->right), *left = cat(lk, s_space);
            Py_XDECREF(lk);
            Py_INCREF(x->right);
            return set(me, s, left, x->right, x->nest + 1);
        }
        PyObject *ks = cat(k, s_space);
        PyObject *s = cat(ks, x->s), *left = cat(ks, x->left);
        Py_XDECREF(ks);
        Py_INCREF(x->right);
        return set(me, s, left, x->right, x->nest + 1);
    }
    /* model.TypeGraph.base_name */
    PyObject *name = SLOT(t, F_NAME), *head;
    int named = PyObject_IsTrue(name);
    if (named < 0)
        return -1;
    if (k == k_struct || k == k_union || k == k_enum) {
        head = PyUnicode_FromFormat("%S %S", k, named ? name : s_anon);
    } else if (k == k_fwd) {
        PyObject *enc = SLOT(t, F_ENCODING);
        int has = PyObject_IsTrue(enc);
        if (has < 0)
            return -1;
        head = PyUnicode_FromFormat("%S %S", has ? enc : k_struct, name);
    } else {
        head = named ? (Py_INCREF(name), name) : (Py_INCREF(k), k);
        if (!PyUnicode_Check(head)) {
            Py_DECREF(head);
            return 1;
        }
    }
    if (head == NULL)
        return -1;
    Py_INCREF(s_empty);
    return set(me, head, cat(head, s_space), s_empty, 1);
}

/* spell_all(types) -> [spelling of every id], or None: refused (_speller says why) */
static PyObject *py_spell_all(PyObject *self, PyObject *args)
{
    PyObject *types;
    (void)self;
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "_cmodel.configure() was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &types))
        return NULL;
    Speller sp = {PySequence_Fast_ITEMS(types), PyList_GET_SIZE(types), NULL};
    sp.e = PyMem_Calloc(sp.n ? sp.n : 1, sizeof(Entry));
    if (!sp.e)
        return PyErr_NoMemory();
    PyObject *out = PyList_New(sp.n);
    int rc = out ? 0 : -1;
    for (Py_ssize_t i = 0; rc == 0 && i < sp.n; i++) {
        if (sp.e[i].s == NULL)
            rc = parts(&sp, i, 0);
        if (rc == 0 && sp.e[i].nest > MAX_DECL_DEPTH + 1)
            rc = 1;
        if (rc == 0) {
            Py_INCREF(sp.e[i].s);
            PyList_SET_ITEM(out, i, sp.e[i].s);
        }
    }
    for (Py_ssize_t i = 0; i < sp.n; i++) {
        Py_XDECREF(sp.e[i].s);
        Py_XDECREF(sp.e[i].left);
        Py_XDECREF(sp.e[i].right);
    }
    PyMem_Free(sp.e);
    if (rc != 0) {
        Py_XDECREF(out);
        if (rc < 0 && PyErr_Occurred())
            return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return out;
}

/* ---- surftrace's flattened members (surftrace.flat_members over a graph) ------------- */

#define MAX_NESTING 256

typedef struct {
    PyObject **types;
    Py_ssize_t n;
    PyObject **spelled;
    long long ptr_size;
    /* per member type id: the element once qualifiers and arrays are peeled (-1: not yet),
     * its dimensions ("[2][4]"), and the leaf's (spelling, bytes) */
    Py_ssize_t *elem;
    PyObject **dims;
    long long *leaf_bytes;
    char *leaf_done;
    PyObject *rows;
    PyObject *sid;
} Flat;

#define MSLOT(o, i) (*(PyObject **)((char *)(o) + moff[i]))

/* an exact int of at most 64 bits, or 0 (refused) */
static int int64_of(PyObject *o, long long *v)
{
    if (!PyLong_CheckExact(o))
        return 0;
    int over;
    *v = PyLong_AsLongLongAndOverflow(o, &over);
    if (over || (*v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

static long long floordiv(long long a, long long b)
{
    long long q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* model.TypeGraph.sizeof: 1 and *has = 0 for None; 0 refused */
static int size_of(Flat *f, Py_ssize_t tid, long long *out, int *has)
{
    PyObject *t = f->types[tid];
    long long mult = 1, v;
    for (int i = 0; i < MAX_CHAIN; i++) {
        if (!Py_IS_TYPE(t, type_cls))
            return 0;
        PyObject *size = SLOT(t, F_SIZE), *k = SLOT(t, F_KIND), *ref = SLOT(t, F_REF);
        if (!model_kind(k))
            return 0;
        if (size != Py_None) {
            if (!int64_of(size, &v) || __builtin_mul_overflow(mult, v, out))
                return 0;
            *has = 1;
            return 1;
        }
        int transparent = k == k_typedef || k == k_const || k == k_volatile ||
                          k == k_restrict || k == k_type_tag;
        if ((transparent || k == k_array) && ref != Py_None) {
            if (k == k_array) {
                PyObject *ne = SLOT(t, F_NELEMS);
                long long n = 0;
                if (ne != Py_None && !int64_of(ne, &n))
                    return 0;
                if (__builtin_mul_overflow(mult, n, &mult))
                    return 0;
            }
            long long r;
            if (!int64_of(ref, &r) || r < 0 || r >= f->n)
                return 0;
            t = f->types[r];
        } else if (k == k_ptr) {
            if (__builtin_mul_overflow(mult, f->ptr_size, out))
                return 0;
            *has = 1;
            return 1;
        } else {
            *has = 0;
            return 1;
        }
    }
    return 0;                                   /* TypeCycle */
}

/* surftrace.TypeAccess.peel, memoized: 1 done, 0 refused, -1 error */
static int peel(Flat *f, Py_ssize_t tid)
{
    if (f->elem[tid] >= 0)
        return 1;
    PyObject *parts = PyList_New(0);
    if (!parts)
        return -1;
    Py_ssize_t mt = tid;
    int hops = 0;
    for (;;) {
        PyObject *t = f->types[mt];
        if (!Py_IS_TYPE(t, type_cls))
            goto refuse;
        PyObject *k = SLOT(t, F_KIND);
        if (!model_kind(k))
            goto refuse;
        if (k != k_const && k != k_volatile && k != k_restrict && k != k_type_tag &&
                k != k_array)
            break;
        if (k == k_array) {
            PyObject *ne = SLOT(t, F_NELEMS), *d;
            int truth = PyObject_IsTrue(ne);
            if (truth < 0)
                goto error;
            d = truth ? PyUnicode_FromFormat("[%S]", ne) : PyUnicode_FromString("[0]");
            if (!d || PyList_Append(parts, d)) {
                Py_XDECREF(d);
                goto error;
            }
            Py_DECREF(d);
        }
        long long r;
        if (!int64_of(SLOT(t, F_REF), &r) || r < 0 || r >= f->n || ++hops > MAX_CHAIN)
            goto refuse;
        mt = (Py_ssize_t)r;
    }
    PyObject *dims = PyUnicode_Join(s_empty, parts);
    Py_DECREF(parts);
    if (!dims)
        return -1;
    f->elem[tid] = mt;
    f->dims[tid] = dims;
    return 1;
refuse:
    Py_DECREF(parts);
    return 0;
error:
    Py_DECREF(parts);
    return -1;
}

static int add_row(Flat *f, PyObject *name, PyObject *tstr, long long off, long long nbytes,
                   PyObject *bits)
{
    PyObject *row = name && bits ? Py_BuildValue("(OOOLLO)", f->sid, tstr, name, off, nbytes,
                                                 bits) : NULL;
    Py_XDECREF(name);
    Py_XDECREF(bits);
    if (!row || PyList_Append(f->rows, row)) {
        Py_XDECREF(row);
        return -1;
    }
    Py_DECREF(row);
    return 0;
}

/* surftrace._flat: 1 done, 0 refused, -1 error.  `path` holds `depth` type ids. */
static int flat(Flat *f, Py_ssize_t tid, PyObject *prefix, long long base_bits,
                Py_ssize_t *path, int depth)
{
    if (depth > MAX_NESTING)
        return 0;
    PyObject *t = f->types[tid], *members;
    if (!Py_IS_TYPE(t, type_cls))
        return 0;
    members = SLOT(t, F_MEMBERS);
    if (members == Py_None)
        return 1;
    if (!PyList_CheckExact(members))
        return 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(members); i++) {
        PyObject *m = PyList_GET_ITEM(members, i);
        if (!Py_IS_TYPE(m, member_cls))
            return 0;
        long long moff_bits, mtype, bit_size;
        if (!int64_of(MSLOT(m, M_BIT_OFFSET), &moff_bits) ||
                !int64_of(MSLOT(m, M_TYPE), &mtype) || mtype < 0 || mtype >= f->n ||
                !int64_of(MSLOT(m, M_BIT_SIZE), &bit_size))
            return 0;
        long long bit_off;
        if (__builtin_add_overflow(base_bits, moff_bits, &bit_off))
            return 0;
        int rc = peel(f, (Py_ssize_t)mtype);
        if (rc <= 0)
            return rc;
        Py_ssize_t mt = f->elem[mtype];
        PyObject *dims = f->dims[mtype], *name = MSLOT(m, M_NAME);
        PyObject *et = f->types[mt];
        PyObject *ek = SLOT(et, F_KIND);
        if (PyUnicode_GET_LENGTH(dims) == 0 && (ek == k_struct || ek == k_union)) {
            PyObject *inner = SLOT(et, F_MEMBERS);
            if (inner != Py_None && !PyList_CheckExact(inner))
                return 0;
            /* an embedded struct's members go in with a prefix (none when it is
             * anonymous); one with no members is a leaf, named or not */
            if (inner != Py_None && PyList_GET_SIZE(inner) > 0) {
                for (int j = 0; j < depth; j++)
                    if (path[j] == mt)
                        return 0;                   /* contains itself */
                PyObject *inner_prefix;
                if (name == Py_None) {
                    Py_INCREF(prefix);
                    inner_prefix = prefix;
                } else {
                    PyObject *pn = PyUnicode_Concat(prefix, name);
                    inner_prefix = pn ? PyUnicode_Concat(pn, s_dot) : NULL;
                    Py_XDECREF(pn);
                    if (!inner_prefix)
                        return -1;
                }
                path[depth] = mt;
                rc = flat(f, mt, inner_prefix, bit_off, path, depth + 1);
                Py_DECREF(inner_prefix);
                if (rc <= 0)
                    return rc;
                continue;
            }
        }
        int named = PyObject_IsTrue(name);
        if (named < 0)
            return -1;
        PyObject *full;
        if (named) {
            PyObject *pn = PyUnicode_Concat(prefix, name);
            full = pn ? PyUnicode_Concat(pn, dims) : NULL;
            Py_XDECREF(pn);
        } else {
            full = PyUnicode_Concat(prefix, dims);
        }
        if (!full)
            return -1;
        if (bit_size) {
            long long unit;
            int has;
            if (!size_of(f, mt, &unit, &has)) {
                Py_DECREF(full);
                return 0;
            }
            if (!has || unit == 0)
                unit = 4;
            long long unit_bits, start, end;
            if (__builtin_mul_overflow(unit, 8, &unit_bits) || unit_bits <= 0) {
                Py_DECREF(full);
                return 0;
            }
            start = floordiv(bit_off, unit_bits) * unit_bits;
            if (__builtin_add_overflow(bit_off, bit_size, &end)) {
                Py_DECREF(full);
                return 0;
            }
            if (end > start + unit_bits)
                start = bit_off - (bit_off - floordiv(bit_off, 8) * 8);
            PyObject *bits = PyUnicode_FromFormat("%lld:%lld", bit_off - start, bit_size);
            if (add_row(f, full, f->spelled[mt], floordiv(start, 8), unit, bits))
                return -1;
        } else {
            if (!f->leaf_done[mtype]) {
                long long nbytes;
                int has;
                if (!size_of(f, (Py_ssize_t)mtype, &nbytes, &has)) {
                    Py_DECREF(full);
                    return 0;
                }
                f->leaf_bytes[mtype] = has ? nbytes : 0;
                f->leaf_done[mtype] = 1;
            }
            Py_INCREF(s_empty);
            if (add_row(f, full, f->spelled[mt], floordiv(bit_off, 8), f->leaf_bytes[mtype],
                        s_empty))
                return -1;
        }
    }
    return 1;
}

/* the start of a walk over (types, spelled): 1 set up, 0 refused (the lists differ in
   length), -1 error (configure() not called) */
static int start_walk(Flat *f, PyObject *types, PyObject *spelled, long long ptr_size)
{
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "_cmodel.configure() was not called");
        return -1;
    }
    memset(f, 0, sizeof *f);
    f->types = PySequence_Fast_ITEMS(types);
    f->n = PyList_GET_SIZE(types);
    f->ptr_size = ptr_size;
    if (PyList_GET_SIZE(spelled) != f->n)
        return 0;
    f->spelled = PySequence_Fast_ITEMS(spelled);
    return 1;
}

/* flat_rows(types, spelled, ptr_size, tids) -> (counts, rows): the members rows
 * (sid, type, name, offset, bytes, bits) of the structs `tids`, sid = position + 1, and how
 * many rows each has; or None: refused (surftrace.flat_members says why) */
static PyObject *py_flat_rows(PyObject *self, PyObject *args)
{
    PyObject *types, *spelled, *tids;
    long long ptr_size;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!LO!", &PyList_Type, &types, &PyList_Type, &spelled,
                          &ptr_size, &PyList_Type, &tids))
        return NULL;
    Flat f;
    int started = start_walk(&f, types, spelled, ptr_size);
    if (started <= 0)
        return started < 0 ? NULL : Py_NewRef(Py_None);
    Py_ssize_t n = f.n ? f.n : 1;
    f.elem = PyMem_Malloc(n * sizeof(Py_ssize_t));
    f.dims = PyMem_Calloc(n, sizeof(PyObject *));
    f.leaf_bytes = PyMem_Malloc(n * sizeof(long long));
    f.leaf_done = PyMem_Calloc(n, 1);
    Py_ssize_t *path = PyMem_Malloc((MAX_NESTING + 2) * sizeof(Py_ssize_t));
    PyObject *counts = PyList_New(PyList_GET_SIZE(tids)), *result = NULL;
    f.rows = PyList_New(0);
    int rc = 1;
    if (!f.elem || !f.dims || !f.leaf_bytes || !f.leaf_done || !path) {
        PyErr_NoMemory();
        rc = -1;
    }
    if (!counts || !f.rows)
        rc = -1;
    for (Py_ssize_t i = 0; rc > 0 && i < f.n; i++)
        f.elem[i] = -1;
    for (Py_ssize_t i = 0; rc > 0 && i < PyList_GET_SIZE(tids); i++) {
        long long tid;
        if (!int64_of(PyList_GET_ITEM(tids, i), &tid) || tid < 0 || tid >= f.n) {
            rc = 0;
            break;
        }
        Py_ssize_t before = PyList_GET_SIZE(f.rows);
        f.sid = PyLong_FromSsize_t(i + 1);
        if (!f.sid) {
            rc = -1;
            break;
        }
        path[0] = (Py_ssize_t)tid;
        rc = flat(&f, (Py_ssize_t)tid, s_empty, 0, path, 1);
        Py_CLEAR(f.sid);
        if (rc > 0)
            PyList_SET_ITEM(counts, i, PyLong_FromSsize_t(PyList_GET_SIZE(f.rows) - before));
        if (rc > 0 && PyList_GET_ITEM(counts, i) == NULL)
            rc = -1;
    }
    if (rc > 0)
        result = PyTuple_Pack(2, counts, f.rows);
    else if (rc == 0 && !PyErr_Occurred()) {
        Py_INCREF(Py_None);
        result = Py_None;
    }
    if (f.dims)
        for (Py_ssize_t i = 0; i < f.n; i++)
            Py_XDECREF(f.dims[i]);
    PyMem_Free(f.elem);
    PyMem_Free(f.dims);
    PyMem_Free(f.leaf_bytes);
    PyMem_Free(f.leaf_done);
    PyMem_Free(path);
    Py_XDECREF(counts);
    Py_XDECREF(f.rows);
    return result;
}

/* ---- surftrace.type_rows ---------------------------------------------------------- */

/* model.TypeGraph.strip: 1 and *out, or 0 refused (a cycle, a bad reference) */
static int strip_of(Flat *f, Py_ssize_t tid, Py_ssize_t *out)
{
    for (int i = 0; i < MAX_CHAIN; i++) {
        PyObject *t = f->types[tid];
        if (!Py_IS_TYPE(t, type_cls))
            return 0;
        PyObject *k = SLOT(t, F_KIND), *ref = SLOT(t, F_REF);
        if (!model_kind(k))
            return 0;
        int transparent = k == k_typedef || k == k_const || k == k_volatile ||
                          k == k_restrict || k == k_type_tag;
        if (!transparent || ref == Py_None) {
            *out = tid;
            return 1;
        }
        long long r;
        if (!int64_of(ref, &r) || r < 0 || r >= f->n)
            return 0;
        tid = (Py_ssize_t)r;
    }
    return 0;
}

/* type_rows(types, spelled, ptr_size): surftrace.type_rows' rows, or None (refused) */
static PyObject *py_type_rows(PyObject *self, PyObject *args)
{
    PyObject *types, *spelled;
    long long ptr_size;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!L", &PyList_Type, &types, &PyList_Type, &spelled,
                          &ptr_size))
        return NULL;
    Flat f;
    int started = start_walk(&f, types, spelled, ptr_size);
    if (started <= 0)
        return started < 0 ? NULL : Py_NewRef(Py_None);
    PyObject **sp = f.spelled;
    PyObject *seen = PyDict_New(), *result = NULL, *void_ptr = NULL;
    int rc = seen ? 1 : -1;
    for (Py_ssize_t tid = 0; rc > 0 && tid < f.n; tid++) {
        PyObject *t = f.types[tid];
        if (!Py_IS_TYPE(t, type_cls) || !model_kind(SLOT(t, F_KIND))) {
            rc = 0;
            break;
        }
        PyObject *k = SLOT(t, F_KIND);
        if (k != k_int && k != k_float && k != k_typedef && k != k_enum && k != k_ptr &&
                k != k_void)
            continue;
        int has = PyDict_Contains(seen, sp[tid]);
        if (has != 0) {
            rc = has < 0 ? -1 : 1;
            continue;
        }
        Py_ssize_t base;
        long long size = 0;
        int known = 0;
        if (!strip_of(&f, tid, &base) || !size_of(&f, tid, &size, &known)) {
            rc = 0;
            break;
        }
        PyObject *v = Py_BuildValue("(OL)", sp[base], known ? size : 0LL);
        if (v == NULL || PyDict_SetItem(seen, sp[tid], v) < 0)
            rc = -1;
        Py_XDECREF(v);
    }
    if (rc > 0) {
        void_ptr = PyUnicode_FromString("void *");
        PyObject *v = void_ptr ? Py_BuildValue("(OL)", void_ptr, ptr_size) : NULL;
        if (v == NULL || PyDict_SetDefault(seen, void_ptr, v) == NULL)
            rc = -1;
        Py_XDECREF(v);
    }
    if (rc > 0 && (result = PyList_New(0)) != NULL) {
        Py_ssize_t pos = 0, i = 1;
        PyObject *name, *v;
        while (PyDict_Next(seen, &pos, &name, &v)) {
            PyObject *row = Py_BuildValue("(nOOO)", i++, name, PyTuple_GET_ITEM(v, 0),
                                          PyTuple_GET_ITEM(v, 1));
            if (row == NULL || PyList_Append(result, row) < 0) {
                Py_XDECREF(row);
                Py_CLEAR(result);
                break;
            }
            Py_DECREF(row);
        }
    } else if (rc == 0 && !PyErr_Occurred()) {
        Py_INCREF(Py_None);
        result = Py_None;
    }
    Py_XDECREF(seen);
    Py_XDECREF(void_ptr);
    return result;
}

/* ---- surftrace.function_rows ------------------------------------------------------ */

static PyObject *a_name, *a_proto, *a_static, *a_file, *a_line, *a_module, *s_static_,
                *s_lbracket, *s_rbracket, *s_dots_json;

/* the spelling of type id `ref` (None: 0), or NULL (refused, no exception) */
static PyObject *spelled_at(PyObject **sp, Py_ssize_t n, PyObject *ref)
{
    long long r = 0;
    if (ref != Py_None && (!int64_of(ref, &r) || r < 0 || r >= n))
        return NULL;
    return sp[r];
}

/* (args as JSON, ret) of prototype `proto` (surftrace.signature); NULL with no exception:
   refused */
static PyObject *signature_of(PyObject **types, PyObject **sp, Py_ssize_t n, Py_ssize_t proto,
                              int is_static, PyObject *json_str)
{
    PyObject *t = types[proto];
    if (!Py_IS_TYPE(t, type_cls))
        return NULL;
    PyObject *params = SLOT(t, F_PARAMS), *ref = SLOT(t, F_REF);
    int variadic = PyObject_IsTrue(SLOT(t, F_VARIADIC));
    if (variadic < 0)
        return NULL;
    if (params != Py_None && !PyList_CheckExact(params))
        return NULL;
    Py_ssize_t np = params == Py_None ? 0 : PyList_GET_SIZE(params);
    PyObject *items = PyList_New(0), *result = NULL, *inner = NULL, *args = NULL, *ret;
    if (items == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < np; i++) {
        PyObject *p = PyList_GET_ITEM(params, i);
        if (!Py_IS_TYPE(p, param_cls))
            goto done;
        PyObject *s = spelled_at(sp, n, *(PyObject **)((char *)p + param_type_off));
        if (s == NULL || !PyUnicode_CheckExact(s))
            goto done;
        PyObject *j = PyObject_CallOneArg(json_str, s);
        if (j == NULL || PyList_Append(items, j) < 0) {
            Py_XDECREF(j);
            goto done;
        }
        Py_DECREF(j);
    }
    if (variadic && PyList_Append(items, s_dots_json) < 0)
        goto done;
    ret = spelled_at(sp, n, ref);
    if (ret == NULL || !PyUnicode_CheckExact(ret))
        goto done;
    if ((inner = PyUnicode_Join(s_comma, items)) == NULL)
        goto done;
    if ((args = PyUnicode_FromFormat("[%U]", inner)) == NULL)
        goto done;
    if (is_static)
        result = Py_BuildValue("(ON)", args, PyUnicode_Concat(s_static_, ret));
    else
        result = PyTuple_Pack(2, args, ret);
done:
    Py_DECREF(items);
    Py_XDECREF(inner);
    Py_XDECREF(args);
    return result;
}

/* function_rows(types, functions, spelled, json_str, null): surftrace.function_rows'
   (files, funs), or None (refused) */
static PyObject *py_function_rows(PyObject *self, PyObject *args)
{
    PyObject *types, *functions, *spelled, *json_str, *null;
    (void)self;
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "_cmodel.configure() was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!O!OO", &PyList_Type, &types, &PyList_Type, &functions,
                          &PyList_Type, &spelled, &json_str, &null))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(types);
    if (PyList_GET_SIZE(spelled) != n)
        Py_RETURN_NONE;
    if (a_name == NULL) {
        const char *words[] = {"name", "proto", "static", "file", "line", "module", "static ",
                               "[", "]", "\"...\""};
        PyObject **dest[] = {&a_name, &a_proto, &a_static, &a_file, &a_line, &a_module,
                             &s_static_, &s_lbracket, &s_rbracket, &s_dots_json};
        for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
            if ((*dest[i] = PyUnicode_InternFromString(words[i])) == NULL)
                return NULL;
    }
    PyObject **ty = PySequence_Fast_ITEMS(types), **sp = PySequence_Fast_ITEMS(spelled);
    PyObject **sigs = PyMem_Calloc(2 * (n ? n : 1), sizeof(PyObject *));
    PyObject *files = PyDict_New(), *funs = PyList_New(0), *result = NULL;
    int rc = (sigs && files && funs) ? 1 : -1;
    if (!sigs)
        PyErr_NoMemory();
    for (Py_ssize_t i = 0; rc > 0 && i < PyList_GET_SIZE(functions); i++) {
        PyObject *fn = PyList_GET_ITEM(functions, i);
        PyObject *name = PyObject_GetAttr(fn, a_name), *proto = PyObject_GetAttr(fn, a_proto),
                 *st = PyObject_GetAttr(fn, a_static), *file = PyObject_GetAttr(fn, a_file),
                 *line = PyObject_GetAttr(fn, a_line), *module = PyObject_GetAttr(fn, a_module);
        long long pid;
        int is_static = st ? PyObject_IsTrue(st) : -1;
        if (!name || !proto || !file || !line || !module || is_static < 0) {
            PyErr_Clear();
            rc = 0;
        } else if (!int64_of(proto, &pid) || pid < 0 || pid >= n) {
            rc = 0;
        } else {
            PyObject **sig = &sigs[2 * pid + is_static];
            if (*sig == NULL && (*sig = signature_of(ty, sp, n, (Py_ssize_t)pid, is_static,
                                                     json_str)) == NULL) {
                if (PyErr_Occurred())
                    PyErr_Clear();       /* the Python code raises it */
                rc = 0;
            }
            int has_file = rc > 0 ? PyObject_IsTrue(file) : 0;
            if (has_file < 0) {
                PyErr_Clear();
                rc = 0;
            }
            PyObject *key = has_file ? file : s_empty;
            PyObject *fid = rc > 0 ? PyDict_GetItemWithError(files, key) : NULL;
            if (rc > 0 && fid == NULL) {
                if (PyErr_Occurred()) {  /* unhashable: the Python code raises it */
                    PyErr_Clear();
                    rc = 0;
                } else {
                    fid = PyLong_FromSsize_t(PyDict_GET_SIZE(files) + 1);
                    if (fid == NULL || PyDict_SetItem(files, key, fid) < 0)
                        rc = -1;
                    Py_XDECREF(fid);     /* the dict holds it */
                }
            }
            if (rc > 0) {
                PyObject *row = PyTuple_Pack(6, name, PyTuple_GET_ITEM(*sig, 0),
                                             PyTuple_GET_ITEM(*sig, 1),
                                             line == Py_None ? null : line, fid,
                                             module == Py_None ? null : module);
                if (row == NULL || PyList_Append(funs, row) < 0)
                    rc = -1;
                Py_XDECREF(row);
            }
        }
        Py_XDECREF(name);
        Py_XDECREF(proto);
        Py_XDECREF(st);
        Py_XDECREF(file);
        Py_XDECREF(line);
        Py_XDECREF(module);
    }
    if (rc > 0) {
        PyObject *frows = PyList_New(0);
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (frows && PyDict_Next(files, &pos, &k, &v)) {
            PyObject *row = PyTuple_Pack(2, v, k);
            if (row == NULL || PyList_Append(frows, row) < 0)
                Py_CLEAR(frows);
            Py_XDECREF(row);
        }
        if (frows)
            result = PyTuple_Pack(2, frows, funs);
        Py_XDECREF(frows);
    } else if (rc == 0 && !PyErr_Occurred()) {
        Py_INCREF(Py_None);
        result = Py_None;
    }
    if (sigs)
        for (Py_ssize_t i = 0; i < 2 * n; i++)
            Py_XDECREF(sigs[i]);
    PyMem_Free(sigs);
    Py_XDECREF(files);
    Py_XDECREF(funs);
    return result;
}

/* ---- check_types: the type part of model.check_references ---------------------------
 * True when every reference of every type is a type id of the graph and neither edge set
 * (by value, by spelling) has a cycle; None when check_references would raise (or for
 * anything it is not sure of), which then runs and says why. */
typedef struct {
    Py_ssize_t *start;      /* node i's edges: to[start[i] .. start[i + 1]) */
    Py_ssize_t *to;
    Py_ssize_t len, cap;
} Edges;

static int edge_add(Edges *e, Py_ssize_t j)
{
    if (e->len == e->cap) {
        Py_ssize_t cap = e->cap ? 2 * e->cap : 1024;
        Py_ssize_t *to = PyMem_Realloc(e->to, cap * sizeof *to);
        if (!to)
            return -1;
        e->to = to;
        e->cap = cap;
    }
    e->to[e->len++] = j;
    return 0;
}

/* Kahn's algorithm, as model._has_cycle: 1 cycle, 0 none, -1 no memory */
static int has_cycle(Edges *e, Py_ssize_t n)
{
    Py_ssize_t *indeg = PyMem_Calloc(n ? n : 1, sizeof *indeg);
    Py_ssize_t *todo = PyMem_Malloc((n ? n : 1) * sizeof *todo);
    if (!indeg || !todo) {
        PyMem_Free(indeg);
        PyMem_Free(todo);
        return -1;
    }
    for (Py_ssize_t k = 0; k < e->len; k++)
        indeg[e->to[k]]++;
    Py_ssize_t top = 0, seen = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (indeg[i] == 0)
            todo[top++] = i;
    while (top) {
        Py_ssize_t i = todo[--top];
        seen++;
        for (Py_ssize_t k = e->start[i]; k < e->start[i + 1]; k++)
            if (--indeg[e->to[k]] == 0)
                todo[top++] = e->to[k];
    }
    PyMem_Free(indeg);
    PyMem_Free(todo);
    return seen != n;
}

/* the type id `o` holds, or -1 when it is none of this graph's (an int in [0, n)) */
static Py_ssize_t check_id(PyObject *o, Py_ssize_t n)
{
    if (!PyLong_CheckExact(o))
        return -1;
    Py_ssize_t v = PyLong_AsSsize_t(o);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    return v >= 0 && v < n ? v : -1;
}

/* the ids of a list of members (`off`: their id slot) or params onto `e`: 0, or 1 refused,
 * -1 no memory */
static int add_ids(Edges *e, PyObject *list, PyTypeObject *cls, Py_ssize_t off, Py_ssize_t n)
{
    if (!PyList_Check(list))
        return 1;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(list); k++) {
        PyObject *x = PyList_GET_ITEM(list, k);
        if (!Py_IS_TYPE(x, cls))
            return 1;
        Py_ssize_t j = check_id(*(PyObject **)((char *)x + off), n);
        if (j < 0)
            return 1;
        if (edge_add(e, j) < 0)
            return -1;
    }
    return 0;
}

static PyObject *py_check_types(PyObject *self, PyObject *args)
{
    PyObject *list;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &list))
        return NULL;
    if (!configured)
        return PyErr_Format(PyExc_RuntimeError, "configure() was not called");
    Py_ssize_t n = PyList_GET_SIZE(list);
    Edges ev = {PyMem_Malloc((n + 1) * sizeof(Py_ssize_t)), NULL, 0, 0};
    Edges es = {PyMem_Malloc((n + 1) * sizeof(Py_ssize_t)), NULL, 0, 0};
    int rc = 1;                         /* 0 fine, 1 refused, -1 no memory */
    if (!ev.start || !es.start) {
        rc = -1;
        goto done;
    }
    for (Py_ssize_t tid = 0; tid < n; tid++) {
        PyObject *t = PyList_GET_ITEM(list, tid);
        ev.start[tid] = ev.len;
        es.start[tid] = es.len;
        if (!Py_IS_TYPE(t, type_cls))
            goto done;
        PyObject *k = SLOT(t, F_KIND), *ref = SLOT(t, F_REF);
        if (!model_kind(k))
            goto done;
        int r = 0;
        if (k == k_struct || k == k_union) {
            PyObject *members = SLOT(t, F_MEMBERS);
            if (members != Py_None)
                r = add_ids(&ev, members, member_cls, moff[M_TYPE], n);
        } else if (ref == Py_None) {
            PyObject *params = SLOT(t, F_PARAMS);
            if (k == k_func_proto && params != Py_None)
                r = add_ids(&es, params, param_cls, param_type_off, n);
        } else {
            Py_ssize_t j = check_id(ref, n);
            if (j < 0)
                goto done;
            if (k == k_ptr) {
                r = edge_add(&es, j);
            } else if (k == k_typedef) {
                r = edge_add(&ev, j);
            } else if (k == k_const || k == k_volatile || k == k_restrict ||
                       k == k_type_tag || k == k_array) {
                r = edge_add(&ev, j) < 0 || edge_add(&es, j) < 0 ? -1 : 0;
            } else if (k == k_func_proto) {
                PyObject *params = SLOT(t, F_PARAMS);
                r = edge_add(&es, j);
                if (r == 0 && params != Py_None)
                    r = add_ids(&es, params, param_cls, param_type_off, n);
            }
        }
        if (r != 0) {
            rc = r;
            goto done;
        }
    }
    ev.start[n] = ev.len;
    es.start[n] = es.len;
    int cv = has_cycle(&ev, n), cs = cv ? cv : has_cycle(&es, n);
    rc = cv < 0 || cs < 0 ? -1 : (cv || cs);
done:
    PyMem_Free(ev.start);
    PyMem_Free(ev.to);
    PyMem_Free(es.start);
    PyMem_Free(es.to);
    if (rc < 0)
        return PyErr_NoMemory();
    if (rc)
        Py_RETURN_NONE;
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"flat_rows", py_flat_rows, METH_VARARGS, "surftrace members rows of structs, or None."},
    {"type_rows", py_type_rows, METH_VARARGS, "surftrace types rows, or None (refused)."},
    {"function_rows", py_function_rows, METH_VARARGS,
     "surftrace (files, funs) rows, or None (refused)."},
    {"configure", py_configure, METH_VARARGS, "Set the model's classes and kinds."},
    {"spell_all", py_spell_all, METH_VARARGS, "Every type's C spelling, or None (refused)."},
    {"check_types", py_check_types, METH_VARARGS,
     "True when model.check_references finds the types fine, or None (refused)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cmodel", "The type model's hot loop (see model.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cmodel(void)
{
    return PyModule_Create(&module);
}
