/* The type model's one hot loop in C: every type's C spelling (model._speller, spelled for
 * every id in id order, as the DB writer needs them).
 *
 * The same cases in the same order as _speller, with the same memo: each id's (spelling,
 * left, right, nesting) made once from its target's.  What _speller would refuse or could
 * not do (nesting deeper than model.MAX_DECL_DEPTH: a reference cycle; a reference that is
 * no type id; an object that is no model.Type) makes spell_all() return None, and the
 * caller runs _speller, the reference, which raises its own error.
 * tests/test_spelling_c.py holds the two together.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define MAX_DECL_DEPTH 256
#define MAX_CHAIN (1 << 16)

enum { F_KIND, F_NAME, F_REF, F_NELEMS, F_PARAMS, F_VARIADIC, F_ENCODING, NF };
static const char *type_fields[] = {"kind", "name", "ref", "nelems", "params", "variadic",
                                    "encoding", NULL};
static PyTypeObject *type_cls, *param_cls;
static Py_ssize_t toff[NF], param_type_off;
static PyObject *k_ptr, *k_array, *k_func_proto, *k_const, *k_volatile, *k_restrict,
                *k_type_tag, *k_struct, *k_union, *k_enum, *k_fwd, *k_void, *k_int, *k_float,
                *k_typedef;
static PyObject *s_space, *s_star, *s_lparen_star, *s_rparen, *s_void, *s_dots, *s_comma,
                *s_anon, *s_empty;
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
    PyObject *t, *p;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!(OOOOOOOOOOOOOOO)", &PyType_Type, &t, &PyType_Type, &p,
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
    Py_INCREF(t);
    Py_INCREF(p);
    for (int i = 0; i < NF; i++)
        if ((toff[i] = slot_offset(type_cls, type_fields[i])) < 0)
            return NULL;
    if ((param_type_off = slot_offset(param_cls, "type")) < 0)
        return NULL;
    const char *words[] = {" ", "*", "(*", ")", "void", "...", ", ", "{...}", ""};
    PyObject **dest[] = {&s_space, &s_star, &s_lparen_star, &s_rparen, &s_void, &s_dots,
                         &s_comma, &s_anon, &s_empty};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if ((*dest[i] = PyUnicode_InternFromString(words[i])) == NULL)
            return NULL;
    configured = 1;
    Py_RETURN_NONE;
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
    /* the model's own kind strings only (_speller compares with ==: an equal string that
     * is not the model's is left to it) */
    if (k != k_ptr && k != k_array && k != k_func_proto && k != k_const && k != k_volatile &&
            k != k_restrict && k != k_type_tag && k != k_struct && k != k_union &&
            k != k_enum && k != k_fwd && k != k_void && k != k_int && k != k_float &&
            k != k_typedef)
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

static PyMethodDef methods[] = {
    {"configure", py_configure, METH_VARARGS, "Set the model's classes and kinds."},
    {"spell_all", py_spell_all, METH_VARARGS, "Every type's C spelling, or None (refused)."},
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
