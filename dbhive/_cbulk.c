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
 *
 * The values are read into C cells first (with the GIL), and SQLite reads the cells.  So
 * SQLite can run without the GIL: Writer is a thread of SQLite's own that takes the rows
 * of one table after another, in order, while the Python thread makes the next table's
 * rows (store.write_db; the statements are load()'s, in the same order).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
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

/* one value, as SQLite is to get it; `s` points into a str of a row list that is kept
   alive until SQLite is done with it */
typedef struct {
    int type;                            /* SQLITE_NULL, SQLITE_INTEGER, _FLOAT or _TEXT */
    int n;                               /* text length in bytes */
    union { sqlite3_int64 i; double d; const char *s; } v;
} Cell;

typedef struct {                         /* the rows a statement reads: nrows x ncols */
    Cell *cells;
    Py_ssize_t nrows;
    int ncols;
} Batch;

typedef struct {
    sqlite3_vtab_cursor base;
    Batch *batch;
    Py_ssize_t i;
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
    c->batch = argc == 1 ? sqlite3_value_pointer(argv[0], POINTER_TYPE) : NULL;
    c->i = 0;
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
    return c->batch == NULL || c->i >= c->batch->nrows;
}

static int rows_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *out)
{
    *out = ((Cursor *)cur)->i;
    return SQLITE_OK;
}

static int rows_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col)
{
    Cursor *c = (Cursor *)cur;
    if (col >= c->batch->ncols) {        /* a statement wider than its rows */
        sqlite3_result_error(ctx, "dbhive_rows: no such column", -1);
        return SQLITE_ERROR;
    }
    const Cell *v = &c->batch->cells[c->i * c->batch->ncols + col];
    switch (v->type) {
    case SQLITE_INTEGER: sqlite3_result_int64(ctx, v->v.i); break;
    case SQLITE_FLOAT: sqlite3_result_double(ctx, v->v.d); break;
    case SQLITE_TEXT: sqlite3_result_text(ctx, v->v.s, v->n, SQLITE_STATIC); break;
    default: sqlite3_result_null(ctx);
    }
    return SQLITE_OK;
}

static sqlite3_module rows_module = {
    0, NULL /* eponymous only */, rows_connect, rows_best_index, rows_disconnect, NULL,
    rows_open, rows_close, rows_filter, rows_next, rows_eof, rows_column, rows_rowid,
};

/* `rows` (a list of ncols-tuples) as cells (with the GIL): NULL with no error set where a
   row or a value is one the sqlite3 module binds otherwise (not a tuple of ncols; not
   None/int/bool/float/str; an int past 64 bits; a str that is not valid UTF-8) */
static Cell *to_cells(PyObject *rows, int ncols)
{
    Py_ssize_t nrows = PyList_GET_SIZE(rows);
    Cell *cells = PyMem_Malloc(sizeof(Cell) * (size_t)(nrows ? nrows : 1) * (size_t)ncols);
    if (cells == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    Cell *c = cells;
    for (Py_ssize_t r = 0; r < nrows; r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) != ncols)
            goto refuse;
        for (int col = 0; col < ncols; col++, c++) {
            PyObject *v = PyTuple_GET_ITEM(row, col);
            if (v == Py_None) {
                c->type = SQLITE_NULL;
            } else if (PyLong_CheckExact(v) || PyBool_Check(v)) {
                int overflow = 0;
                long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
                if (overflow || (x == -1 && PyErr_Occurred()))
                    goto refuse;
                c->type = SQLITE_INTEGER;
                c->v.i = x;
            } else if (PyFloat_CheckExact(v)) {
                c->type = SQLITE_FLOAT;
                c->v.d = PyFloat_AS_DOUBLE(v);
            } else if (PyUnicode_CheckExact(v)) {
                Py_ssize_t n;
                const char *s = PyUnicode_AsUTF8AndSize(v, &n);
                if (s == NULL || n > INT_MAX)  /* lone surrogates: the module's error */
                    goto refuse;
                c->type = SQLITE_TEXT;
                c->n = (int)n;
                c->v.s = s;
            } else {
                goto refuse;
            }
        }
    }
    return cells;
refuse:
    PyErr_Clear();
    PyMem_Free(cells);
    return NULL;
}

/* one statement over one batch (no GIL needed): 0 done, -1 SQLite's error in `db` */
static int insert_batch(sqlite3 *db, const char *sql, Batch *batch)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_pointer(st, 1, batch, POINTER_TYPE, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    sqlite3_finalize(st);
    return rc == SQLITE_OK ? 0 : -1;
}

/* the parts of a (sql, ncols, rows) tuple */
static int part_args(PyObject *part, const char **sql, int *ncols, PyObject **rows)
{
    PyObject *sql_obj;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(part, "UnO!", &sql_obj, &n, &PyList_Type, rows))
        return -1;
    if (n < 1 || n > NCOL) {
        PyErr_SetString(PyExc_ValueError, "dbhive_rows: 1 to 16 columns");
        return -1;
    }
    *ncols = (int)n;
    *sql = PyUnicode_AsUTF8(sql_obj);
    return *sql == NULL ? -1 : 0;
}

/* one part: (INSERT ... SELECT ... FROM dbhive_rows(?), columns per row, rows);
   1 written, 0 refused, -1 error */
static int load_part(sqlite3 *db, PyObject *part)
{
    const char *sql;
    int ncols;
    PyObject *rows;
    if (part_args(part, &sql, &ncols, &rows) < 0)
        return -1;
    Cell *cells = to_cells(rows, ncols);
    if (cells == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Batch batch = {cells, PyList_GET_SIZE(rows), ncols};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = insert_batch(db, sql, &batch);
    Py_END_ALLOW_THREADS
    PyMem_Free(cells);
    return rc < 0 ? fail(db, "inserting rows") : 1;
}

/* a connection of ours to the DB file (which exists: the caller made its tables), with
   dbhive_rows and an open transaction; NULL with the error set */
static sqlite3 *open_db(const char *path)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        fail(db, "opening the DB");
        sqlite3_close(db);
        return NULL;
    }
    /* a temp file renamed only when complete: no fsync; the journal in memory so that
       a refusal can roll back */
    if (sqlite3_create_module(db, "dbhive_rows", &rows_module, NULL) != SQLITE_OK ||
            sqlite3_exec(db, "PRAGMA synchronous=OFF; PRAGMA journal_mode=MEMORY; BEGIN",
                         NULL, NULL, NULL) != SQLITE_OK) {
        fail(db, "starting the transaction");
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

static PyObject *py_load(PyObject *self, PyObject *args)
{
    PyObject *path_obj, *parts;
    if (!PyArg_ParseTuple(args, "O&O!", PyUnicode_FSConverter, &path_obj, &PyList_Type, &parts))
        return NULL;
    sqlite3 *db = open_db(PyBytes_AS_STRING(path_obj));
    Py_DECREF(path_obj);
    if (db == NULL)
        return NULL;
    int got = 1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts) && got == 1; i++)
        got = load_part(db, PyList_GET_ITEM(parts, i));
    if (got == 1) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        Py_END_ALLOW_THREADS
        if (rc != SQLITE_OK)
            got = fail(db, "committing");
    }
    if (got != 1)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    if (got < 0)
        return NULL;
    return PyBool_FromLong(got);
}

/* ---- Writer: the same statements on a thread of SQLite's own ------------------------ */

typedef struct Job {
    struct Job *next;
    char *sql;                           /* PyMem copy */
    Batch batch;                         /* cells NULL: `sql` is a plain statement */
    PyObject *keep;                      /* the row list the cells point into */
} Job;

typedef struct {
    PyObject_HEAD
    sqlite3 *db;
    pthread_t thread;
    int running;                         /* the thread is started and not yet joined */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    Job *head, *tail;                    /* to do, in order */
    Job *done;                           /* done: freed with the GIL (their row lists) */
    int closing;                         /* no more jobs: 1 commit, 2 give up */
    int failed;
    char err[512];
} Writer;

static void *writer_main(void *arg)
{
    Writer *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (w->head == NULL && !w->closing)
            pthread_cond_wait(&w->cv, &w->mu);
        Job *j = w->head;
        if (j != NULL) {
            w->head = j->next;
            if (w->head == NULL)
                w->tail = NULL;
        }
        int closing = w->closing, failed = w->failed;
        pthread_mutex_unlock(&w->mu);
        if (j == NULL) {                 /* closing, nothing left */
            if (closing == 1 && !failed &&
                    sqlite3_exec(w->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
                snprintf(w->err, sizeof w->err, "committing: %s", sqlite3_errmsg(w->db));
                w->failed = 1;
            }
            return NULL;
        }
        if (!failed && closing != 2) {
            int rc = j->batch.cells != NULL ? insert_batch(w->db, j->sql, &j->batch)
                     : (sqlite3_exec(w->db, j->sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1);
            if (rc < 0) {
                pthread_mutex_lock(&w->mu);
                snprintf(w->err, sizeof w->err, "%s: %s",
                         j->batch.cells != NULL ? "inserting rows" : "running a statement",
                         sqlite3_errmsg(w->db));
                w->failed = 1;
                pthread_mutex_unlock(&w->mu);
            }
        }
        pthread_mutex_lock(&w->mu);
        j->next = w->done;
        w->done = j;
        pthread_mutex_unlock(&w->mu);
    }
}

static void free_jobs(Job *j)            /* with the GIL */
{
    while (j != NULL) {
        Job *next = j->next;
        PyMem_Free(j->batch.cells);
        PyMem_Free(j->sql);
        Py_XDECREF(j->keep);
        PyMem_Free(j);
        j = next;
    }
}

/* stop taking jobs, wait for the thread (without the GIL), free what it was given */
static void writer_join(Writer *w, int how)
{
    if (w->running) {
        pthread_mutex_lock(&w->mu);
        w->closing = how;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        Py_BEGIN_ALLOW_THREADS
        pthread_join(w->thread, NULL);
        Py_END_ALLOW_THREADS
        w->running = 0;
    }
    free_jobs(w->done);
    w->done = NULL;
    free_jobs(w->head);
    w->head = w->tail = NULL;
    if (w->db != NULL) {
        sqlite3_close(w->db);
        w->db = NULL;
    }
}

static int writer_put(Writer *w, const char *sql, Cell *cells, Py_ssize_t nrows, int ncols,
                      PyObject *keep)
{
    Job *j = PyMem_Malloc(sizeof(Job));
    size_t n = strlen(sql) + 1;
    char *copy = PyMem_Malloc(n);
    if (j == NULL || copy == NULL) {
        PyMem_Free(j);
        PyMem_Free(copy);
        PyMem_Free(cells);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(copy, sql, n);
    j->next = NULL;
    j->sql = copy;
    j->batch = (Batch){cells, nrows, ncols};
    j->keep = Py_XNewRef(keep);
    pthread_mutex_lock(&w->mu);
    Job *done = w->done;                 /* what the thread finished meanwhile: free now */
    w->done = NULL;
    if (w->tail != NULL)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    free_jobs(done);
    return 0;
}

static int writer_init(Writer *w, PyObject *args, PyObject *kw)
{
    PyObject *path_obj;
    if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &path_obj))
        return -1;
    if (w->running || w->db != NULL) {
        Py_DECREF(path_obj);
        PyErr_SetString(PyExc_RuntimeError, "Writer: already open");
        return -1;
    }
    w->db = open_db(PyBytes_AS_STRING(path_obj));
    Py_DECREF(path_obj);
    if (w->db == NULL)
        return -1;
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        sqlite3_close(w->db);
        w->db = NULL;
        PyErr_SetString(PyExc_OSError, "Writer: cannot start a thread");
        return -1;
    }
    w->running = 1;
    return 0;
}

static PyObject *writer_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    Writer *w = (Writer *)type->tp_alloc(type, 0);
    if (w != NULL) {
        pthread_mutex_init(&w->mu, NULL);
        pthread_cond_init(&w->cv, NULL);
    }
    return (PyObject *)w;
}

static void writer_dealloc(Writer *w)
{
    writer_join(w, 2);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static int writer_usable(Writer *w)
{
    if (!w->running) {
        PyErr_SetString(PyExc_RuntimeError, "Writer: closed");
        return 0;
    }
    return 1;
}

static PyObject *writer_rows(Writer *w, PyObject *part)
{
    const char *sql;
    int ncols;
    PyObject *rows;
    if (!writer_usable(w) || part_args(part, &sql, &ncols, &rows) < 0)
        return NULL;
    Cell *cells = to_cells(rows, ncols);
    if (cells == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_FALSE;                 /* nothing queued: the caller writes these rows */
    }
    if (writer_put(w, sql, cells, PyList_GET_SIZE(rows), ncols, rows) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

static PyObject *writer_sql(Writer *w, PyObject *arg)
{
    if (!writer_usable(w))
        return NULL;
    const char *sql = PyUnicode_AsUTF8(arg);
    if (sql == NULL || writer_put(w, sql, NULL, 0, 0, NULL) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *writer_end(Writer *w, int how)
{
    if (!writer_usable(w))
        return NULL;
    writer_join(w, how);
    if (w->failed) {
        PyErr_SetString(operational_error, w->err);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *writer_finish(Writer *w, PyObject *unused)
{
    return writer_end(w, 1);
}

static PyObject *writer_abort(Writer *w, PyObject *unused)
{
    return writer_end(w, 2);
}

static PyMethodDef writer_methods[] = {
    {"rows", (PyCFunction)writer_rows, METH_O,
     "rows((insert_select_sql, ncols, rows)) -> True (queued), or False where a value is "
     "not one the sqlite3 module binds the same way (nothing queued)."},
    {"sql", (PyCFunction)writer_sql, METH_O, "sql(statement): queue a statement."},
    {"finish", (PyCFunction)writer_finish, METH_NOARGS,
     "Run what is queued and commit; raises OperationalError if a statement failed."},
    {"abort", (PyCFunction)writer_abort, METH_NOARGS,
     "Stop (the statement running ends first), commit nothing; raises OperationalError if "
     "a statement had failed before."},
    {NULL, NULL, 0, NULL}
};

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dbhive._cbulk.Writer",
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Writer(path): the rows of load(), in order, inserted by a thread of its own "
              "without the GIL; finish() commits.",
    .tp_new = writer_new,
    .tp_init = (initproc)writer_init,
    .tp_dealloc = (destructor)writer_dealloc,
    .tp_methods = writer_methods,
};

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
    if (operational_error == NULL || PyType_Ready(&WriterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddObjectRef(m, "Writer", (PyObject *)&WriterType) < 0)
        Py_CLEAR(m);
    return m;
}
