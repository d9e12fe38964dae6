// Grow-only, 64-byte aligned scratch memory, one per thread_local instance.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace pyfast {

// OpenMP pool threads persist, so a thread_local ThreadBuffer lets a steady stream of
// same-sized calls allocate once (and pay the first-touch page faults once).
class ThreadBuffer {
   public:
    ThreadBuffer() = default;
    ThreadBuffer(const ThreadBuffer&) = delete;
    ThreadBuffer& operator=(const ThreadBuffer&) = delete;
    ~ThreadBuffer() { std::free(ptr_); }

    // Room for at least `count` T; the contents are not kept when it grows.
    template <typename T>
    T* get(std::int64_t count) {
        const std::size_t bytes = (static_cast<std::size_t>(count) * sizeof(T) + 63) / 64 * 64;
        if (bytes > bytes_) {
            std::free(ptr_);
            ptr_ = std::aligned_alloc(64, bytes);
            bytes_ = ptr_ ? bytes : 0;
            if (!ptr_) throw std::bad_alloc();
        }
        return static_cast<T*>(ptr_);
    }

   private:
    void* ptr_ = nullptr;
    std::size_t bytes_ = 0;
};

}  // namespace pyfast
