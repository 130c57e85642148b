// oneDNN 2-D convolutions for XLA:CPU, as XLA FFI handlers (see gan_jax/layers/onednn.py for why and how).
//
// Three handlers, one per oneDNN primitive, all float32 with NHWC activations and HWIO kernels, symmetric zero padding
// and equal strides on both axes:
//   GanJaxOnednnConvFwd        y  = conv(x, w)                 args (x, w)   -> y
//   GanJaxOnednnConvBwdData    dx = conv_backward_data(dy, w)  args (dy, w)  -> dx  (dx's shape is the result's)
//   GanJaxOnednnConvBwdWeights dw = conv_backward_weights(x, dy) args (x, dy) -> dw
// and one for a fixed filter applied to every channel alone (a depthwise convolution, stride 1):
//   GanJaxOnednnDepthwise      y  = depthwise(x; taps, pad_lo, pad_hi)  args (x) -> y
// whose `taps` (a square kernel, row-major) are an attribute, with `pad_lo` zeros before and `pad_hi` after each axis.
// Primitives are created once per shape and cached. Kernels are reordered to the primitive's preferred (blocked)
// layout at every call, which costs little next to the convolution. Scratchpads are the caller thread's own, so
// XLA may run the same primitive from two threads at once.
//
// Threads: with the attribute xla_threads = 0 a convolution is one oneDNN call that starts an OpenMP team over every
// core (as PyTorch runs it). XLA:CPU runs independent instructions at once, though, so that team shares the cores
// with another convolution's team or with XLA's own fusions, and each then runs far slower than alone (oneDNN's
// threads wait for each other at every barrier). With xla_threads = 1 the batch is split into equal chunks, each a
// single-threaded oneDNN call, run by this thread and by tasks on XLA's own intra-op thread pool (the FFI's
// ThreadPool): the convolution is then ordinary work on XLA's threads and never oversubscribes the cores.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <omp.h>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

enum Kind { kFwd = 0, kBwdData = 1, kBwdWeights = 2 };

dnnl::engine& Engine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

struct Key {
  int kind;
  int64_t n, h, w, c, kh, kw, o, oh, ow, stride, pad;
  int64_t xla_threads;  // 1: split over XLA's threads, each chunk single-threaded; 0: one OpenMP team
  auto tie() const { return std::tie(kind, n, h, w, c, kh, kw, o, oh, ow, stride, pad, xla_threads); }
  bool operator<(const Key& other) const { return tie() < other.tie(); }
};

struct Entry {
  dnnl::primitive primitive;
  dnnl::primitive kernel_reorder;  // plain HWIO -> the primitive's layout (fwd, bwd data), or back (bwd weights)
  memory::desc kernel_md, scratchpad_md;
  bool reorder = false;
};

memory::desc Src(const Key& k) { return memory::desc({k.n, k.c, k.h, k.w}, dt::f32, tag::nhwc); }
memory::desc Dst(const Key& k) { return memory::desc({k.n, k.o, k.oh, k.ow}, dt::f32, tag::nhwc); }
memory::desc Kernel(const Key& k, tag t) { return memory::desc({k.o, k.c, k.kh, k.kw}, dt::f32, t); }

// The primitive of `key`, made by `build(key)` on first use and kept: one cache (and lock) per key type.
template <typename K>
std::shared_ptr<Entry> Cached(const K& key, std::shared_ptr<Entry> (*build)(const K&)) {
  static std::mutex mu;
  static auto* cache = new std::map<K, std::shared_ptr<Entry>>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  return (*cache)[key] = build(key);
}

std::shared_ptr<Entry> Build(const Key& k) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const memory::dims strides = {k.stride, k.stride}, pads = {k.pad, k.pad};
  const auto algo = dnnl::algorithm::convolution_direct;
  dnnl::convolution_forward::primitive_desc fwd(Engine(), dnnl::prop_kind::forward_training, algo, Src(k),
                                                Kernel(k, tag::any), Dst(k), strides, pads, pads, attr);
  auto entry = std::make_shared<Entry>();
  if (k.kind == kFwd) {
    entry->primitive = dnnl::convolution_forward(fwd);
    entry->kernel_md = fwd.weights_desc();
    entry->scratchpad_md = fwd.scratchpad_desc();
  } else if (k.kind == kBwdData) {
    dnnl::convolution_backward_data::primitive_desc pd(Engine(), algo, Src(k), Kernel(k, tag::any), Dst(k), strides,
                                                       pads, pads, fwd, attr);
    entry->primitive = dnnl::convolution_backward_data(pd);
    entry->kernel_md = pd.weights_desc();
    entry->scratchpad_md = pd.scratchpad_desc();
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(Engine(), algo, Src(k), Kernel(k, tag::any), Dst(k),
                                                          strides, pads, pads, fwd, attr);
    entry->primitive = dnnl::convolution_backward_weights(pd);
    entry->kernel_md = pd.diff_weights_desc();
    entry->scratchpad_md = pd.scratchpad_desc();
  }
  const memory::desc plain = Kernel(k, tag::hwio);
  entry->reorder = entry->kernel_md != plain;
  if (entry->reorder) {
    const bool to_plain = k.kind == kBwdWeights;
    entry->kernel_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(
        Engine(), to_plain ? entry->kernel_md : plain, Engine(), to_plain ? plain : entry->kernel_md));
  }
  return entry;
}

// Per-thread scratch buffers, grown as needed and kept: no allocation per call once warm. 64-byte aligned, as
// oneDNN's own allocations are.
void* Buffer(int slot, size_t bytes) {
  constexpr size_t kAlign = 64;
  thread_local std::vector<char> buffers[4];
  if (buffers[slot].size() < bytes + kAlign) buffers[slot].resize(bytes + kAlign);
  const auto address = reinterpret_cast<uintptr_t>(buffers[slot].data());
  return reinterpret_cast<void*>((address + kAlign - 1) / kAlign * kAlign);
}

// oneDNN (OpenMP build) runs a primitive with as many threads as the calling thread's OpenMP setting; this makes it
// one for the scope, so that a convolution split into tasks on XLA's threads never starts a thread team of its own.
class OneOmpThread {
 public:
  OneOmpThread() : saved_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~OneOmpThread() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

// Runs `chunk(i)` for i in [0, count) on this thread and on helper tasks scheduled on XLA's intra-op thread pool,
// each taking the next chunk until none is left, and returns when all are done. A helper that starts late finds no
// work and exits: nothing waits for a thread that is busy elsewhere. The split depends on nothing but the shapes, so
// results are the same whichever thread runs which chunk.
template <typename Fn>
void ForChunks(ffi::ThreadPool& pool, int64_t count, int64_t helpers, Fn chunk) {
  struct Shared {
    std::atomic<int64_t> next{0};
    int64_t done = 0;
    std::mutex mu;
    std::condition_variable all_done;
    std::exception_ptr error;
  };
  auto shared = std::make_shared<Shared>();
  auto work = [shared, count, chunk]() {
    OneOmpThread one;
    for (int64_t i; (i = shared->next.fetch_add(1)) < count;) {
      std::exception_ptr error;
      try {
        chunk(i);
      } catch (...) {
        error = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(shared->mu);
      if (error && !shared->error) shared->error = error;
      if (++shared->done == count) shared->all_done.notify_all();
    }
  };
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule(decltype(work)(work));  // a copy each
  work();
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->all_done.wait(lock, [&] { return shared->done == count; });
  if (shared->error) std::rethrow_exception(shared->error);
}

// How to split a batch of n over `workers` threads: equal chunks (so every chunk is one primitive), about two per
// worker so that a late helper still finds work, one per worker for weight gradients (each chunk's kernel gradient is
// a buffer to sum).
int64_t Chunks(int64_t n, int64_t workers, int kind) {
  if (workers <= 1) return 1;
  const int64_t target = std::min<int64_t>(n, kind == kBwdWeights ? workers : 2 * workers);
  int64_t c = std::max<int64_t>(target, 1);
  while (n % c != 0) --c;
  return c;
}

// Runs one convolution; oneDNN reports failures by throwing, which Run turns into an FFI error.
void Execute(ffi::ThreadPool& pool, const Key& key, float* x, float* w, float* y) {
  const int64_t workers = key.xla_threads ? std::max<int64_t>(pool.num_threads(), 1) : 1;
  const int64_t chunks = Chunks(key.n, workers, key.kind);
  Key k = key;
  k.n = key.n / chunks;
  std::optional<OneOmpThread> one;  // on XLA's threads every oneDNN call is single-threaded, the reorders too
  if (key.xla_threads) one.emplace();
  std::shared_ptr<Entry> e = Cached(k, Build);
  dnnl::stream stream(Engine());
  memory plain(Kernel(k, tag::hwio), Engine(), w);
  const size_t kernel_bytes = e->kernel_md.get_size();
  const int64_t x_stride = k.n * k.h * k.w * k.c, y_stride = k.n * k.oh * k.ow * k.o;  // floats per chunk
  // The kernel gradient of chunk i goes to partials + i * kernel_bytes, summed below (straight to the output when
  // there is one chunk in the output's own layout).
  char* partials = k.kind == kBwdWeights && (chunks > 1 || e->reorder)
                       ? static_cast<char*>(Buffer(3, chunks * kernel_bytes))
                       : nullptr;
  void* kernel_data = w;
  if (k.kind != kBwdWeights && e->reorder) {
    kernel_data = Buffer(0, kernel_bytes);
    memory blocked(e->kernel_md, Engine(), kernel_data);
    e->kernel_reorder.execute(stream, {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, blocked}});
    stream.wait();
  }
  auto run_chunk = [e, k, x, y, x_stride, y_stride, kernel_data, partials, kernel_bytes](int64_t i) {
    dnnl::stream stream(Engine());
    memory src(Src(k), Engine(), x + i * x_stride), dst(Dst(k), Engine(), y + i * y_stride);
    memory scratch(e->scratchpad_md, Engine(), Buffer(1, e->scratchpad_md.get_size()));
    if (k.kind == kBwdWeights) {
      memory kernel(e->kernel_md, Engine(), partials ? partials + i * kernel_bytes : kernel_data);
      e->primitive.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_WEIGHTS, kernel}, {DNNL_ARG_DIFF_DST, dst},
                                    {DNNL_ARG_SCRATCHPAD, scratch}});
    } else {
      memory kernel(e->kernel_md, Engine(), kernel_data);
      const int source = k.kind == kFwd ? DNNL_ARG_SRC : DNNL_ARG_DIFF_SRC;
      const int dest = k.kind == kFwd ? DNNL_ARG_DST : DNNL_ARG_DIFF_DST;
      e->primitive.execute(stream, {{source, src}, {DNNL_ARG_WEIGHTS, kernel}, {dest, dst},
                                    {DNNL_ARG_SCRATCHPAD, scratch}});
    }
    stream.wait();
  };
  if (workers > 1) {
    ForChunks(pool, chunks, std::min(workers, chunks) - 1, run_chunk);
  } else {
    for (int64_t i = 0; i < chunks; ++i) run_chunk(i);
  }
  if (partials != nullptr) {
    auto* sum = reinterpret_cast<float*>(partials);
    const size_t floats = kernel_bytes / sizeof(float);
    for (int64_t i = 1; i < chunks; ++i) {  // in chunk order: the same sum whichever thread made which part
      const auto* part = reinterpret_cast<const float*>(partials + i * kernel_bytes);
      for (size_t j = 0; j < floats; ++j) sum[j] += part[j];
    }
    memory summed(e->kernel_md, Engine(), partials);
    if (e->reorder) {
      e->kernel_reorder.execute(stream, {{DNNL_ARG_FROM, summed}, {DNNL_ARG_TO, plain}});
      stream.wait();
    } else {
      std::memcpy(w, partials, kernel_bytes);
    }
  }
}

// An exception must not cross the FFI boundary (it would abort the process): every failure of `run`, in creating a
// primitive, in allocating its buffers or in executing it, comes back to JAX as an error it raises in Python.
template <typename F>
ffi::Error Guarded(const char* what, F&& run) {
  try {
    run();
  } catch (const dnnl::error& err) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, std::string(what) + ": " + err.what());
  } catch (const std::exception& err) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string(what) + ": " + err.what());
  }
  return ffi::Error::Success();
}

ffi::Error Run(ffi::ThreadPool& pool, const Key& k, float* x, float* w, float* y) {
  return Guarded("oneDNN convolution", [&] { Execute(pool, k, x, w, y); });
}

// The depthwise convolution with a fixed filter (StyleGAN2's [1, 3, 3, 1] blur): the filter is the same for every
// channel, so it is written out per channel at each call (C * k * k floats) rather than passed as an operand.
struct DepthwiseKey {
  int64_t n, h, w, c, k, oh, ow, pad_lo, pad_hi;
  auto tie() const { return std::tie(n, h, w, c, k, oh, ow, pad_lo, pad_hi); }
  bool operator<(const DepthwiseKey& other) const { return tie() < other.tie(); }
};

memory::desc DepthwiseKernel(const DepthwiseKey& k, tag t) { return memory::desc({k.c, 1, 1, k.k, k.k}, dt::f32, t); }

std::shared_ptr<Entry> BuildDepthwise(const DepthwiseKey& k) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::convolution_forward::primitive_desc pd(
      Engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
      memory::desc({k.n, k.c, k.h, k.w}, dt::f32, tag::nhwc), DepthwiseKernel(k, tag::any),
      memory::desc({k.n, k.c, k.oh, k.ow}, dt::f32, tag::nhwc), {1, 1}, {k.pad_lo, k.pad_lo}, {k.pad_hi, k.pad_hi},
      attr);
  auto entry = std::make_shared<Entry>();
  entry->primitive = dnnl::convolution_forward(pd);
  entry->kernel_md = pd.weights_desc();
  entry->scratchpad_md = pd.scratchpad_desc();
  const memory::desc plain = DepthwiseKernel(k, tag::goihw);
  entry->reorder = entry->kernel_md != plain;
  if (entry->reorder) {
    entry->kernel_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), plain, Engine(), entry->kernel_md));
  }
  return entry;
}

void ExecuteDepthwise(const DepthwiseKey& k, const float* x, ffi::Span<const float> taps, float* y) {
  std::shared_ptr<Entry> e = Cached(k, BuildDepthwise);
  dnnl::stream stream(Engine());
  const size_t per_channel = static_cast<size_t>(k.k * k.k);
  auto* filter = static_cast<float*>(Buffer(2, k.c * per_channel * sizeof(float)));
  for (int64_t c = 0; c < k.c; ++c) {
    for (size_t t = 0; t < per_channel; ++t) filter[c * per_channel + t] = taps[t];
  }
  memory src(memory::desc({k.n, k.c, k.h, k.w}, dt::f32, tag::nhwc), Engine(), const_cast<float*>(x));
  memory dst(memory::desc({k.n, k.c, k.oh, k.ow}, dt::f32, tag::nhwc), Engine(), y);
  memory plain(DepthwiseKernel(k, tag::goihw), Engine(), filter);
  memory kernel = e->reorder ? memory(e->kernel_md, Engine(), Buffer(0, e->kernel_md.get_size())) : plain;
  memory scratch(e->scratchpad_md, Engine(), Buffer(1, e->scratchpad_md.get_size()));
  if (e->reorder) e->kernel_reorder.execute(stream, {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, kernel}});
  e->primitive.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, kernel}, {DNNL_ARG_DST, dst},
                                {DNNL_ARG_SCRATCHPAD, scratch}});
  stream.wait();
}

Key MakeKey(int kind, ffi::Span<const int64_t> x, ffi::Span<const int64_t> w, ffi::Span<const int64_t> y,
            int64_t stride, int64_t pad, int64_t xla_threads) {
  return {kind, x[0], x[1], x[2], x[3], w[0], w[1], w[3], y[1], y[2], stride, pad, xla_threads};
}

using F32 = ffi::Buffer<ffi::F32>;
using F32Result = ffi::ResultBuffer<ffi::F32>;

ffi::Error Fwd(ffi::ThreadPool pool, F32 x, F32 w, F32Result y, int64_t stride, int64_t pad, int64_t xla_threads) {
  const Key k = MakeKey(kFwd, x.dimensions(), w.dimensions(), y->dimensions(), stride, pad, xla_threads);
  return Run(pool, k, x.typed_data(), w.typed_data(), y->typed_data());
}

ffi::Error BwdData(ffi::ThreadPool pool, F32 dy, F32 w, F32Result dx, int64_t stride, int64_t pad,
                   int64_t xla_threads) {
  const Key k = MakeKey(kBwdData, dx->dimensions(), w.dimensions(), dy.dimensions(), stride, pad, xla_threads);
  return Run(pool, k, dx->typed_data(), w.typed_data(), dy.typed_data());
}

ffi::Error BwdWeights(ffi::ThreadPool pool, F32 x, F32 dy, F32Result dw, int64_t stride, int64_t pad,
                      int64_t xla_threads) {
  const Key k = MakeKey(kBwdWeights, x.dimensions(), dw->dimensions(), dy.dimensions(), stride, pad, xla_threads);
  return Run(pool, k, x.typed_data(), dw->typed_data(), dy.typed_data());
}

ffi::Error Depthwise(F32 x, F32Result y, ffi::Span<const float> taps, int64_t pad_lo, int64_t pad_hi) {
  const auto xd = x.dimensions(), yd = y->dimensions();
  int64_t k = 1;
  while (k * k < static_cast<int64_t>(taps.size())) ++k;
  if (k * k != static_cast<int64_t>(taps.size())) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "oneDNN depthwise convolution: taps must form a square");
  }
  const DepthwiseKey key{xd[0], xd[1], xd[2], xd[3], k, yd[1], yd[2], pad_lo, pad_hi};
  return Guarded("oneDNN depthwise convolution", [&] { ExecuteDepthwise(key, x.typed_data(), taps, y->typed_data()); });
}

}  // namespace

#define GAN_JAX_BIND                                                                               \
  ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>().Ret<F32>().Attr<int64_t>("stride") \
      .Attr<int64_t>("pad").Attr<int64_t>("xla_threads")
XLA_FFI_DEFINE_HANDLER_SYMBOL(GanJaxOnednnConvFwd, Fwd, GAN_JAX_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(GanJaxOnednnConvBwdData, BwdData, GAN_JAX_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(GanJaxOnednnConvBwdWeights, BwdWeights, GAN_JAX_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(GanJaxOnednnDepthwise, Depthwise,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<ffi::Span<const float>>("taps")
                                  .Attr<int64_t>("pad_lo")
                                  .Attr<int64_t>("pad_hi"));
