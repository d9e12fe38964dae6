// Fused optimizer steps on the GPU: SGD (momentum, dampening, Nesterov), RMSprop (centered,
// momentum) and Adam/AdamW (AMSGrad), torch.optim's update rules in torch's order of
// operations, in place.
//
// Memory-bound: each element's parameter, gradient and state are read once and written
// once. A list of tensors is one launch, multi-tensor style: every tensor is cut into
// chunks of kChunk elements and the grid walks all chunks of all tensors (grid-stride), a
// block finding its tensor by binary search over the tensors' first chunk numbers. The
// tensor table goes to the device with one asynchronous copy on the stream (a single
// tensor, the flat-buffer case, travels in the kernel arguments instead). Within a chunk
// threads take 4 consecutive elements at a time through 16-byte loads and stores when every
// buffer of the tensor is 16-byte aligned there, else one element. The per-element rules are
// common/optim_rules.h's, shared with the CPU loop.

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/optim.h"

namespace pyfast::cuda {
namespace {

using std::int64_t;

constexpr int kThreads = 256;
constexpr int64_t kChunk = 16 * 1024;    // elements per block visit: 64 KB of float params
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride over the chunks beyond this

// A tensor as the kernel sees it.
template <typename T>
struct Chunked {
    T* p;
    const T* g;
    T* s[3];
    int64_t size;
    int64_t first_chunk;  // chunks of all earlier tensors
};

template <typename T>
struct TensorTable {
    const Chunked<T>* list;  // device array of `count` tensors, or nullptr: `only` is the one
    Chunked<T> only;
    int count;
    int64_t chunks;
};

__device__ __forceinline__ bool aligned16(const void* p) {
    return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

template <typename T>
__device__ Chunked<T> tensor_of_chunk(const TensorTable<T>& table, int64_t chunk) {
    if (!table.list) return table.only;
    int lo = 0, hi = table.count - 1;  // the last tensor whose first chunk is <= chunk
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (table.list[mid].first_chunk <= chunk)
            lo = mid;
        else
            hi = mid - 1;
    }
    return table.list[lo];
}

template <class Rule, typename T, class K>
__global__ void __launch_bounds__(kThreads) multi_tensor_kernel(TensorTable<T> table, K k) {
    for (int64_t chunk = blockIdx.x; chunk < table.chunks; chunk += gridDim.x) {
        const Chunked<T> t = tensor_of_chunk(table, chunk);
        const int64_t begin = (chunk - t.first_chunk) * kChunk;
        const int64_t end = begin + kChunk < t.size ? begin + kChunk : t.size;
        // uniform over the block: every buffer 16-byte aligned at this chunk
        bool vec = aligned16(t.p + begin) && aligned16(t.g + begin);
        for (int j = 0; j < 3; ++j) vec = vec && (!t.s[j] || aligned16(t.s[j] + begin));
        int64_t scalar_from = begin;
        if (vec) {
            const int64_t vec_end = begin + (end - begin) / 4 * 4;
            for (int64_t i = begin + 4 * threadIdx.x; i < vec_end; i += 4 * blockDim.x) {
                T p[4], g[4], s[3][4] = {};
                load4(t.p + i, p);
                load4_global(t.g + i, g);
                for (int j = 0; j < 3; ++j)
                    if (t.s[j]) load4(t.s[j] + i, s[j]);
#pragma unroll
                for (int l = 0; l < 4; ++l)
                    Rule::template update<ScalarMath>(p[l], g[l], s[0][l], s[1][l], s[2][l], k);
                store4(t.p + i, p);
                for (int j = 0; j < 3; ++j)
                    if (t.s[j]) store4(t.s[j] + i, s[j]);
            }
            scalar_from = vec_end;
        }
        for (int64_t i = scalar_from + threadIdx.x; i < end; i += blockDim.x) {
            T p = t.p[i], s[3] = {};
            for (int j = 0; j < 3; ++j)
                if (t.s[j]) s[j] = t.s[j][i];
            Rule::template update<ScalarMath>(p, t.g[i], s[0], s[1], s[2], k);
            t.p[i] = p;
            for (int j = 0; j < 3; ++j)
                if (t.s[j]) t.s[j][i] = s[j];
        }
    }
}

// One launch of the rule over every tensor of the list.
template <class Rule, typename T, class K>
void launch(const std::vector<DeviceTensor<T>>& tensors, const K& k, cudaStream_t stream,
            const char* what) {
    std::vector<Chunked<T>> table_host;
    int64_t chunks = 0;
    for (const DeviceTensor<T>& x : tensors) {
        if (x.size == 0) continue;
        table_host.push_back({x.param, x.grad, {x.state[0], x.state[1], x.state[2]}, x.size, chunks});
        chunks += ceil_div(x.size, kChunk);
    }
    if (chunks == 0) return;
    TensorTable<T> table{nullptr, table_host[0], static_cast<int>(table_host.size()), chunks};
    Chunked<T>* device_list = nullptr;
    if (table_host.size() > 1) {
        const size_t bytes = sizeof(Chunked<T>) * table_host.size();
        check(cudaMallocAsync(reinterpret_cast<void**>(&device_list), bytes, stream),
              "cudaMallocAsync (tensor table)");
        // From pageable memory the call returns once the table is staged, so the host
        // vector may go away before the copy runs.
        const cudaError_t err = cudaMemcpyAsync(device_list, table_host.data(), bytes,
                                                cudaMemcpyHostToDevice, stream);
        if (err != cudaSuccess) {
            cudaFreeAsync(device_list, stream);
            throw_cuda_error(err, "cudaMemcpyAsync (tensor table)");
        }
        table.list = device_list;
    }
    const unsigned grid = static_cast<unsigned>(chunks < kMaxBlocks ? chunks : kMaxBlocks);
    multi_tensor_kernel<Rule, T, K><<<grid, kThreads, 0, stream>>>(table, k);
    const cudaError_t launch_err = cudaGetLastError();
    if (device_list) cudaFreeAsync(device_list, stream);  // after the kernel, in stream order
    if (launch_err != cudaSuccess) throw_cuda_error(launch_err, what);
}

}  // namespace

template <typename T>
void sgd_step(const std::vector<DeviceTensor<T>>& tensors, const SgdHyper& h, cudaStream_t stream) {
    launch<SgdRule>(tensors, step_scalars<T>(h), stream, "cuda sgd_step kernel launch");
}

template <typename T>
void rmsprop_step(const std::vector<DeviceTensor<T>>& tensors, const RmspropHyper& h,
                  cudaStream_t stream) {
    launch<RmspropRule>(tensors, step_scalars<T>(h), stream, "cuda rmsprop_step kernel launch");
}

template <typename T>
void adam_step(const std::vector<DeviceTensor<T>>& tensors, const AdamHyper& h, cudaStream_t stream) {
    launch<AdamRule>(tensors, step_scalars<T>(h), stream, "cuda adam_step kernel launch");
}

template void sgd_step<float>(const std::vector<DeviceTensor<float>>&, const SgdHyper&, cudaStream_t);
template void sgd_step<double>(const std::vector<DeviceTensor<double>>&, const SgdHyper&, cudaStream_t);
template void rmsprop_step<float>(const std::vector<DeviceTensor<float>>&, const RmspropHyper&,
                                  cudaStream_t);
template void rmsprop_step<double>(const std::vector<DeviceTensor<double>>&, const RmspropHyper&,
                                   cudaStream_t);
template void adam_step<float>(const std::vector<DeviceTensor<float>>&, const AdamHyper&, cudaStream_t);
template void adam_step<double>(const std::vector<DeviceTensor<double>>&, const AdamHyper&, cudaStream_t);

}  // namespace pyfast::cuda
