// The caching allocator of allocator.h: a 64-byte header before every block records its
// class, so release() needs no size and no lookup table; free blocks are linked through
// their headers, one LIFO list per class (the block freed last is the warmest in cache).
#include "common/allocator.h"

#include <pthread.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace pyfast::memory {

namespace {

constexpr std::size_t kHeader = 64;
constexpr std::size_t kSmallLimit = 1024;  // multiples of 64 up to here
constexpr int kSmallClasses = 16;
constexpr int kSteps = 4;                  // classes per power of two above kSmallLimit
constexpr int kFirstPower = 10;            // 2^10 = kSmallLimit
constexpr std::size_t kLargest = std::size_t(1) << 60;
constexpr int kClasses = kSmallClasses + kSteps * (60 - kFirstPower + 1);
constexpr std::size_t kMapFrom = std::size_t(256) << 10;   // mmap blocks this big and up
constexpr std::size_t kHugeFrom = std::size_t(4) << 20;    // and ask for huge pages from here
constexpr std::uint64_t kLive = 0x70796661'73746c69ULL;    // "pyfastli"
constexpr std::uint64_t kCached = 0x70796661'73746361ULL;  // "pyfastca"

struct alignas(64) Header {
    std::uint64_t tag;      // kLive while handed out, kCached while on a free list
    Header* next;           // free-list link
    std::size_t capacity;   // usable bytes after the header
    std::size_t requested;  // what the last (re)allocation asked for: realloc copies this
    std::int32_t cls;
    std::int32_t mapped;    // from mmap (zero-filled when fresh) rather than malloc
};
static_assert(sizeof(Header) == kHeader, "the header keeps the block 64-byte aligned");

// Class index and capacity of a request; -1 when too large.
int class_of(std::size_t n, std::size_t* capacity) {
    if (n == 0) n = 1;
    if (n <= kSmallLimit) {
        const std::size_t units = (n + 63) / 64;
        *capacity = units * 64;
        return static_cast<int>(units) - 1;
    }
    if (n > kLargest) return -1;
    const int k = 63 - __builtin_clzll(static_cast<unsigned long long>(n - 1));  // 2^k < n <= 2^(k+1)
    const std::size_t base = std::size_t(1) << k, step = base / kSteps;
    const std::size_t j = (n - base + step - 1) / step;  // 1..kSteps
    *capacity = base + j * step;
    return kSmallClasses + (k - kFirstPower) * kSteps + static_cast<int>(j) - 1;
}

struct Pool {
    std::mutex lock;
    Header* free_list[kClasses] = {};
    std::size_t held = 0, in_use = 0, peak = 0;
};

// Never destroyed: NumPy frees arrays during interpreter shutdown, after static destructors.
Pool& pool() {
    static Pool* p = [] {
        Pool* made = new Pool;
        // A fork while another thread holds the lock must not leave the child's copy locked.
        pthread_atfork([] { pool().lock.lock(); }, [] { pool().lock.unlock(); },
                       [] { pool().lock.unlock(); });
        return made;
    }();
    return *p;
}

// Touch every page of a new block now. A class serves requests up to a quarter apart, so
// without this a block's tail pages would fault in step after step, whenever a larger
// request of its class first lands on it (DenseNet: 3.8k, 2.3k, 1.0k, 0.5k faults in steps
// 2-5). The pages hold zeros after, so a fresh mapped block still needs no memset.
void prefault(char* raw, std::size_t total, bool mapped) {
#ifdef MADV_POPULATE_WRITE
    if (mapped && madvise(raw, total, MADV_POPULATE_WRITE) == 0) return;
#endif
    const std::size_t page = 4096;
    for (std::size_t off = mapped ? 0 : kHeader; off < total; off += page) raw[off] = 0;
    if (!mapped) raw[total - 1] = 0;
}

Header* from_system(std::size_t capacity, int cls) {
    const std::size_t total = capacity + kHeader;
    void* raw = nullptr;
    const bool mapped = total >= kMapFrom;
    if (mapped) {
        raw = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw == MAP_FAILED) return nullptr;
#ifdef MADV_HUGEPAGE
        if (total >= kHugeFrom) madvise(raw, total, MADV_HUGEPAGE);  // fewer first-touch faults
#endif
    } else {
        raw = std::aligned_alloc(kAlignment, total);  // total is a multiple of 64
        if (!raw) return nullptr;
    }
    prefault(static_cast<char*>(raw), total, mapped);
    Header* h = static_cast<Header*>(raw);
    h->capacity = capacity;
    h->cls = cls;
    h->mapped = mapped;
    return h;
}

void to_system(Header* h) {
    if (h->mapped)
        munmap(h, h->capacity + kHeader);
    else
        std::free(h);
}

Header* header_of(void* p) {
    return reinterpret_cast<Header*>(static_cast<char*>(p) - kHeader);
}

void* payload(Header* h) { return reinterpret_cast<char*>(h) + kHeader; }

// A block of n bytes' class; *fresh says it came zero-filled from mmap just now.
void* take(std::size_t n, bool* fresh) {
    std::size_t capacity = 0;
    const int cls = class_of(n, &capacity);
    if (cls < 0) return nullptr;
    Pool& p = pool();
    Header* h = nullptr;
    {
        std::lock_guard<std::mutex> guard(p.lock);
        h = p.free_list[cls];
        if (h) {
            p.free_list[cls] = h->next;
            p.in_use += capacity;
            if (p.in_use > p.peak) p.peak = p.in_use;
        }
    }
    *fresh = false;
    if (!h) {
        h = from_system(capacity, cls);
        if (!h) {  // memory is short: what the cache holds may be enough
            empty_cache();
            h = from_system(capacity, cls);
            if (!h) return nullptr;
        }
        *fresh = h->mapped != 0;
        std::lock_guard<std::mutex> guard(p.lock);
        p.held += capacity;
        p.in_use += capacity;
        if (p.in_use > p.peak) p.peak = p.in_use;
    }
    h->tag = kLive;
    h->next = nullptr;
    h->requested = n;
    return payload(h);
}

}  // namespace

std::size_t class_capacity(std::size_t bytes) {
    std::size_t capacity = 0;
    return class_of(bytes, &capacity) < 0 ? 0 : capacity;
}

void* allocate(std::size_t bytes) {
    bool fresh;
    return take(bytes, &fresh);
}

void* allocate_zeroed(std::size_t bytes) {
    bool fresh;
    void* p = take(bytes, &fresh);
    if (p && !fresh) std::memset(p, 0, bytes);
    return p;
}

void* reallocate(void* p, std::size_t bytes) {
    if (!p) return allocate(bytes);
    Header* h = header_of(p);
    if (h->tag != kLive) {
        std::fprintf(stderr, "pyfast allocator: realloc of a block it does not hold (%p)\n", p);
        return nullptr;
    }
    std::size_t capacity = 0;
    const int cls = class_of(bytes, &capacity);
    if (cls < 0) return nullptr;
    if (cls == h->cls) {
        h->requested = bytes;
        return p;
    }
    void* q = allocate(bytes);
    if (!q) return nullptr;
    std::memcpy(q, p, h->requested < bytes ? h->requested : bytes);
    release(p);
    return q;
}

void release(void* p) {
    if (!p) return;
    Header* h = header_of(p);
    if (h->tag != kLive) {
        std::fprintf(stderr, "pyfast allocator: %s %p ignored\n",
                     h->tag == kCached ? "second free of" : "free of a foreign block", p);
        return;
    }
    Pool& pl = pool();
    std::lock_guard<std::mutex> guard(pl.lock);
    h->tag = kCached;
    h->next = pl.free_list[h->cls];
    pl.free_list[h->cls] = h;
    pl.in_use -= h->capacity;
}

Stats stats() {
    Pool& p = pool();
    std::lock_guard<std::mutex> guard(p.lock);
    return {p.held, p.in_use, p.peak};
}

std::size_t empty_cache() {
    Pool& p = pool();
    Header* all = nullptr;
    std::size_t released = 0;
    {
        std::lock_guard<std::mutex> guard(p.lock);
        for (Header*& list : p.free_list) {
            while (list) {
                Header* h = list;
                list = h->next;
                h->next = all;
                all = h;
                released += h->capacity;
            }
        }
        p.held -= released;
    }
    while (all) {  // the system calls run outside the lock
        Header* next = all->next;
        all->tag = 0;
        to_system(all);
        all = next;
    }
    return released;
}

}  // namespace pyfast::memory
