/* The listing helpers' hot loop in C: engine.listing.list_batch for the local adapter, same answer.
 *
 * Per folder: openat2 beneath the root with no symlink followed (as engine.adapters.beneath), readdir, an
 * fstatat per entry, each subfolder as Python values and each file straight into the batch's raw
 * buffers, its id hashed here (BLAKE2b, as engine.model.node_id). In Python the same loop costs several
 * microseconds of CPU per entry on top of the system calls (bench/LOG.md section 15); here it is the system
 * calls. Optional: where it was not built, engine.listing lists in Python and gives the same answer (tests
 * compare the two).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#define RESOLVE_NO_SYMLINKS_ 0x04
#define RESOLVE_BENEATH_ 0x08

/* BLAKE2b (RFC 7693), an 8-byte digest with a personalisation string: hashlib.blake2b(digest_size=8,
 * person=...) */

static const uint64_t blake2b_iv[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};

static const uint8_t blake2b_sigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4}, {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13}, {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11}, {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5}, {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};

static inline uint64_t rotr64(uint64_t w, unsigned c) { return (w >> c) | (w << (64 - c)); }

static inline uint64_t load64_le(const uint8_t *p) {
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

#define G(r, i, a, b, c, d)                              \
    do {                                                 \
        a = a + b + m[blake2b_sigma[r][2 * i]];          \
        d = rotr64(d ^ a, 32);                           \
        c = c + d;                                       \
        b = rotr64(b ^ c, 24);                           \
        a = a + b + m[blake2b_sigma[r][2 * i + 1]];      \
        d = rotr64(d ^ a, 16);                           \
        c = c + d;                                       \
        b = rotr64(b ^ c, 63);                           \
    } while (0)

static void blake2b_compress(uint64_t h[8], const uint8_t block[128], uint64_t bytes_so_far, int last) {
    uint64_t m[16], v[16];
    for (int i = 0; i < 16; i++) m[i] = load64_le(block + 8 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = blake2b_iv[i];
    }
    v[12] ^= bytes_so_far; /* the high word of the counter stays 0: a path is far below 2^64 bytes */
    if (last) v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        G(r, 0, v[0], v[4], v[8], v[12]);
        G(r, 1, v[1], v[5], v[9], v[13]);
        G(r, 2, v[2], v[6], v[10], v[14]);
        G(r, 3, v[3], v[7], v[11], v[15]);
        G(r, 4, v[0], v[5], v[10], v[15]);
        G(r, 5, v[1], v[6], v[11], v[12]);
        G(r, 6, v[2], v[7], v[8], v[13]);
        G(r, 7, v[3], v[4], v[9], v[14]);
    }
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* engine.model.node_id: the digest's 8 bytes read big-endian, shifted right by one */
static int64_t node_id(const uint64_t initial[8], const char *data, size_t size) {
    uint64_t h[8];
    uint8_t block[128];
    uint64_t done = 0;
    memcpy(h, initial, sizeof h);
    while (size > 128) {
        done += 128;
        blake2b_compress(h, (const uint8_t *)data, done, 0);
        data += 128;
        size -= 128;
    }
    memset(block, 0, sizeof block);
    memcpy(block, data, size);
    blake2b_compress(h, block, done + size, 1);
    return (int64_t)(__builtin_bswap64(h[0]) >> 1);
}

static void node_id_initial(uint64_t h[8], const char *person, size_t person_size) {
    uint8_t padded[16] = {0};
    memcpy(padded, person, person_size);
    for (int i = 0; i < 8; i++) h[i] = blake2b_iv[i];
    h[0] ^= 0x01010000ULL ^ 8; /* fanout 1, depth 1, no key, 8-byte digest */
    h[6] ^= load64_le(padded);
    h[7] ^= load64_le(padded + 8);
}

/* growing byte buffers for the batch's file columns */

typedef struct {
    char *data;
    size_t size, capacity;
} Buffer;

static int buffer_add(Buffer *b, const void *data, size_t size) {
    if (b->size + size > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 4096;
        while (capacity < b->size + size) capacity *= 2;
        char *grown = PyMem_Realloc(b->data, capacity);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->data = grown;
        b->capacity = capacity;
    }
    memcpy(b->data + b->size, data, size);
    b->size += size;
    return 0;
}

enum { IDS, SIZES, MTIMES, MODES, KINDS, PATH_SIZES, PATHS, COLUMNS };

/* one folder's subfolder columns, its special files and its temporaries of ours (its files go to the buffers) */
typedef struct {
    PyObject *paths, *ids, *sizes, *mtimes, *modes, *specials, *temporaries;
} FolderColumns;

static void folder_columns_clear(FolderColumns *f) {
    Py_CLEAR(f->paths);
    Py_CLEAR(f->ids);
    Py_CLEAR(f->sizes);
    Py_CLEAR(f->mtimes);
    Py_CLEAR(f->modes);
    Py_CLEAR(f->specials);
    Py_CLEAR(f->temporaries);
}

static int folder_columns_init(FolderColumns *f) {
    f->paths = PyList_New(0);
    f->ids = PyList_New(0);
    f->sizes = PyList_New(0);
    f->mtimes = PyList_New(0);
    f->modes = PyList_New(0);
    f->specials = PyList_New(0);
    f->temporaries = PyList_New(0);
    if (!f->paths || !f->ids || !f->sizes || !f->mtimes || !f->modes || !f->specials || !f->temporaries) {
        folder_columns_clear(f);
        return -1;
    }
    return 0;
}

static int append_new(PyObject *list, PyObject *value) {
    if (value == NULL) return -1;
    int failed = PyList_Append(list, value);
    Py_DECREF(value);
    return failed;
}

typedef struct {
    uint64_t id_initial[8];
    int skip_temporaries, use_openat2;
    PyObject *is_temp_name, *our_temporary, *special_kinds, *special_default, *open_folder;
    const char *symlink_in_path;
} ListingOptions;

static const char TEMP_SUFFIX[] = ".migrate-tmp";

/* (errno, strerror) of a folder that could not be listed, as the helper sends it */
static PyObject *failure(int code, const char *message) {
    return Py_BuildValue("(is)", code, message ? message : strerror(code));
}

/* A descriptor of the folder, or -1 with *failed set to its (errno, strerror) (NULL: a Python error). */
static int open_folder(int root_fd, const ListingOptions *s, PyObject *path, const char *encoded, PyObject **failed) {
    const uint64_t flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
    int fd;
    *failed = NULL;
    if (encoded[0] == '\0') {
        fd = openat(root_fd, ".", (int)flags);
        if (fd < 0) *failed = failure(errno, NULL);
        return fd;
    }
    struct {
        uint64_t flags, mode, resolve;
    } how = {flags, 0, RESOLVE_NO_SYMLINKS_ | RESOLVE_BENEATH_};
    if (s->use_openat2) {
        do {
            fd = (int)syscall(SYS_openat2, root_fd, encoded, &how, sizeof how);
        } while (fd < 0 && errno == EINTR);
        if (fd >= 0) return fd;
        if (errno == ELOOP) {
            *failed = failure(ELOOP, s->symlink_in_path);
            return -1;
        }
        if (errno != ENOSYS && errno != EPERM) {
            *failed = failure(errno, NULL);
            return -1;
        }
    }
    /* openat2 known to be refused (an old kernel, a seccomp filter), or EPERM, which may be the filesystem's
     * own answer: the adapter's open decides, and walks the path where it must; it answers a descriptor or
     * (errno, strerror) */
    PyObject *answer = PyObject_CallOneArg(s->open_folder, path);
    if (answer == NULL) return -1;
    if (PyTuple_Check(answer)) {
        *failed = answer;
        return -1;
    }
    fd = PyLong_AsLong(answer);
    Py_DECREF(answer);
    if (fd < 0 && !PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "open_folder answered no descriptor");
    return fd;
}

static inline int64_t mtime_ns(const struct stat *st) {
    /* clamped to what the run file holds, as engine.adapters.local.mtime_ns */
    __int128 m = (__int128)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    if (m > INT64_MAX) return INT64_MAX;
    if (m < INT64_MIN) return INT64_MIN;
    return (int64_t)m;
}

static int is_our_temporary(const ListingOptions *s, const char *name, size_t size) {
    const size_t suffix = sizeof TEMP_SUFFIX - 1;
    if (!s->skip_temporaries || name[0] != '.' || size < suffix || memcmp(name + size - suffix, TEMP_SUFFIX, suffix))
        return 0;
    PyObject *text = PyUnicode_DecodeFSDefaultAndSize(name, (Py_ssize_t)size);
    if (text == NULL) return -1;
    PyObject *answer = PyObject_CallOneArg(s->is_temp_name, text);
    Py_DECREF(text);
    if (answer == NULL) return -1;
    int yes = PyObject_IsTrue(answer);
    Py_DECREF(answer);
    return yes;
}

/* One folder's entries: subfolders into *f, files appended to the buffers. 0, or an errno that keeps the
 * folder from being listed (the caller drops what was added), or -1 with a Python error set. */
static int list_folder(int fd, const ListingOptions *s, const char *prefix, size_t prefix_size, FolderColumns *f,
                       Buffer *columns, Py_ssize_t *files) {
    DIR *dir = fdopendir(fd);
    if (dir == NULL) {
        int code = errno;
        close(fd);
        return code;
    }
    size_t room = prefix_size + 1 + 256 + 1;
    char *path = PyMem_Malloc(room);
    if (path == NULL) {
        closedir(dir);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(path, prefix, prefix_size);
    size_t name_at = prefix_size;
    if (prefix_size) path[name_at++] = '/';
    int outcome = 0;
    for (;;) {
        errno = 0;
        struct dirent *entry = readdir(dir);
        if (entry == NULL) {
            outcome = errno;
            break;
        }
        const char *name = entry->d_name;
        if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) continue;
        struct stat st;
        if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT) continue; /* gone between readdir and lstat */
            outcome = errno;
            break;
        }
        size_t name_size = strlen(name);
        if (name_at + name_size > room) {
            /* NAME_MAX is no limit of readdir's: a FUSE filesystem answers names of up to 1024 bytes (and
             * looks them up), ntfs3 up to 765: the buffer grows to the name rather than being overrun */
            char *grown = PyMem_Realloc(path, name_at + name_size);
            if (grown == NULL) {
                PyErr_NoMemory();
                goto python_error;
            }
            path = grown;
            room = name_at + name_size;
        }
        memcpy(path + name_at, name, name_size);
        size_t path_size = name_at + name_size;
        mode_t kind = st.st_mode & S_IFMT;
        if (kind != S_IFDIR && kind != S_IFREG && kind != S_IFLNK) {
            PyObject *key = PyLong_FromLong((long)kind), *what;
            if (key == NULL) goto python_error;
            what = PyDict_GetItemWithError(s->special_kinds, key);
            Py_DECREF(key);
            if (what == NULL && PyErr_Occurred()) goto python_error;
            if (append_new(f->specials, Py_BuildValue("(NO)", PyUnicode_DecodeFSDefaultAndSize(path, path_size),
                                                      what ? what : s->special_default)))
                goto python_error;
            continue;
        }
        int temporary = is_our_temporary(s, name, name_size);
        if (temporary < 0) goto python_error;
        if (temporary) {
            if (append_new(f->temporaries, Py_BuildValue("(NO)", PyUnicode_DecodeFSDefaultAndSize(path, path_size),
                                                         s->our_temporary)))
                goto python_error;
            continue;
        }
        int64_t id = node_id(s->id_initial, path, path_size), size = (int64_t)st.st_size, mtime = mtime_ns(&st);
        int32_t mode = (int32_t)(st.st_mode & 07777);
        if (kind == S_IFDIR) {
            if (append_new(f->paths, PyUnicode_DecodeFSDefaultAndSize(path, path_size)) ||
                append_new(f->ids, PyLong_FromLongLong(id)) || append_new(f->sizes, PyLong_FromLongLong(size)) ||
                append_new(f->mtimes, PyLong_FromLongLong(mtime)) || append_new(f->modes, PyLong_FromLong(mode)))
                goto python_error;
            continue;
        }
        uint8_t file_kind = kind == S_IFREG ? 0 : 1; /* engine.listing.FILE_KINDS: (file, symlink) */
        int32_t encoded_size = (int32_t)path_size;
        if (buffer_add(&columns[IDS], &id, 8) || buffer_add(&columns[SIZES], &size, 8) ||
            buffer_add(&columns[MTIMES], &mtime, 8) || buffer_add(&columns[MODES], &mode, 4) ||
            buffer_add(&columns[KINDS], &file_kind, 1) || buffer_add(&columns[PATH_SIZES], &encoded_size, 4) ||
            buffer_add(&columns[PATHS], path, path_size))
            goto python_error;
        ++*files;
    }
    PyMem_Free(path);
    closedir(dir);
    return outcome;
python_error:
    PyMem_Free(path);
    closedir(dir);
    return -1;
}

/* The folder's result tuple: (paths, ids, sizes, mtimes, modes, files[, specials]) */
static PyObject *folder_result(FolderColumns *f, Py_ssize_t files) {
    Py_ssize_t specials = PyList_GET_SIZE(f->specials) + PyList_GET_SIZE(f->temporaries);
    PyObject *result = PyTuple_New(specials ? 7 : 6);
    if (result == NULL) return NULL;
    PyObject *count = PyLong_FromSsize_t(files);
    if (count == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, Py_NewRef(f->paths));
    PyTuple_SET_ITEM(result, 1, Py_NewRef(f->ids));
    PyTuple_SET_ITEM(result, 2, Py_NewRef(f->sizes));
    PyTuple_SET_ITEM(result, 3, Py_NewRef(f->mtimes));
    PyTuple_SET_ITEM(result, 4, Py_NewRef(f->modes));
    PyTuple_SET_ITEM(result, 5, count);
    if (specials) {
        /* special files first, then our temporaries: the order engine.listing.list_batch names them in */
        PyObject *all = PySequence_Concat(f->specials, f->temporaries), *named;
        if (all == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        named = PyList_AsTuple(all);
        Py_DECREF(all);
        if (named == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyTuple_SET_ITEM(result, 6, named);
    }
    return result;
}

static PyObject *list_batch(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"root_fd", "folders", "person", "skip_temporaries", "is_temp_name", "our_temporary",
                               "special_kinds", "special_default", "use_openat2", "open_folder", "symlink_in_path",
                               NULL};
    int root_fd, skip, use_openat2;
    (void)module;
    PyObject *folders;
    const char *person;
    Py_ssize_t person_size;
    ListingOptions s;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iO!y#pOUO!UpOs", keywords, &root_fd, &PyList_Type, &folders,
                                     &person, &person_size, &skip, &s.is_temp_name, &s.our_temporary, &PyDict_Type,
                                     &s.special_kinds, &s.special_default, &use_openat2, &s.open_folder,
                                     &s.symlink_in_path))
        return NULL;
    if (person_size > 16) {
        PyErr_SetString(PyExc_ValueError, "person: at most 16 bytes");
        return NULL;
    }
    s.skip_temporaries = skip;
    s.use_openat2 = use_openat2;
    node_id_initial(s.id_initial, person, (size_t)person_size);

    Buffer columns[COLUMNS];
    memset(columns, 0, sizeof columns);
    PyObject *results = PyList_New(0), *answer = NULL;
    if (results == NULL) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(folders); i++) {
        PyObject *folder = PyList_GET_ITEM(folders, i), *failed;
        PyObject *encoded = PyUnicode_EncodeFSDefault(folder);
        if (encoded == NULL) goto done;
        int fd = open_folder(root_fd, &s, folder, PyBytes_AS_STRING(encoded), &failed);
        if (fd < 0) {
            Py_DECREF(encoded);
            if (failed == NULL || append_new(results, failed)) goto done;
            continue;
        }
        size_t before[COLUMNS];
        for (int c = 0; c < COLUMNS; c++) before[c] = columns[c].size;
        FolderColumns f;
        if (folder_columns_init(&f)) {
            close(fd);
            Py_DECREF(encoded);
            goto done;
        }
        Py_ssize_t files = 0;
        int outcome = list_folder(fd, &s, PyBytes_AS_STRING(encoded), (size_t)PyBytes_GET_SIZE(encoded), &f,
                                  columns, &files);
        Py_DECREF(encoded);
        if (outcome != 0)
            for (int c = 0; c < COLUMNS; c++) columns[c].size = before[c]; /* nothing of a failed folder */
        PyObject *result = outcome < 0 ? NULL : outcome > 0 ? failure(outcome, NULL) : folder_result(&f, files);
        folder_columns_clear(&f);
        if (append_new(results, result)) goto done;
    }
    answer = PyTuple_New(2);
    if (answer == NULL) goto done;
    PyObject *files = PyTuple_New(COLUMNS);
    if (files == NULL) {
        Py_CLEAR(answer);
        goto done;
    }
    PyTuple_SET_ITEM(answer, 0, Py_NewRef(results));
    PyTuple_SET_ITEM(answer, 1, files);
    for (int c = 0; c < COLUMNS; c++) {
        PyObject *column = PyBytes_FromStringAndSize(columns[c].data ? columns[c].data : "", (Py_ssize_t)columns[c].size);
        if (column == NULL) {
            Py_CLEAR(answer);
            goto done;
        }
        PyTuple_SET_ITEM(files, c, column);
    }
done:
    Py_DECREF(results);
    for (int c = 0; c < COLUMNS; c++) PyMem_Free(columns[c].data);
    return answer;
}

static PyObject *id_of(PyObject *module, PyObject *args) {
    const char *person, *path;
    Py_ssize_t person_size, path_size;
    uint64_t initial[8];
    (void)module;
    if (!PyArg_ParseTuple(args, "y#y#", &person, &person_size, &path, &path_size)) return NULL;
    if (person_size > 16) {
        PyErr_SetString(PyExc_ValueError, "person: at most 16 bytes");
        return NULL;
    }
    node_id_initial(initial, person, (size_t)person_size);
    return PyLong_FromLongLong(node_id(initial, path, (size_t)path_size));
}

static PyMethodDef methods[] = {
    {"list_batch", (PyCFunction)(void (*)(void))list_batch, METH_VARARGS | METH_KEYWORDS,
     "engine.listing.list_batch for a local root's descriptor: (results, files), failures as (errno, strerror)."},
    {"id_of", id_of, METH_VARARGS, "id_of(person, path_bytes): engine.model.node_id, computed here (for tests)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "engine._native_listing",
    .m_doc = "The listing helpers' hot loop in C (see engine.listing).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__native_listing(void) { return PyModule_Create(&module); }
