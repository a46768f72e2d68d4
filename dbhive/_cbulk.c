/* The DB writer's bulk inserts through the SQLite C API (store._bulk_all).
 *
 * A bulk insert through the sqlite3 module is a multi-row `INSERT ... VALUES (?, ...), ...`
 * run over and over: SQLite compiles every row of such a statement into its program and
 * runs that, about three times what `INSERT ... SELECT` of the same rows costs inside
 * SQLite (measured on kt_types: 0.08 s against 0.03 s).  Here the rows come to SQLite as a
 * table-valued function over the Python list of row tuples, `dbhive_rows(?)`, and each
 * table is one `INSERT INTO t (...) SELECT ... FROM dbhive_rows(?)` (schema.
 * insert_select_sql: the same column expressions as insert_sql), on a connection of this
 * module's own to the DB file, all of a load() in one transaction.
 *
 * The values are exactly what the sqlite3 module binds: None -> NULL, int (and bool) ->
 * INTEGER, float -> REAL, str -> TEXT (UTF-8).  A value of any other type, an int past 64
 * bits, a str that is not valid UTF-8 (lone surrogates) or a row of the wrong length is not
 * written here: the transaction is rolled back, load() returns False, and the caller's
 * sqlite3 path writes the rows (and raises the module's own error, if it has one).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sqlite3.h>

static PyObject *operational_error;     /* sqlite3.OperationalError */

static int fail(sqlite3 *db, const char *what)
{
    PyErr_Format(operational_error, "%s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
    return -1;
}

/* ---- dbhive_rows(?): a table-valued function over a Python list of row tuples ----
 * `INSERT INTO t SELECT c0, c1, ... FROM dbhive_rows(?)`, the list bound as a pointer:
 * SQLite reads the values straight from the tuples (INSERT ... SELECT is SQLite's fast
 * insert; a multi-row VALUES statement compiles every row into its program). */
#define NCOL 16                          /* the widest table has 11 columns */
#define POINTER_TYPE "dbhive-rows"

static int refused;                      /* a value the sqlite3 module binds otherwise */

typedef struct {
    sqlite3_vtab_cursor base;
    PyObject *rows;                      /* borrowed: the caller holds the list */
    Py_ssize_t i, n;
} Cursor;

static int rows_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                        sqlite3_vtab **out, char **err)
{
    int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(c0, c1, c2, c3, c4, c5, c6, c7, c8, "
                                      "c9, c10, c11, c12, c13, c14, c15, src HIDDEN)");
    if (rc != SQLITE_OK)
        return rc;
    *out = sqlite3_malloc(sizeof(sqlite3_vtab));
    if (*out == NULL)
        return SQLITE_NOMEM;
    memset(*out, 0, sizeof(sqlite3_vtab));
    return SQLITE_OK;
}

static int rows_disconnect(sqlite3_vtab *vt)
{
    sqlite3_free(vt);
    return SQLITE_OK;
}

static int rows_best_index(sqlite3_vtab *vt, sqlite3_index_info *info)
{
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        if (c->iColumn == NCOL && c->op == SQLITE_INDEX_CONSTRAINT_EQ && c->usable) {
            info->aConstraintUsage[i].argvIndex = 1;
            info->aConstraintUsage[i].omit = 1;
            info->estimatedCost = 1.0;
            return SQLITE_OK;
        }
    }
    return SQLITE_CONSTRAINT;            /* only as dbhive_rows(?) */
}

static int rows_open(sqlite3_vtab *vt, sqlite3_vtab_cursor **out)
{
    Cursor *c = sqlite3_malloc(sizeof(Cursor));
    if (c == NULL)
        return SQLITE_NOMEM;
    memset(c, 0, sizeof(Cursor));
    *out = &c->base;
    return SQLITE_OK;
}

static int rows_close(sqlite3_vtab_cursor *cur)
{
    sqlite3_free(cur);
    return SQLITE_OK;
}

static int rows_filter(sqlite3_vtab_cursor *cur, int idx, const char *idx_str, int argc,
                       sqlite3_value **argv)
{
    Cursor *c = (Cursor *)cur;
    c->rows = argc == 1 ? sqlite3_value_pointer(argv[0], POINTER_TYPE) : NULL;
    c->i = 0;
    c->n = c->rows ? PyList_GET_SIZE(c->rows) : 0;
    return SQLITE_OK;
}

static int rows_next(sqlite3_vtab_cursor *cur)
{
    ((Cursor *)cur)->i++;
    return SQLITE_OK;
}

static int rows_eof(sqlite3_vtab_cursor *cur)
{
    Cursor *c = (Cursor *)cur;
    return c->i >= c->n;
}

static int rows_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *out)
{
    *out = ((Cursor *)cur)->i;
    return SQLITE_OK;
}

static int rows_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col)
{
    Cursor *c = (Cursor *)cur;
    PyObject *row = PyList_GET_ITEM(c->rows, c->i);     /* load() checked the shape */
    if (col >= PyTuple_GET_SIZE(row))
        goto refuse;
    PyObject *v = PyTuple_GET_ITEM(row, col);
    if (v == Py_None) {
        sqlite3_result_null(ctx);
    } else if (PyLong_CheckExact(v) || PyBool_Check(v)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (x == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            goto refuse;
        }
        sqlite3_result_int64(ctx, x);
    } else if (PyFloat_CheckExact(v)) {
        sqlite3_result_double(ctx, PyFloat_AS_DOUBLE(v));
    } else if (PyUnicode_CheckExact(v)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (s == NULL || n > INT_MAX) {  /* lone surrogates: the module's error, not ours */
            PyErr_Clear();
            goto refuse;
        }
        /* static: the str outlives the statement (the caller's list holds it) */
        sqlite3_result_text(ctx, s, (int)n, SQLITE_STATIC);
    } else {
        goto refuse;
    }
    return SQLITE_OK;
refuse:
    refused = 1;
    sqlite3_result_error(ctx, "a value left to the sqlite3 module", -1);
    return SQLITE_ERROR;
}

static sqlite3_module rows_module = {
    0, NULL /* eponymous only */, rows_connect, rows_best_index, rows_disconnect, NULL,
    rows_open, rows_close, rows_filter, rows_next, rows_eof, rows_column, rows_rowid,
};

/* one part: (INSERT ... SELECT ... FROM dbhive_rows(?), columns per row, rows);
   1 written, 0 refused, -1 error */
static int load_part(sqlite3 *db, PyObject *part)
{
    PyObject *sql, *rows;
    Py_ssize_t ncols;
    if (!PyArg_ParseTuple(part, "UnO!", &sql, &ncols, &PyList_Type, &rows))
        return -1;
    if (ncols < 1 || ncols > NCOL) {
        PyErr_SetString(PyExc_ValueError, "dbhive_rows: 1 to 16 columns");
        return -1;
    }
    for (Py_ssize_t r = 0; r < PyList_GET_SIZE(rows); r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) != ncols)
            return 0;                    /* the sqlite3 module's error, if any */
    }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(sql, &n);
    if (s == NULL)
        return -1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, s, (int)n, &st, NULL) != SQLITE_OK)
        return fail(db, "preparing an insert");
    int got = 1;
    refused = 0;
    if (sqlite3_bind_pointer(st, 1, rows, POINTER_TYPE, NULL) != SQLITE_OK)
        got = fail(db, "binding the rows");
    else if (sqlite3_step(st) != SQLITE_DONE)
        got = refused ? 0 : fail(db, "inserting rows");
    sqlite3_finalize(st);
    return got;
}

static PyObject *py_load(PyObject *self, PyObject *args)
{
    PyObject *path_obj, *parts;
    if (!PyArg_ParseTuple(args, "O&O!", PyUnicode_FSConverter, &path_obj, &PyList_Type, &parts))
        return NULL;
    sqlite3 *db = NULL;
    int got = -1;
    /* the file exists (the caller made its tables); never create one here */
    if (sqlite3_open_v2(PyBytes_AS_STRING(path_obj), &db, SQLITE_OPEN_READWRITE, NULL)
            != SQLITE_OK) {
        fail(db, "opening the DB");
        goto done;
    }
    /* a temp file renamed only when complete: no fsync; the journal in memory so that
       a refusal can roll back */
    if (sqlite3_create_module(db, "dbhive_rows", &rows_module, NULL) != SQLITE_OK ||
            sqlite3_exec(db, "PRAGMA synchronous=OFF; PRAGMA journal_mode=MEMORY; BEGIN",
                         NULL, NULL, NULL) != SQLITE_OK) {
        fail(db, "starting the transaction");
        goto done;
    }
    got = 1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts) && got == 1; i++)
        got = load_part(db, PyList_GET_ITEM(parts, i));
    if (got == 1 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        fail(db, "committing");
        got = -1;
    }
    if (got != 1)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
done:
    if (db != NULL)
        sqlite3_close(db);
    Py_DECREF(path_obj);
    if (got < 0)
        return NULL;
    return PyBool_FromLong(got);
}

static PyMethodDef methods[] = {
    {"load", py_load, METH_VARARGS,
     "load(path, [(insert_select_sql, ncols, rows), ...]) -> True, or False (rolled back) "
     "where a value is not one the sqlite3 module binds the same way."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cbulk", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cbulk(void)
{
    PyObject *sq = PyImport_ImportModule("sqlite3");
    if (sq == NULL)
        return NULL;
    operational_error = PyObject_GetAttrString(sq, "OperationalError");
    Py_DECREF(sq);
    if (operational_error == NULL)
        return NULL;
    return PyModule_Create(&module);
}
