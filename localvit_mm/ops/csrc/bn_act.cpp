// Fused CPU kernels of the locality feed-forward's training path, each in as
// few passes over the (M, C) hidden rows as the maths allows: batch
// statistics, the activation of an affine map (a BatchNorm, also recomputed
// from its input), its BatchNorm backward, and the backward of the channel
// gate. ATen needs a separate
// pass with a fresh output for every step of each.
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

template <typename scalar_t>
std::vector<at::Tensor> channel_stats_impl(const at::Tensor& x) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t M = x.size(0), C = x.size(1);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  // Sums of (x - x[0]) and its square: the first row as a shift keeps
  // E[d^2] - E[d]^2 free of cancellation for data far from zero.
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
          Vec d = load(xp + r * C + c, n) - load(xp + c, n);
          store(load(block.data() + c, n) + d, block.data() + c, n);
          store(load(block.data() + C + c, n) + d * d, block.data() + C + c,
                n);
        });
      }
      for (int64_t i = 0; i < 2 * C; ++i) acc[i] += block[i];
    }
  });
  at::Tensor mean = at::empty({C}, x.options());
  at::Tensor var = at::empty({C}, x.options());
  scalar_t* mp = mean.data_ptr<scalar_t>();
  scalar_t* vp = var.data_ptr<scalar_t>();
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0., sum_sq = 0.;
    for (int64_t t = 0; t < threads; ++t) {
      sum += partial[t * 2 * C + c];
      sum_sq += partial[t * 2 * C + C + c];
    }
    const double d = sum / M;
    mp[c] = xp[c] + d;
    vp[c] = std::max(sum_sq / M - d * d, 0.);
  }
  return {mean, var};
}

template <typename scalar_t, int64_t act>
std::vector<at::Tensor> bn_act_backward_impl(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& shift, const at::Tensor& mean, const at::Tensor& invstd,
    const at::Tensor& weight, const at::Tensor& pooled_grad,
    at::Tensor& grad_x) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t M = x.size(0), C = x.size(1);
  const scalar_t* gp = grad.data_ptr<scalar_t>();
  // The gradient of each row, plus its group's share of pooled_grad.
  const scalar_t* pp =
      pooled_grad.defined() ? pooled_grad.data_ptr<scalar_t>() : nullptr;
  const int64_t group = pp ? M / pooled_grad.size(0) : M;
  auto row_grad = [&](int64_t r, int64_t c, int64_t n) {
    Vec g = load(gp + r * C + c, n);
    return pp ? g + load(pp + (r / group) * C + c, n) : g;
  };
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
          Vec dy = activation_grad<scalar_t, act>(row_grad(r, c, n), y);
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
        Vec dy = activation_grad<scalar_t, act>(row_grad(r, c, n), y);
        store(dy * load(a + c, n) + xv * load(b + c, n) + load(k + c, n),
              op + r * C + c, n);
      });
    }
  });
  return {sums[0].to(x.scalar_type()), sums[1].to(x.scalar_type())};
}

template <typename scalar_t, int64_t act>
void gated_backward_impl(at::Tensor& grad_u, const at::Tensor& x,
                         const at::Tensor& scale, const at::Tensor& shift,
                         const at::Tensor& gate, at::Tensor& gated_u,
                         at::Tensor& grad_gate) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t M = x.size(0), C = x.size(1), B = gate.size(0);
  const int64_t N = M / B;
  scalar_t* gp = grad_u.data_ptr<scalar_t>();
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* sp = scale.data_ptr<scalar_t>();
  const scalar_t* bp = shift.data_ptr<scalar_t>();
  const scalar_t* wp = gate.data_ptr<scalar_t>();
  scalar_t* up = gated_u.data_ptr<scalar_t>();
  scalar_t* op = grad_gate.data_ptr<scalar_t>();  // zeros
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t r = b * N; r < (b + 1) * N; ++r) {
        for_chunks<scalar_t>(C, [&](int64_t c, int64_t n) {
          Vec y = load(xp + r * C + c, n) * load(sp + c, n) + load(bp + c, n);
          Vec u = activate<scalar_t, act>(y);
          Vec g = load(gp + r * C + c, n), w = load(wp + b * C + c, n);
          store(load(op + b * C + c, n) + g * u, op + b * C + c, n);
          store(u * w, up + r * C + c, n);
          store(g * w, gp + r * C + c, n);
        });
      }
    }
  });
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

void check_groups(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.dim() == 2 &&
                  t.size(0) > 0 && x.size(0) % t.size(0) == 0 &&
                  t.size(1) == x.size(1) && t.scalar_type() == x.scalar_type(),
              name, " must be a contiguous CPU (groups, ", x.size(1),
              ") tensor of x's dtype, the groups dividing its ", x.size(0),
              " rows");
}

#define DISPATCH_ACT(act, NAME, ...)                                 \
  switch (act) {                                                     \
    case kHSwish: { constexpr int64_t NAME = kHSwish; __VA_ARGS__; break; } \
    case kReLU6: { constexpr int64_t NAME = kReLU6; __VA_ARGS__; break; }   \
    case kReLU: { constexpr int64_t NAME = kReLU; __VA_ARGS__; break; }     \
    default: TORCH_CHECK(false, "unknown activation code ", act);    \
  }

}  // namespace

// Per channel mean and biased variance of (M, C) rows.
std::vector<at::Tensor> channel_stats(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.device().is_cpu() &&
                  x.size(0) > 0,
              "x must be non-empty contiguous (M, C) CPU rows");
  std::vector<at::Tensor> stats;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "channel_stats", [&] {
    stats = channel_stats_impl<scalar_t>(x);
  });
  return stats;
}

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
// BatchNorm(x) == x * scale + shift with the batch mean and invstd. The
// rows come in G equal groups (images) when pooled_grad (G, C) is given: it
// is added to the gradient of every row of its group (the gradient of the
// group's mean, divided by the group size). Writes the input gradient into
// grad_x (may be grad) and returns per channel (sum(dy), sum(dy * (x -
// mean))), dy the gradient at the BatchNorm output: the bias gradient and,
// times invstd, the weight gradient.
std::vector<at::Tensor> bn_act_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& shift, const at::Tensor& mean, const at::Tensor& invstd,
    const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& pooled_grad, int64_t act,
    at::Tensor grad_x) {
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
  at::Tensor pooled = pooled_grad.has_value() ? *pooled_grad : at::Tensor();
  if (pooled.defined()) check_groups(pooled, x, "pooled_grad");
  std::vector<at::Tensor> sums;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bn_act_backward", [&] {
    DISPATCH_ACT(act, A, (sums = bn_act_backward_impl<scalar_t, A>(
                              grad, x, scale, shift, mean, invstd, w, pooled,
                              grad_x)));
  });
  return sums;
}

// Backward of (act(x * scale + shift) * gate) for (M, C) rows in B equal
// groups and a (B, C) gate, given the gradient grad_u of the product:
// returns the gate's gradient, writes act(...) * gate into gated_u and
// multiplies grad_u by the gate in place.
at::Tensor gated_backward(at::Tensor grad_u, const at::Tensor& x,
                          const at::Tensor& scale, const at::Tensor& shift,
                          const at::Tensor& gate, int64_t act,
                          at::Tensor gated_u) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.device().is_cpu(),
              "x must be contiguous (M, C) CPU rows");
  check_rows(grad_u, x, "grad_u");
  check_rows(gated_u, x, "gated_u");
  check_channels(scale, x, "scale");
  check_channels(shift, x, "shift");
  check_groups(gate, x, "gate");
  at::Tensor grad_gate = at::zeros_like(gate);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gated_backward", [&] {
    DISPATCH_ACT(act, A, (gated_backward_impl<scalar_t, A>(
                              grad_u, x, scale, shift, gate, gated_u,
                              grad_gate)));
  });
  return grad_gate;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("channel_stats", &channel_stats, "per channel mean, biased var");
  m.def("act_affine", &act_affine, "out = act(x * scale + shift)");
  m.def("bn_act_backward", &bn_act_backward,
        "backward of act(BatchNorm(x)), batch statistics");
  m.def("gated_backward", &gated_backward,
        "backward of act(x * scale + shift) * gate");
}
