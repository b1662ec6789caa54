// Fused CPU kernels of the locality feed-forward: "activation of an affine
// map" and its BatchNorm backward, each in as few passes over the (M, C)
// rows as the maths allows. ATen needs three separate passes (addcmul,
// activation backward, batch-norm backward), each with a fresh output.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/extension.h>

#include <vector>

namespace {

enum Activation : int64_t { kHSwish = 0, kReLU6 = 1, kReLU = 2 };

// Rows per block of the column sums: summed in scalar_t, then into double.
constexpr int64_t kBlockRows = 128;

template <typename scalar_t, int64_t act>
inline at::vec::Vectorized<scalar_t> activate(at::vec::Vectorized<scalar_t> y) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec zero(0), six(6);
  if constexpr (act == kHSwish) {
    return y * at::vec::minimum(at::vec::maximum(y + Vec(3), zero), six) / six;
  } else if constexpr (act == kReLU6) {
    return at::vec::minimum(at::vec::maximum(y, zero), six);
  } else {
    return at::vec::maximum(y, zero);
  }
}

// grad * act'(y), with ATen's conventions at the kinks.
template <typename scalar_t, int64_t act>
inline at::vec::Vectorized<scalar_t> activation_grad(
    at::vec::Vectorized<scalar_t> grad, at::vec::Vectorized<scalar_t> y) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec zero(0);
  if constexpr (act == kHSwish) {
    const Vec three(3), half(0.5);
    Vec inside = grad * (y / three + half);
    return Vec::blendv(Vec::blendv(inside, grad, y > three), zero,
                       y < Vec(-3));
  } else if constexpr (act == kReLU6) {
    return Vec::blendv(grad, zero, (y <= zero) | (y >= Vec(6)));
  } else {
    return Vec::blendv(grad, zero, y <= zero);
  }
}

// Calls f(c, n) for the vector-sized column chunks of a row of C channels.
template <typename scalar_t, typename F>
inline void for_chunks(int64_t C, const F& f) {
  constexpr int64_t V = at::vec::Vectorized<scalar_t>::size();
  int64_t c = 0;
  for (; c + V <= C; c += V) f(c, V);
  if (c < C) f(c, C - c);
}

template <typename scalar_t>
inline at::vec::Vectorized<scalar_t> load(const scalar_t* p, int64_t n) {
  using Vec = at::vec::Vectorized<scalar_t>;
  return n == Vec::size() ? Vec::loadu(p) : Vec::loadu(p, n);
}

template <typename scalar_t>
inline void store(at::vec::Vectorized<scalar_t> v, scalar_t* p, int64_t n) {
  v.store(p, static_cast<int>(n));
}

template <typename scalar_t, int64_t act>
void act_affine_impl(const at::Tensor& x, const at::Tensor& scale,
                     const at::Tensor& shift, at::Tensor& out) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t M = x.size(0), C = x.size(1);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* sp = scale.data_ptr<scalar_t>();
  const scalar_t* bp = shift.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for_chunks<scalar_t>(C, [&](int64_t c, int64_t n) {
        Vec y = load(xp + r * C + c, n) * load(sp + c, n) + load(bp + c, n);
        store(activate<scalar_t, act>(y), op + r * C + c, n);
      });
    }
  });
}

template <typename scalar_t, int64_t act>
std::vector<at::Tensor> bn_act_backward_impl(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& shift, const at::Tensor& mean, const at::Tensor& invstd,
    const at::Tensor& weight, at::Tensor& grad_x) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t M = x.size(0), C = x.size(1);
  const scalar_t* gp = grad.data_ptr<scalar_t>();
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* sp = scale.data_ptr<scalar_t>();
  const scalar_t* bp = shift.data_ptr<scalar_t>();
  const scalar_t* mp = mean.data_ptr<scalar_t>();

  // Pass 1: per channel, sum(dy) and sum(dy * (x - mean)),
  // dy = grad * act'(y).
  const int64_t threads = at::get_num_threads();
  std::vector<double> partial(threads * 2 * C, 0.);
  at::parallel_for(0, M, kBlockRows, [&](int64_t begin, int64_t end) {
    double* acc = partial.data() + at::get_thread_num() * 2 * C;
    std::vector<scalar_t> block(2 * C);
    for (int64_t r0 = begin; r0 < end; r0 += kBlockRows) {
      std::fill(block.begin(), block.end(), scalar_t(0));
      const int64_t r1 = std::min(end, r0 + kBlockRows);
      for (int64_t r = r0; r < r1; ++r) {
        for_chunks<scalar_t>(C, [&](int64_t c, int64_t n) {
          Vec xv = load(xp + r * C + c, n);
          Vec y = xv * load(sp + c, n) + load(bp + c, n);
          Vec dy = activation_grad<scalar_t, act>(load(gp + r * C + c, n), y);
          store(load(block.data() + c, n) + dy, block.data() + c, n);
          store(load(block.data() + C + c, n) + dy * (xv - load(mp + c, n)),
                block.data() + C + c, n);
        });
      }
      for (int64_t i = 0; i < 2 * C; ++i) acc[i] += block[i];
    }
  });
  auto options = x.options().dtype(at::kDouble);
  at::Tensor sums = at::zeros({2, C}, options);
  double* sum = sums.data_ptr<double>();
  for (int64_t t = 0; t < threads; ++t)
    for (int64_t i = 0; i < 2 * C; ++i) sum[i] += partial[t * 2 * C + i];

  // grad_x = dy * a + x * b + k: the batch-norm backward, per channel.
  at::Tensor coef = at::empty({3, C}, x.options());
  scalar_t* a = coef.data_ptr<scalar_t>();
  scalar_t* b = a + C;
  scalar_t* k = b + C;
  const scalar_t* ip = invstd.data_ptr<scalar_t>();
  const scalar_t* wp = weight.defined() ? weight.data_ptr<scalar_t>() : nullptr;
  for (int64_t c = 0; c < C; ++c) {
    const double istd = ip[c], w = wp ? double(wp[c]) : 1.;
    const double mean_dy = sum[c] / M;
    const double mean_dy_xmu = sum[C + c] / M;
    const double proj = mean_dy_xmu * istd * istd;
    a[c] = istd * w;
    b[c] = -proj * istd * w;
    k[c] = (mp[c] * proj - mean_dy) * istd * w;
  }

  // Pass 2: recompute dy and write grad_x (may alias grad).
  scalar_t* op = grad_x.data_ptr<scalar_t>();
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for_chunks<scalar_t>(C, [&](int64_t c, int64_t n) {
        Vec xv = load(xp + r * C + c, n);
        Vec y = xv * load(sp + c, n) + load(bp + c, n);
        Vec dy = activation_grad<scalar_t, act>(load(gp + r * C + c, n), y);
        store(dy * load(a + c, n) + xv * load(b + c, n) + load(k + c, n),
              op + r * C + c, n);
      });
    }
  });
  return {sums[0].to(x.scalar_type()), sums[1].to(x.scalar_type())};
}

void check_rows(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() &&
                  t.scalar_type() == x.scalar_type() && t.sizes() == x.sizes(),
              name, " must be a contiguous CPU tensor like x ", x.sizes());
}

void check_channels(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.dim() == 1 &&
                  t.size(0) == x.size(1) && t.scalar_type() == x.scalar_type(),
              name, " must be a contiguous CPU vector of ", x.size(1),
              " channels of x's dtype");
}

#define DISPATCH_ACT(act, NAME, ...)                                 \
  switch (act) {                                                     \
    case kHSwish: { constexpr int64_t NAME = kHSwish; __VA_ARGS__; break; } \
    case kReLU6: { constexpr int64_t NAME = kReLU6; __VA_ARGS__; break; }   \
    case kReLU: { constexpr int64_t NAME = kReLU; __VA_ARGS__; break; }     \
    default: TORCH_CHECK(false, "unknown activation code ", act);    \
  }

}  // namespace

// out = act(x * scale + shift) for (M, C) rows; out may be x.
void act_affine(const at::Tensor& x, const at::Tensor& scale,
                const at::Tensor& shift, int64_t act, at::Tensor out) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.device().is_cpu(),
              "x must be contiguous (M, C) CPU rows");
  check_rows(out, x, "out");
  check_channels(scale, x, "scale");
  check_channels(shift, x, "shift");
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "act_affine", [&] {
    DISPATCH_ACT(act, A, (act_affine_impl<scalar_t, A>(x, scale, shift, out)));
  });
}

// Backward of act(BatchNorm(x)) in training mode for (M, C) rows, where
// BatchNorm(x) == x * scale + shift with the batch mean and invstd. Writes
// the input gradient into grad_x (may be grad) and returns per channel
// (sum(dy), sum(dy * (x - mean))), dy the gradient at the BatchNorm output:
// the bias gradient and, times invstd, the weight gradient.
std::vector<at::Tensor> bn_act_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& shift, const at::Tensor& mean, const at::Tensor& invstd,
    const c10::optional<at::Tensor>& weight, int64_t act, at::Tensor grad_x) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.device().is_cpu() &&
                  x.size(0) > 0,
              "x must be non-empty contiguous (M, C) CPU rows");
  check_rows(grad, x, "grad");
  check_rows(grad_x, x, "grad_x");
  for (const auto& [t, name] : {std::pair{scale, "scale"}, {shift, "shift"},
                                {mean, "mean"}, {invstd, "invstd"}})
    check_channels(t, x, name);
  at::Tensor w = weight.has_value() ? *weight : at::Tensor();
  if (w.defined()) check_channels(w, x, "weight");
  std::vector<at::Tensor> sums;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bn_act_backward", [&] {
    DISPATCH_ACT(act, A, (sums = bn_act_backward_impl<scalar_t, A>(
                              grad, x, scale, shift, mean, invstd, w, grad_x)));
  });
  return sums;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("act_affine", &act_affine, "out = act(x * scale + shift)");
  m.def("bn_act_backward", &bn_act_backward,
        "backward of act(BatchNorm(x)), batch statistics");
}
