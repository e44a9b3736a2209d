// Fused selective scan for CPU (the recurrence of Gu and Dao, arXiv:2312.00752, without the D skip).
//
//   h_t = exp(delta_t * A) * h_{t-1} + delta_t * u_t * B_t,     y_t = sum_n h_t[:, n] * C_t[n]
//
// Shapes (all contiguous, one dtype): u, delta [Bp, T, Di]; A [Di, N]; B, C [Bp, T, N];
// h0 [Bp, Di, N] or an empty tensor (zero state). Work is split over the Bp sequences with
// at::parallel_for (torch's intra-op threads); each sequence keeps its state [Di, N] in cache and
// never writes a state-sized tensor per step, which is what makes the plain-PyTorch scan
// memory-bound. The backward pass recomputes the T states of a sequence into a per-thread buffer
// ([T + 1, Di, N]) and runs the adjoint recurrence backwards. Tested against the sequential
// PyTorch reference in tests/nn/layers/test_selective_scan.py.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

// One step of the recurrence for all Di channels of one sequence: hc = exp(delta A) * hp + delta u B.
// hc may be hp (in place).
template <typename scalar_t>
inline void advance(const scalar_t* hp, scalar_t* hc, const scalar_t* ut, const scalar_t* dt, const scalar_t* Bt,
                    const scalar_t* A, int64_t Di, int64_t N) {
  for (int64_t d = 0; d < Di; ++d) {
    const scalar_t delta = dt[d], du = delta * ut[d];
    const scalar_t* Ad = A + d * N;
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) hc[d * N + n] = std::exp(delta * Ad[n]) * hp[d * N + n] + du * Bt[n];
  }
}

template <typename scalar_t>
void forward_kernel(const scalar_t* u, const scalar_t* dl, const scalar_t* A, const scalar_t* Bm,
                    const scalar_t* Cm, const scalar_t* h0, scalar_t* y, scalar_t* hT,
                    int64_t Bp, int64_t T, int64_t Di, int64_t N) {
  at::parallel_for(0, Bp, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      scalar_t* h = hT + b * Di * N;  // the state lives in the output buffer
      if (h0) std::copy(h0 + b * Di * N, h0 + (b + 1) * Di * N, h);
      else std::fill(h, h + Di * N, scalar_t(0));
      for (int64_t t = 0; t < T; ++t) {
        const int64_t bt = b * T + t;
        advance(h, h, u + bt * Di, dl + bt * Di, Bm + bt * N, A, Di, N);
        const scalar_t* Ct = Cm + bt * N;
        scalar_t* yt = y + bt * Di;
        for (int64_t d = 0; d < Di; ++d) {  // y_t = sum_n h_t C_t
          scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
          for (int64_t n = 0; n < N; ++n) acc += h[d * N + n] * Ct[n];
          yt[d] = acc;
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_kernel(const scalar_t* u, const scalar_t* dl, const scalar_t* A, const scalar_t* Bm,
                     const scalar_t* Cm, const scalar_t* h0, const scalar_t* gy, const scalar_t* ghT,
                     scalar_t* gu, scalar_t* gdl, scalar_t* gA, scalar_t* gB, scalar_t* gC, scalar_t* gh0,
                     int64_t Bp, int64_t T, int64_t Di, int64_t N) {
  const int64_t DN = Di * N;
  const int nthreads = at::get_num_threads();
  std::vector<scalar_t> gA_parts(static_cast<size_t>(nthreads) * DN, scalar_t(0));  // one per thread
  at::parallel_for(0, Bp, 1, [&](int64_t b0, int64_t b1) {
    std::vector<scalar_t> H(static_cast<size_t>(T + 1) * DN);  // H[0] = h0, H[t + 1] = h_t
    std::vector<scalar_t> g(DN);                                // gradient of the current state
    scalar_t* gAt = gA_parts.data() + static_cast<size_t>(at::get_thread_num()) * DN;
    for (int64_t b = b0; b < b1; ++b) {
      if (h0) std::copy(h0 + b * DN, h0 + (b + 1) * DN, H.begin());
      else std::fill(H.begin(), H.begin() + DN, scalar_t(0));
      for (int64_t t = 0; t < T; ++t) {  // recompute the states
        const int64_t bt = b * T + t;
        advance(H.data() + t * DN, H.data() + (t + 1) * DN, u + bt * Di, dl + bt * Di, Bm + bt * N, A, Di, N);
      }
      std::copy(ghT + b * DN, ghT + (b + 1) * DN, g.begin());
      for (int64_t t = T - 1; t >= 0; --t) {  // adjoint recurrence, backwards in time
        const int64_t bt = b * T + t;
        const scalar_t *ut = u + bt * Di, *dt = dl + bt * Di, *Bt = Bm + bt * N, *Ct = Cm + bt * N;
        const scalar_t* gyt = gy + bt * Di;
        const scalar_t* hc = H.data() + (t + 1) * DN;
        const scalar_t* hp = H.data() + t * DN;
        scalar_t *gBt = gB + bt * N, *gCt = gC + bt * N;
        std::fill(gBt, gBt + N, scalar_t(0));
        std::fill(gCt, gCt + N, scalar_t(0));
        for (int64_t d = 0; d < Di; ++d) {
          const scalar_t delta = dt[d], du = delta * ut[d], gyd = gyt[d];
          const scalar_t* Ad = A + d * N;
          scalar_t* gd = g.data() + d * N;
          scalar_t* gAd = gAt + d * N;
          scalar_t gdu = 0, gdel = 0;
#pragma omp simd reduction(+ : gdu, gdel)
          for (int64_t n = 0; n < N; ++n) {
            const scalar_t gh = gd[n] + gyd * Ct[n];  // total gradient of h_t
            const scalar_t dA = std::exp(delta * Ad[n]);
            const scalar_t x = gh * hp[d * N + n] * dA;  // g(dA_t) * dA_t
            gCt[n] += gyd * hc[d * N + n];
            gBt[n] += gh * du;
            gdu += gh * Bt[n];
            gdel += x * Ad[n];
            gAd[n] += x * delta;
            gd[n] = gh * dA;  // passed on to h_{t-1}
          }
          gu[bt * Di + d] = gdu * delta;
          gdl[bt * Di + d] = gdel + gdu * ut[d];
        }
      }
      std::copy(g.begin(), g.end(), gh0 + b * DN);
    }
  });
  std::fill(gA, gA + DN, scalar_t(0));
  for (int i = 0; i < nthreads; ++i)
    for (int64_t k = 0; k < DN; ++k) gA[k] += gA_parts[static_cast<size_t>(i) * DN + k];
}

void check(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A, const torch::Tensor& B,
           const torch::Tensor& C, const torch::Tensor& h0) {
  TORCH_CHECK(u.device().is_cpu(), "the compiled selective scan runs on CPU tensors only");
  TORCH_CHECK(u.dim() == 3 && delta.sizes() == u.sizes(), "u and delta must be [B', T, Di] of one shape");
  TORCH_CHECK(A.dim() == 2 && A.size(0) == u.size(2), "A must be [Di, N]");
  TORCH_CHECK(B.dim() == 3 && B.size(0) == u.size(0) && B.size(1) == u.size(1) && B.size(2) == A.size(1) &&
              C.sizes() == B.sizes(), "B and C must be [B', T, N]");
  TORCH_CHECK(h0.numel() == 0 || (h0.dim() == 3 && h0.size(0) == u.size(0) && h0.size(1) == A.size(0) &&
                                  h0.size(2) == A.size(1)), "h0 must be [B', Di, N] or empty");
  for (const auto* x : {&u, &delta, &A, &B, &C, &h0})
    TORCH_CHECK(x->is_contiguous() && x->scalar_type() == u.scalar_type(), "inputs must be contiguous, one dtype");
}

}  // namespace

std::vector<torch::Tensor> scan_forward(torch::Tensor u, torch::Tensor delta, torch::Tensor A, torch::Tensor B,
                                        torch::Tensor C, torch::Tensor h0) {
  check(u, delta, A, B, C, h0);
  const int64_t Bp = u.size(0), T = u.size(1), Di = u.size(2), N = A.size(1);
  auto y = torch::empty_like(u);
  auto hT = torch::empty({Bp, Di, N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_forward", [&] {
    forward_kernel<scalar_t>(u.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
                             B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(),
                             h0.numel() ? h0.data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>(),
                             hT.data_ptr<scalar_t>(), Bp, T, Di, N);
  });
  return {y, hT};
}

std::vector<torch::Tensor> scan_backward(torch::Tensor u, torch::Tensor delta, torch::Tensor A, torch::Tensor B,
                                         torch::Tensor C, torch::Tensor h0, torch::Tensor gy, torch::Tensor ghT) {
  check(u, delta, A, B, C, h0);
  TORCH_CHECK(gy.sizes() == u.sizes() && gy.is_contiguous() && gy.scalar_type() == u.scalar_type(), "bad gy");
  TORCH_CHECK(ghT.dim() == 3 && ghT.size(0) == u.size(0) && ghT.is_contiguous() &&
              ghT.scalar_type() == u.scalar_type(), "bad ghT");
  const int64_t Bp = u.size(0), T = u.size(1), Di = u.size(2), N = A.size(1);
  auto gu = torch::empty_like(u), gdl = torch::empty_like(delta), gA = torch::empty_like(A);
  auto gB = torch::empty_like(B), gC = torch::empty_like(C), gh0 = torch::empty({Bp, Di, N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_backward", [&] {
    backward_kernel<scalar_t>(u.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
                              B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(),
                              h0.numel() ? h0.data_ptr<scalar_t>() : nullptr, gy.data_ptr<scalar_t>(),
                              ghT.data_ptr<scalar_t>(), gu.data_ptr<scalar_t>(), gdl.data_ptr<scalar_t>(),
                              gA.data_ptr<scalar_t>(), gB.data_ptr<scalar_t>(), gC.data_ptr<scalar_t>(),
                              gh0.data_ptr<scalar_t>(), Bp, T, Di, N);
  });
  return {gu, gdl, gA, gB, gC, gh0};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &scan_forward, "selective scan forward (CPU)");
  m.def("backward", &scan_backward, "selective scan backward (CPU)");
}
