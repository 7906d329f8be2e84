// One fused pass of RMSprop's update on the CPU: torch_mnist::rmsprop_update_.
//
// The eager update (torch_mnist/optim.py) reads and writes the parameters, gradients and
// square averages in five or six separate passes; this does each element once, with the
// same operations in the same order:
//
//   v = fma((1 - rho) * g, g, rho * v)    torch's addcmul_ is a fused multiply-add too
//   v = max(v, floor)                     keeps sqrt out of the slow subnormal range
//   d = sqrt(v) + eps   or   sqrt(v + eps)
//   p = p + (-lr * g) / d                 torch's addcdiv_ order
//
// The one difference: std::sqrt is IEEE-exact, while torch's CPU sqrt (MKL's vector math)
// is off by one unit in the last place for some inputs. Built with -ffp-contract=off so the
// compiler adds no other fused multiply-adds: results do not depend on vector width or CPU.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

namespace {

template <bool kEpsInside>
void update_span(float* param, const float* grad, float* square_avg, int64_t n, float step, float rho,
                 float one_minus_rho, float eps, float floor) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i];
    const float v = std::max(std::fma(one_minus_rho * g, g, rho * square_avg[i]), floor);
    square_avg[i] = v;
    const float denominator = kEpsInside ? std::sqrt(v + eps) : std::sqrt(v) + eps;
    param[i] = param[i] + (step * g) / denominator;
  }
}

void rmsprop_update_(at::TensorList params, at::TensorList grads, at::TensorList square_avgs, double lr,
                     double rho, double eps, bool eps_inside, double floor) {
  TORCH_CHECK(params.size() == grads.size() && params.size() == square_avgs.size(),
              "rmsprop_update_: lists of different lengths");
  // The scalars as torch's eager kernels see them: each Python float rounded once to float32.
  const float step = static_cast<float>(-lr), rho_f = static_cast<float>(rho);
  const float one_minus_rho = static_cast<float>(1.0 - rho), eps_f = static_cast<float>(eps);
  const float floor_f = static_cast<float>(floor);
  for (size_t t = 0; t < params.size(); ++t) {
    const at::Tensor &p = params[t], &g = grads[t], &v = square_avgs[t];
    for (const at::Tensor* x : {&p, &g, &v}) {
      TORCH_CHECK(x->device().is_cpu() && x->scalar_type() == at::kFloat && x->is_contiguous(),
                  "rmsprop_update_: tensors must be contiguous float32 on the CPU");
      TORCH_CHECK(x->numel() == p.numel(), "rmsprop_update_: tensors of different sizes");
    }
    float* param = p.data_ptr<float>();
    const float* grad = g.const_data_ptr<float>();
    float* square_avg = v.data_ptr<float>();
    // Chunks of >= 16k elements: a smaller tensor (a bias) runs on the calling thread.
    at::parallel_for(0, p.numel(), 16384, [&](int64_t begin, int64_t end) {
      auto span = eps_inside ? update_span<true> : update_span<false>;
      span(param + begin, grad + begin, square_avg + begin, end - begin, step, rho_f, one_minus_rho, eps_f,
           floor_f);
    });
  }
}

}  // namespace

TORCH_LIBRARY(torch_mnist, m) {
  m.def("rmsprop_update_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] square_avgs, float lr, float rho, "
        "float eps, bool eps_inside, float floor) -> ()",
        &rmsprop_update_);
}
