/* ocirun._syscalls: the raw syscall(2) entry that ocirun/linux.py needs, without ctypes.
 *
 * Importing ctypes costs ~2.5 ms (ctypes, _ctypes, struct, types, the libc handle): on create,
 * run and exec, every time.  This module loads in ~0.1 ms.  It does no more than ctypes did:
 * the kernel ABI (syscall numbers, struct layouts) stays in linux.py; this file only turns
 * Python values into the machine words of a syscall.  ocirun/_syscalls_ctypes.py is the same
 * functions over ctypes, for an install where this could not be compiled.
 *
 * Every function returns the kernel's result, or -errno on failure (never raises OSError
 * itself): linux.py adds the path the failure is about.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_ARGS 6

/* One argument: an int (any sign, up to 64 bits), None (0), bytes (a read-only pointer) or a
 * writable buffer such as bytearray (a pointer the kernel may write through). */
static int
to_word(PyObject *obj, long *word, Py_buffer *view, int *held)
{
    *held = 0;
    if (obj == Py_None) {
        *word = 0;
        return 0;
    }
    if (PyLong_Check(obj)) {
        long v = PyLong_AsLong(obj);
        if (v == -1 && PyErr_Occurred()) {
            /* above LONG_MAX: an unsigned 64-bit value (flags, RLIM_INFINITY) */
            PyErr_Clear();
            unsigned long u = PyLong_AsUnsignedLong(obj);
            if (u == (unsigned long)-1 && PyErr_Occurred())
                return -1;
            v = (long)u;
        }
        *word = v;
        return 0;
    }
    int flags = PyBytes_Check(obj) ? PyBUF_SIMPLE : PyBUF_WRITABLE;
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    *held = 1;
    *word = (long)view->buf;
    return 0;
}

static PyObject *
py_syscall(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long words[MAX_ARGS] = {0};
    Py_buffer views[MAX_ARGS];
    int held[MAX_ARGS] = {0};
    long nr, ret;
    int err = 0, i, n;

    if (nargs < 1 || nargs > MAX_ARGS + 1) {
        PyErr_SetString(PyExc_TypeError, "syscall(nr, *args): 0 to 6 arguments after the number");
        return NULL;
    }
    nr = PyLong_AsLong(args[0]);
    if (nr == -1 && PyErr_Occurred())
        return NULL;
    n = (int)nargs - 1;
    for (i = 0; i < n; i++) {
        if (to_word(args[i + 1], &words[i], &views[i], &held[i]) < 0)
            goto fail;
    }
    /* Released like ctypes releases it: mount or openat2 may wait on a slow filesystem. */
    Py_BEGIN_ALLOW_THREADS
    ret = syscall(nr, words[0], words[1], words[2], words[3], words[4], words[5]);
    if (ret == -1)
        err = errno;
    Py_END_ALLOW_THREADS
    for (i = 0; i < n; i++)
        if (held[i])
            PyBuffer_Release(&views[i]);
    return PyLong_FromLong(ret == -1 ? -err : ret);
fail:
    for (i = 0; i < n; i++)
        if (held[i])
            PyBuffer_Release(&views[i]);
    return NULL;
}

/* execveat(2) with Python lists of bytes for argv and envp: the kernel wants arrays of
 * pointers, which a plain syscall() argument cannot carry.  Returns only on failure. */
static char **
to_array(PyObject *list)
{
    Py_ssize_t i, n;
    char **arr;

    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "execveat: argv and envp must be lists of bytes");
        return NULL;
    }
    n = PyList_GET_SIZE(list);
    arr = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (arr == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "execveat: argv and envp must be lists of bytes");
            PyMem_Free(arr);
            return NULL;
        }
        arr[i] = PyBytes_AS_STRING(item);
    }
    return arr;
}

static PyObject *
py_execveat(PyObject *self, PyObject *args)
{
    int dirfd, flags, err;
    const char *path;
    PyObject *argv_list, *envp_list;
    char **argv, **envp;

    if (!PyArg_ParseTuple(args, "iyO!O!i", &dirfd, &path, &PyList_Type, &argv_list,
                          &PyList_Type, &envp_list, &flags))
        return NULL;
    argv = to_array(argv_list);
    if (argv == NULL)
        return NULL;
    envp = to_array(envp_list);
    if (envp == NULL) {
        PyMem_Free(argv);
        return NULL;
    }
    syscall(SYS_execveat, dirfd, path, argv, envp, flags);
    err = errno;
    PyMem_Free(argv);
    PyMem_Free(envp);
    return PyLong_FromLong(-err);
}

/* clone3(2) with CLONE_INTO_CGROUP: os.fork(), but the child is born in the cgroup2 directory
 * `fd` (see linux.fork_into_cgroup for why).  The interpreter's fork bookkeeping runs around
 * the syscall exactly as os.fork runs it; the GIL stays held throughout. */
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif

struct clone_args_v2 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls,
        set_tid, set_tid_size, cgroup;
};

static PyObject *
py_fork_into_cgroup(PyObject *self, PyObject *arg)
{
    struct clone_args_v2 ca;
    long fd = PyLong_AsLong(arg);
    long pid;
    int err = 0;

    if (fd == -1 && PyErr_Occurred())
        return NULL;
    memset(&ca, 0, sizeof(ca));
    ca.flags = CLONE_INTO_CGROUP;
    ca.exit_signal = SIGCHLD;
    ca.cgroup = (uint64_t)fd;
    PyOS_BeforeFork();
    pid = syscall(SYS_clone3, &ca, sizeof(ca));
    if (pid == 0) {
        PyOS_AfterFork_Child();
        return PyLong_FromLong(0);
    }
    if (pid == -1)
        err = errno;
    PyOS_AfterFork_Parent();
    return PyLong_FromLong(pid == -1 ? -err : pid);
}

/* The address of a buffer's memory, for a pointer inside a structure the kernel reads
 * (sock_fprog's filter, bpf_attr's insns).  The caller keeps the object alive, and a bytearray
 * unresized, for as long as the kernel may use the address. */
static PyObject *
py_address_of(PyObject *self, PyObject *obj)
{
    Py_buffer view;
    void *address;

    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    address = view.buf;
    PyBuffer_Release(&view);
    return PyLong_FromVoidPtr(address);
}

/* libseccomp's version, for the key of the compiled-filter cache: every `run` with a seccomp
 * profile asks, and loading ctypes to call one function costs ~2.5 ms.  None without the
 * library. */
struct scmp_version_s {
    unsigned int major, minor, micro;
};

static PyObject *
py_libseccomp_version(PyObject *self, PyObject *unused)
{
    const struct scmp_version_s *(*version)(void);
    const struct scmp_version_s *v;
    void *lib = dlopen("libseccomp.so.2", RTLD_NOW | RTLD_LOCAL);

    if (lib == NULL)
        Py_RETURN_NONE;
    version = (const struct scmp_version_s *(*)(void))dlsym(lib, "seccomp_version");
    v = version != NULL ? version() : NULL;
    if (v == NULL)
        Py_RETURN_NONE;  /* the library stays loaded: pyseccomp will want it anyway */
    return Py_BuildValue("(III)", v->major, v->minor, v->micro);
}

static PyMethodDef methods[] = {
    {"syscall", (PyCFunction)(void (*)(void))py_syscall, METH_FASTCALL,
     "syscall(nr, *args) -> result or -errno; args: int, None, bytes or a writable buffer"},
    {"execveat", py_execveat, METH_VARARGS,
     "execveat(dirfd, path, argv, envp, flags) -> -errno (returns only on failure)"},
    {"fork_into_cgroup", py_fork_into_cgroup, METH_O,
     "fork_into_cgroup(cgroup_dir_fd) -> 0 in the child, the pid in the parent, or -errno"},
    {"libseccomp_version", py_libseccomp_version, METH_NOARGS,
     "libseccomp_version() -> (major, minor, micro), or None without libseccomp.so.2"},
    {"address_of", py_address_of, METH_O,
     "address_of(buffer) -> the address of its memory (keep the object alive while it is used)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ocirun._syscalls",
    "The raw syscall entry of ocirun.linux, without ctypes (see _syscalls.c).", -1, methods,
};

PyMODINIT_FUNC
PyInit__syscalls(void)
{
    return PyModule_Create(&module);
}
