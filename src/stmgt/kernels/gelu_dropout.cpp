// GELU followed by dropout, fused: the hidden layer of a Transformer feed-forward, y = GELU(x) * m / (1 - p).
//
// The PyTorch path (nn.GELU then FastDropout) draws random bits into a tensor, compares them into a
// mask, casts it to the activation's dtype, multiplies, and keeps the mask for the backward pass: five
// passes over the [B*N, T, 4D] hidden activations, the largest tensor of an STMGT block. Here each
// element's keep/drop decision is a hash of (seed, element index), so nothing but the seed is kept:
// the forward is one pass (read x, write y) and the backward another (read grad and x, write grad_x),
// recomputing GELU's derivative and the mask. The decision depends only on the seed and the index, so
// the result is the same for any number of threads.
//
//   keep_i  = hash64(seed, i) >> 32  >=  threshold,   threshold = round(p * 2^32)  (p exact to 2^-32)
//   y_i     = keep_i ? GELU(x_i) / (1 - p) : 0,        GELU(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
//   dx_i    = keep_i ? g_i * (Phi(x_i) + x_i phi(x_i)) / (1 - p) : 0
//
// float, double and bfloat16 (computed in float, rounded to nearest even) tensors, contiguous.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

inline uint64_t mix64(uint64_t z) {  // splitmix64's finaliser: a bijection with full avalanche
  z ^= z >> 30;
  z *= 0xbf58476d1ce4e5b9ULL;
  z ^= z >> 27;
  z *= 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline bool keep(uint64_t seed, int64_t i, uint64_t threshold) {
  return (mix64(seed ^ (static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ULL)) >> 32) >= threshold;
}

template <typename A>
inline A phi_cdf(A x) { return A(0.5) * (A(1) + std::erf(x * A(0.70710678118654752440))); }

template <typename A>
inline A phi_pdf(A x) { return A(0.39894228040143267794) * std::exp(A(-0.5) * x * x); }

inline float bf16_to_float(uint16_t u) {
  uint32_t b = static_cast<uint32_t>(u) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

inline uint16_t float_to_bf16(float f) {  // round to nearest even, as c10::BFloat16 (for finite values)
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return static_cast<uint16_t>((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

constexpr int64_t GRAIN = 1 << 14;

// One pass over n elements: load(i) -> compute -> store(i), split over threads.
template <typename Load, typename Store, typename A>
void run(int64_t n, Load load, Store store, A scale, uint64_t seed, uint64_t threshold, bool backward) {
  at::parallel_for(0, n, GRAIN, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const A x = load(i);
      const A v = backward ? phi_cdf(x) + x * phi_pdf(x) : x * phi_cdf(x);  // GELU'(x) or GELU(x)
      store(i, keep(seed, i, threshold) ? v * scale : A(0));
    }
  });
}

uint64_t threshold_of(double p) {
  TORCH_CHECK(p >= 0 && p < 1, "dropout probability must be in [0, 1)");
  return static_cast<uint64_t>(std::llround(p * 4294967296.0));
}

}  // namespace

// y = GELU(x) * keep / (1 - p)
torch::Tensor forward(torch::Tensor x, double p, int64_t seed) {
  TORCH_CHECK(x.is_contiguous(), "x must be contiguous");
  auto y = torch::empty_like(x);
  const int64_t n = x.numel();
  const uint64_t th = threshold_of(p), s = static_cast<uint64_t>(seed);
  if (x.scalar_type() == torch::kBFloat16) {
    const uint16_t* px = reinterpret_cast<const uint16_t*>(x.data_ptr());
    uint16_t* py = reinterpret_cast<uint16_t*>(y.data_ptr());
    run(n, [&](int64_t i) { return bf16_to_float(px[i]); }, [&](int64_t i, float v) { py[i] = float_to_bf16(v); },
        static_cast<float>(1.0 / (1.0 - p)), s, th, false);
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gelu_dropout_forward", [&] {
    const scalar_t* px = x.data_ptr<scalar_t>();
    scalar_t* py = y.data_ptr<scalar_t>();
    run(n, [&](int64_t i) { return px[i]; }, [&](int64_t i, scalar_t v) { py[i] = v; },
        static_cast<scalar_t>(1.0 / (1.0 - p)), s, th, false);
  });
  return y;
}

// grad_x = grad * GELU'(x) * keep / (1 - p)
torch::Tensor backward(torch::Tensor grad, torch::Tensor x, double p, int64_t seed) {
  TORCH_CHECK(x.is_contiguous() && grad.is_contiguous(), "grad and x must be contiguous");
  TORCH_CHECK(grad.sizes() == x.sizes() && grad.scalar_type() == x.scalar_type(),
              "grad and x must have the same shape and dtype");
  auto gx = torch::empty_like(x);
  const int64_t n = x.numel();
  const uint64_t th = threshold_of(p), s = static_cast<uint64_t>(seed);
  if (x.scalar_type() == torch::kBFloat16) {
    const uint16_t* px = reinterpret_cast<const uint16_t*>(x.data_ptr());
    const uint16_t* pg = reinterpret_cast<const uint16_t*>(grad.data_ptr());
    uint16_t* po = reinterpret_cast<uint16_t*>(gx.data_ptr());
    run(n, [&](int64_t i) { return bf16_to_float(px[i]); },
        [&](int64_t i, float v) { po[i] = float_to_bf16(v * bf16_to_float(pg[i])); },
        static_cast<float>(1.0 / (1.0 - p)), s, th, true);
    return gx;
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gelu_dropout_backward", [&] {
    const scalar_t* px = x.data_ptr<scalar_t>();
    const scalar_t* pg = grad.data_ptr<scalar_t>();
    scalar_t* po = gx.data_ptr<scalar_t>();
    run(n, [&](int64_t i) { return px[i]; }, [&](int64_t i, scalar_t v) { po[i] = v * pg[i]; },
        static_cast<scalar_t>(1.0 / (1.0 - p)), s, th, true);
  });
  return gx;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "GELU then dropout with a hashed mask (x, p, seed)");
  m.def("backward", &backward, "gradient of forward (grad, x, p, seed)");
}
