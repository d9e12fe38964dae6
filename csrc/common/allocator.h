// pyfast's caching allocator for the arrays it allocates (activations, gradients, kernel
// outputs). A training step allocates and frees the same sizes every step; handing those
// blocks back to the system and taking them again costs a page fault per 4 KiB touched
// (a fifth to a third of a DenseNet step on 2 cores). So freed blocks are kept, in size
// classes, and a steady-state step gets all its memory from them: no system calls, no faults.
//
// Blocks are 64-byte aligned. Sizes up to 1 KiB round up to a multiple of 64; above, each
// power of two is cut into four classes (2^k * 1.25, 1.5, 1.75, 2), so a block wastes at most
// a quarter of the request. Small blocks come from malloc, blocks of 256 KiB and more
// straight from mmap, every page touched once when taken (so a larger request of the same
// class landing on the block later faults nothing in); neither goes back before
// empty_cache() (or a failed allocation, which empties the cache and tries once more).
// Thread-safe: one mutex, held for a list push/pop.
#pragma once

#include <cstddef>

namespace pyfast::memory {

struct Stats {
    std::size_t held;    // bytes of every block taken from the system and not given back
    std::size_t in_use;  // bytes of the blocks handed out now
    std::size_t peak;    // the most in_use has been
};

inline constexpr std::size_t kAlignment = 64;

// nullptr when the system has no memory left (or the size is absurd). size 0 gives a
// valid block of the smallest class.
void* allocate(std::size_t bytes);
void* allocate_zeroed(std::size_t bytes);
// realloc: p may be nullptr; keeps the block when the new size has its class; on failure
// returns nullptr and leaves p as it was.
void* reallocate(void* p, std::size_t bytes);
// p may be nullptr; p must come from this allocator (a foreign or doubly freed block is
// reported on stderr and left alone rather than put on a free list).
void release(void* p);

// The capacity of the class a request of `bytes` gets (0 when absurd).
std::size_t class_capacity(std::size_t bytes);

Stats stats();
// Gives every cached (free) block back to the system; returns the bytes released.
std::size_t empty_cache();

}  // namespace pyfast::memory
