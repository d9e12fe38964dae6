// pyfast._alloc: the caching allocator (common/allocator.h) as a NumPy memory handler
// (NEP 49), and the scope that installs it around pyfast's own allocations.
//
// NumPy keeps the current handler in a context variable and records in every array the
// handler that allocated it, so an array made inside the scope is freed by this allocator
// wherever it dies, and one made outside by NumPy's default. Written on the plain C API,
// not pybind11: the scope is entered once per pf.ops call and per autograd op, and a
// METH_NOARGS call plus a vectorcall wrapper cost tens of nanoseconds where pybind11's
// dispatch costs hundreds.
//
// NumPy's functions are taken from its C-API table (the `_ARRAY_API` capsule) at the
// indices NumPy fixes for them forever (its ABI), so building needs no NumPy headers.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstddef>
#include <cstdint>

#include "common/allocator.h"

namespace {

namespace mem = pyfast::memory;

// numpy/ndarraytypes.h's PyDataMemAllocator and PyDataMem_Handler, version 1.
struct DataMemAllocator {
    void* ctx;
    void* (*malloc)(void* ctx, std::size_t size);
    void* (*calloc)(void* ctx, std::size_t nelem, std::size_t elsize);
    void* (*realloc)(void* ctx, void* ptr, std::size_t new_size);
    void (*free)(void* ctx, void* ptr, std::size_t size);
};
struct DataMemHandler {
    char name[127];
    std::uint8_t version;
    DataMemAllocator allocator;
};

void* handler_malloc(void*, std::size_t size) { return mem::allocate(size); }
void* handler_calloc(void*, std::size_t nelem, std::size_t elsize) {
    std::size_t bytes;
    if (__builtin_mul_overflow(nelem, elsize, &bytes)) return nullptr;
    return mem::allocate_zeroed(bytes);
}
void* handler_realloc(void*, void* ptr, std::size_t size) { return mem::reallocate(ptr, size); }
void handler_free(void*, void* ptr, std::size_t) { mem::release(ptr); }

DataMemHandler handler = {"pyfast_caching", 1,
                          {nullptr, handler_malloc, handler_calloc, handler_realloc, handler_free}};

// NumPy C-API table indices (numpy/__multiarray_api.h).
constexpr int kGetFeatureVersion = 211, kSetHandler = 304, kGetHandler = 305;
constexpr unsigned kFeatureHandlers = 0x0000000f;  // NPY_1_22_API_VERSION

PyObject* (*set_handler)(PyObject*) = nullptr;
PyObject* (*get_handler)() = nullptr;
PyObject* capsule = nullptr;  // ours, alive for the process (arrays hold references too)
bool scope_enabled = true;    // set_enabled(False): scopes install nothing (A/B benchmarks)

bool load_numpy_api() {
    PyObject* mod = PyImport_ImportModule("numpy._core._multiarray_umath");
    if (!mod) {
        PyErr_Clear();
        mod = PyImport_ImportModule("numpy.core._multiarray_umath");
        if (!mod) return false;
    }
    PyObject* table = PyObject_GetAttrString(mod, "_ARRAY_API");
    Py_DECREF(mod);
    if (!table) return false;
    void** api = static_cast<void**>(PyCapsule_GetPointer(table, nullptr));
    Py_DECREF(table);  // the module keeps it; the table itself is static in NumPy
    if (!api) return false;
    auto feature = reinterpret_cast<unsigned (*)()>(api[kGetFeatureVersion]);
    if (feature() < kFeatureHandlers) {
        PyErr_SetString(PyExc_ImportError, "NumPy has no memory handlers (NumPy >= 1.22 needed)");
        return false;
    }
    set_handler = reinterpret_cast<PyObject* (*)(PyObject*)>(api[kSetHandler]);
    get_handler = reinterpret_cast<PyObject* (*)()>(api[kGetHandler]);
    return true;
}

// enter() -> token: installs the handler; the token is what was current (None when it
// already was ours, so nested scopes cost one context-variable read).
PyObject* enter_scope() {
    if (!scope_enabled) Py_RETURN_NONE;
    PyObject* current = get_handler();
    if (!current) return nullptr;
    if (current == capsule) {
        Py_DECREF(current);
        Py_RETURN_NONE;
    }
    Py_DECREF(current);
    return set_handler(capsule);  // the previous handler, a new reference
}

// Restores what enter_scope replaced; keeps a pending exception (the wrapped call's).
bool exit_scope(PyObject* token) {
    if (token == Py_None) {
        Py_DECREF(token);
        return true;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject* ours = set_handler(token);
    Py_DECREF(token);
    if (!ours) {
        if (type) {  // the call's own error wins
            PyErr_Clear();
            PyErr_Restore(type, value, tb);
        }
        return false;
    }
    Py_DECREF(ours);
    PyErr_Restore(type, value, tb);
    return true;
}

PyObject* py_enter(PyObject*, PyObject*) { return enter_scope(); }

PyObject* py_exit(PyObject*, PyObject* token) {
    Py_INCREF(token);
    if (!exit_scope(token)) return nullptr;
    Py_RETURN_NONE;
}

PyObject* py_stats(PyObject*, PyObject*) {
    const mem::Stats s = mem::stats();
    return Py_BuildValue("{s:n,s:n,s:n}", "held", static_cast<Py_ssize_t>(s.held), "in_use",
                         static_cast<Py_ssize_t>(s.in_use), "peak",
                         static_cast<Py_ssize_t>(s.peak));
}

PyObject* py_empty_cache(PyObject*, PyObject*) {
    std::size_t released;
    Py_BEGIN_ALLOW_THREADS
    released = mem::empty_cache();
    Py_END_ALLOW_THREADS
    return PyLong_FromSize_t(released);
}

PyObject* py_class_capacity(PyObject*, PyObject* arg) {
    const Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return nullptr;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "nbytes must be >= 0, got %zd", n);
        return nullptr;
    }
    return PyLong_FromSize_t(mem::class_capacity(static_cast<std::size_t>(n)));
}

PyObject* py_set_enabled(PyObject*, PyObject* flag) {
    const int on = PyObject_IsTrue(flag);
    if (on < 0) return nullptr;
    PyObject* was = scope_enabled ? Py_True : Py_False;
    scope_enabled = on != 0;
    Py_INCREF(was);
    return was;
}

PyObject* py_handler(PyObject*, PyObject*) {
    Py_INCREF(capsule);
    return capsule;
}

// ---- allocates(fn): fn run inside the scope -------------------------------------------
// A callable that behaves as fn (functools.update_wrapper fills its __dict__; as a class
// attribute it binds like a function), at the cost of one vectorcall and the scope.

struct Scoped {
    PyObject_HEAD
    PyObject* fn;
    PyObject* dict;
    vectorcallfunc vectorcall;
};

PyObject* scoped_vectorcall(PyObject* self, PyObject* const* args, std::size_t nargsf,
                            PyObject* kwnames) {
    PyObject* token = enter_scope();
    if (!token) return nullptr;
    PyObject* result = PyObject_Vectorcall(reinterpret_cast<Scoped*>(self)->fn, args, nargsf,
                                           kwnames);
    if (!exit_scope(token)) {
        Py_XDECREF(result);
        return nullptr;
    }
    return result;
}

int scoped_traverse(PyObject* self, visitproc visit, void* arg) {
    Scoped* s = reinterpret_cast<Scoped*>(self);
    Py_VISIT(s->fn);
    Py_VISIT(s->dict);
    return 0;
}

int scoped_clear(PyObject* self) {
    Scoped* s = reinterpret_cast<Scoped*>(self);
    Py_CLEAR(s->fn);
    Py_CLEAR(s->dict);
    return 0;
}

void scoped_dealloc(PyObject* self) {
    PyObject_GC_UnTrack(self);
    scoped_clear(self);
    Py_TYPE(self)->tp_free(self);
}

PyObject* scoped_get(PyObject* self, PyObject* obj, PyObject*) {
    if (obj == nullptr || obj == Py_None) {
        Py_INCREF(self);
        return self;
    }
    return PyMethod_New(self, obj);
}

PyObject* scoped_repr(PyObject* self) {
    return PyUnicode_FromFormat("<pyfast allocating %R>", reinterpret_cast<Scoped*>(self)->fn);
}

// Pickled by name, as a function is (its __qualname__ in its __module__).
PyObject* scoped_reduce(PyObject* self, PyObject*) {
    return PyObject_GetAttrString(self, "__qualname__");
}

PyMethodDef scoped_methods[] = {
    {"__reduce__", scoped_reduce, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef scoped_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyTypeObject ScopedType = [] {
    PyTypeObject t{PyVarObject_HEAD_INIT(nullptr, 0)};
    t.tp_name = "pyfast._alloc.allocating";
    t.tp_basicsize = sizeof(Scoped);
    t.tp_dealloc = scoped_dealloc;
    t.tp_vectorcall_offset = offsetof(Scoped, vectorcall);
    t.tp_repr = scoped_repr;
    t.tp_call = PyVectorcall_Call;
    t.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL;
    t.tp_doc = "A callable running its function with pyfast's caching allocator installed.";
    t.tp_traverse = scoped_traverse;
    t.tp_clear = scoped_clear;
    t.tp_methods = scoped_methods;
    t.tp_getset = scoped_getset;
    t.tp_descr_get = scoped_get;
    t.tp_dictoffset = offsetof(Scoped, dict);
    return t;
}();

PyObject* py_allocates(PyObject*, PyObject* fn) {
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "allocates() needs a callable, got %s",
                     Py_TYPE(fn)->tp_name);
        return nullptr;
    }
    Scoped* s = PyObject_GC_New(Scoped, &ScopedType);
    if (!s) return nullptr;
    Py_INCREF(fn);
    s->fn = fn;
    s->dict = nullptr;
    s->vectorcall = scoped_vectorcall;
    PyObject_GC_Track(s);
    return reinterpret_cast<PyObject*>(s);
}

PyMethodDef methods[] = {
    {"enter", py_enter, METH_NOARGS,
     "Install the caching allocator; returns the token exit() takes to restore."},
    {"exit", py_exit, METH_O, "Restore the handler enter() replaced."},
    {"allocates", py_allocates, METH_O, "fn wrapped to run with the allocator installed."},
    {"stats", py_stats, METH_NOARGS, "{'held', 'in_use', 'peak'} in bytes."},
    {"empty_cache", py_empty_cache, METH_NOARGS,
     "Give the cached blocks back to the system; returns the bytes released."},
    {"class_capacity", py_class_capacity, METH_O,
     "The bytes of the block a request of nbytes gets."},
    {"set_enabled", py_set_enabled, METH_O,
     "Whether scopes entered from now on install the allocator; returns the previous setting."},
    {"handler", py_handler, METH_NOARGS, "The NumPy memory handler capsule ('mem_handler')."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_alloc",
                      "pyfast's caching allocator as a NumPy memory handler.", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__alloc() {
    if (!load_numpy_api()) return nullptr;
    if (PyType_Ready(&ScopedType) < 0) return nullptr;
    if (!capsule) {
        capsule = PyCapsule_New(&handler, "mem_handler", nullptr);
        if (!capsule) return nullptr;
    }
    PyObject* m = PyModule_Create(&module);
    if (!m) return nullptr;
    Py_INCREF(&ScopedType);
    if (PyModule_AddObject(m, "allocating", reinterpret_cast<PyObject*>(&ScopedType)) < 0) {
        Py_DECREF(&ScopedType);
        Py_DECREF(m);
        return nullptr;
    }
    PyModule_AddIntConstant(m, "ALIGNMENT", static_cast<long>(mem::kAlignment));
    return m;
}
