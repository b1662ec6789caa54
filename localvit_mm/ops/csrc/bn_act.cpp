// Fused CPU kernels of the locality feed-forward's training path, each in as
// few passes over the (M, C) hidden rows as the maths allows: batch
// statistics, the activation of an affine map (a BatchNorm, also recomputed
// from its input), the BatchNorm + activation backward, the depth-wise conv
// backward joined to the BatchNorm + activation before it, and the backward
// of the channel gate. ATen needs a separate pass with a fresh output for
// every step of each.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/extension.h>

#include <algorithm>
#include <vector>

namespace {

// Codes of the Python side; kIdentity is internal (gradients already taken
// through the activation).
enum Activation : int64_t { kHSwish = 0, kReLU6 = 1, kReLU = 2, kIdentity = 3 };

// Rows per block of column_sums: summed in scalar_t, then into double.
constexpr int64_t kBlockRows = 128;

template <typename scalar_t>
using Vec = at::vec::Vectorized<scalar_t>;

template <typename scalar_t, int64_t act>
inline Vec<scalar_t> activate(Vec<scalar_t> y) {
  using V = Vec<scalar_t>;
  const V zero(0), six(6);
  if constexpr (act == kHSwish) {
    return y * at::vec::minimum(at::vec::maximum(y + V(3), zero), six) / six;
  } else if constexpr (act == kReLU6) {
    return at::vec::minimum(at::vec::maximum(y, zero), six);
  } else if constexpr (act == kReLU) {
    return at::vec::maximum(y, zero);
  } else {
    return y;
  }
}

// grad * act'(y), with ATen's conventions at the kinks.
template <typename scalar_t, int64_t act>
inline Vec<scalar_t> activation_grad(Vec<scalar_t> grad, Vec<scalar_t> y) {
  using V = Vec<scalar_t>;
  const V zero(0);
  if constexpr (act == kHSwish) {
    const V three(3), half(0.5);
    V inside = grad * (y / three + half);
    return V::blendv(V::blendv(inside, grad, y > three), zero, y < V(-3));
  } else if constexpr (act == kReLU6) {
    return V::blendv(grad, zero, (y <= zero) | (y >= V(6)));
  } else if constexpr (act == kReLU) {
    return V::blendv(grad, zero, y <= zero);
  } else {
    return grad;
  }
}

// Calls f(c, n) for the vector-sized column chunks of a row of C channels.
template <typename scalar_t, typename F>
inline void for_chunks(int64_t C, const F& f) {
  constexpr int64_t size = Vec<scalar_t>::size();
  int64_t c = 0;
  for (; c + size <= C; c += size) f(c, size);
  if (c < C) f(c, C - c);
}

template <typename scalar_t>
inline Vec<scalar_t> load(const scalar_t* p, int64_t n) {
  return n == Vec<scalar_t>::size() ? Vec<scalar_t>::loadu(p)
                                    : Vec<scalar_t>::loadu(p, n);
}

template <typename scalar_t>
inline void store(Vec<scalar_t> v, scalar_t* p, int64_t n) {
  v.store(p, static_cast<int>(n));
}

// p[c:c+n] += v
template <typename scalar_t>
inline void add_to(scalar_t* p, Vec<scalar_t> v, int64_t n) {
  store(load(p, n) + v, p, n);
}

// Column sums of `width` values per thread, in double: each thread sums
// blocks of rows in scalar_t and adds every block here.
class ThreadSums {
 public:
  explicit ThreadSums(int64_t width)
      : width_(width), sums_(at::get_num_threads() * width, 0.) {}
  double* of_this_thread() {
    return sums_.data() + at::get_thread_num() * width_;
  }
  template <typename scalar_t>
  void add(const std::vector<scalar_t>& block) {
    double* acc = of_this_thread();
    for (int64_t i = 0; i < width_; ++i) acc[i] += block[i];
  }
  std::vector<double> total() const {
    std::vector<double> out(width_, 0.);
    for (size_t t = 0; t < sums_.size(); t += width_)
      for (int64_t i = 0; i < width_; ++i) out[i] += sums_[t + i];
    return out;
  }

 private:
  int64_t width_;
  std::vector<double> sums_;
};

// The double sums as a (rows, C) tensor of x's dtype.
at::Tensor sums_tensor(const std::vector<double>& sum, int64_t rows,
                       const at::Tensor& x) {
  const int64_t C = sum.size() / rows;
  return at::from_blob(const_cast<double*>(sum.data()), {rows, C},
                       x.options().dtype(at::kDouble))
      .to(x.scalar_type(), false, /*copy=*/true);
}

// Per channel sums over M rows of the two terms (a, b) = terms(r, c, n)
// gives for row r's chunk [c, c + n): 2 C doubles, sum(a) then sum(b).
// Each thread sums blocks of rows in scalar_t and adds them in double.
template <typename scalar_t, typename Terms>
std::vector<double> column_sums(int64_t M, int64_t C, const Terms& terms) {
  ThreadSums sums(2 * C);
  at::parallel_for(0, M, kBlockRows, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> block(2 * C);
    for (int64_t r0 = begin; r0 < end; r0 += kBlockRows) {
      std::fill(block.begin(), block.end(), scalar_t(0));
      for (int64_t r = r0; r < std::min(end, r0 + kBlockRows); ++r) {
        for_chunks<scalar_t>(C, [&](int64_t c, int64_t n) {
          auto [a, b] = terms(r, c, n);
          add_to(block.data() + c, a, n);
          add_to(block.data() + C + c, b, n);
        });
      }
      sums.add(block);
    }
  });
  return sums.total();
}

// (mean, biased variance) per channel from sum(d) and sum(d^2) over M rows
// (the first and second C entries of sum), d = value - shift (shift null:
// d = value).
template <typename scalar_t>
std::vector<at::Tensor> mean_and_var(const std::vector<double>& sum,
                                     const scalar_t* shift, int64_t M,
                                     const at::TensorOptions& options) {
  const int64_t C = sum.size() / 2;
  at::Tensor mean = at::empty({C}, options), var = at::empty({C}, options);
  for (int64_t c = 0; c < C; ++c) {
    const double d = sum[c] / M;
    mean.data_ptr<scalar_t>()[c] = (shift ? shift[c] : 0.) + d;
    var.data_ptr<scalar_t>()[c] = std::max(sum[C + c] / M - d * d, 0.);
  }
  return {mean, var};
}

template <typename scalar_t>
std::vector<at::Tensor> channel_stats_impl(const at::Tensor& x) {
  const int64_t M = x.size(0), C = x.size(1);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  // Sums of (x - x[0]) and its square: the first row as a shift keeps
  // E[d^2] - E[d]^2 free of cancellation for data far from zero.
  auto sums = column_sums<scalar_t>(M, C, [&](int64_t r, int64_t c,
                                               int64_t n) {
    auto d = load(xp + r * C + c, n) - load(xp + c, n);
    return std::pair{d, d * d};
  });
  return mean_and_var<scalar_t>(sums, xp, M, x.options());
}

// y = act(x * scale + shift) for `rows` contiguous rows (scale and shift
// may be null; y may be x): the conv stages make their per-image input in a
// cache-sized buffer with it.
template <typename scalar_t, int64_t act>
void act_affine_rows(const scalar_t* x, const scalar_t* scale,
                     const scalar_t* shift, int64_t rows, int64_t C,
                     scalar_t* y) {
  for (int64_t r = 0; r < rows; ++r) {
    for_chunks<scalar_t>(C, [&](int64_t c, int64_t n) {
      auto z = load(x + r * C + c, n);
      if (scale) z = z * load(scale + c, n);
      if (shift) z = z + load(shift + c, n);
      store(activate<scalar_t, act>(z), y + r * C + c, n);
    });
  }
}

template <typename scalar_t, int64_t act>
void act_affine_impl(const at::Tensor& x, const at::Tensor& scale,
                     const at::Tensor& shift, at::Tensor& out) {
  const int64_t C = x.size(1);
  at::parallel_for(0, x.size(0), 16, [&](int64_t begin, int64_t end) {
    act_affine_rows<scalar_t, act>(
        x.data_ptr<scalar_t>() + begin * C, scale.data_ptr<scalar_t>(),
        shift.data_ptr<scalar_t>(), end - begin, C,
        out.data_ptr<scalar_t>() + begin * C);
  });
}

// Per channel (a, b, k) of the batch-norm input gradient
// grad_x = dy * a + x * b + k, from sum(dy) and sum(dy * (x - mean)).
template <typename scalar_t>
at::Tensor bn_backward_coefficients(const double* sum_dy,
                                    const double* sum_dy_xmu,
                                    const at::Tensor& mean,
                                    const at::Tensor& invstd,
                                    const at::Tensor& weight, int64_t M) {
  const int64_t C = mean.size(0);
  at::Tensor coef = at::empty({3, C}, mean.options());
  scalar_t* a = coef.data_ptr<scalar_t>();
  const scalar_t* mp = mean.data_ptr<scalar_t>();
  const scalar_t* ip = invstd.data_ptr<scalar_t>();
  const scalar_t* wp = weight.defined() ? weight.data_ptr<scalar_t>() : nullptr;
  for (int64_t c = 0; c < C; ++c) {
    const double istd = ip[c], w = wp ? double(wp[c]) : 1.;
    const double proj = sum_dy_xmu[c] / M * istd * istd;
    a[c] = istd * w;
    a[C + c] = -proj * istd * w;
    a[2 * C + c] = (mp[c] * proj - sum_dy[c] / M) * istd * w;
  }
  return coef;
}

// The gradient at act's input for row r, chunk [c, c + n): grad (plus the
// row's group share of pooled) through act at y = x * scale + shift.
template <typename scalar_t, int64_t act>
struct RowGrad {
  const scalar_t *grad, *x, *scale, *shift, *pooled;
  int64_t C, group;
  Vec<scalar_t> operator()(int64_t r, int64_t c, int64_t n) const {
    auto g = load(grad + r * C + c, n);
    if (pooled) g = g + load(pooled + (r / group) * C + c, n);
    if constexpr (act == kIdentity) return g;
    auto y = load(x + r * C + c, n) * load(scale + c, n) + load(shift + c, n);
    return activation_grad<scalar_t, act>(g, y);
  }
};

// The BatchNorm input gradient dy * a + x * b + k of row r, chunk
// [c, c + n), from the gradient dy at its output and the (a, b, k)
// coefficients of bn_backward_coefficients.
template <typename scalar_t, int64_t act>
struct BnInputGrad {
  RowGrad<scalar_t, act> dy;
  const scalar_t *x, *coef;
  Vec<scalar_t> operator()(int64_t r, int64_t c, int64_t n) const {
    const int64_t C = dy.C;
    return dy(r, c, n) * load(coef + c, n) +
           load(x + r * C + c, n) * load(coef + C + c, n) +
           load(coef + 2 * C + c, n);
  }
};

// grad_x = the BatchNorm input gradient, row by row (may be dy's memory).
template <typename scalar_t, int64_t act>
void bn_backward_apply_impl(const BnInputGrad<scalar_t, act>& grad,
                            int64_t M, at::Tensor& grad_x) {
  const int64_t C = grad.dy.C;
  scalar_t* op = grad_x.data_ptr<scalar_t>();
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for_chunks<scalar_t>(C, [&](int64_t c, int64_t n) {
        store(grad(r, c, n), op + r * C + c, n);
      });
    }
  });
}

template <typename scalar_t, int64_t act>
RowGrad<scalar_t, act> row_grad(const at::Tensor& grad, const at::Tensor& x,
                                const at::Tensor& scale,
                                const at::Tensor& shift,
                                const at::Tensor& pooled) {
  const int64_t M = x.size(0);
  const scalar_t* pp = pooled.defined() ? pooled.data_ptr<scalar_t>() : nullptr;
  return {grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
          scale.data_ptr<scalar_t>(), shift.data_ptr<scalar_t>(), pp,
          x.size(1), pp ? M / pooled.size(0) : M};
}

// Pass 1: per channel sum(dy) and sum(dy * (x - mean)) and the (a, b, k)
// coefficients of the input gradient; pass 2 (when grad_x is defined):
// recompute dy and write grad_x.
template <typename scalar_t, int64_t act>
std::vector<at::Tensor> bn_act_backward_impl(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& shift, const at::Tensor& mean, const at::Tensor& invstd,
    const at::Tensor& weight, const at::Tensor& pooled, at::Tensor& grad_x) {
  const int64_t M = x.size(0), C = x.size(1);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* mp = mean.data_ptr<scalar_t>();
  const auto dy = row_grad<scalar_t, act>(grad, x, scale, shift, pooled);
  const std::vector<double> sum = column_sums<scalar_t>(
      M, C, [&](int64_t r, int64_t c, int64_t n) {
        auto d = dy(r, c, n);
        return std::pair{d, d * (load(xp + r * C + c, n) - load(mp + c, n))};
      });
  at::Tensor coef = bn_backward_coefficients<scalar_t>(
      sum.data(), sum.data() + C, mean, invstd, weight, M);
  if (grad_x.defined())
    bn_backward_apply_impl(
        BnInputGrad<scalar_t, act>{dy, xp, coef.data_ptr<scalar_t>()}, M,
        grad_x);
  at::Tensor out = sums_tensor(sum, 2, x);
  return {out[0], out[1], coef};
}

// Depth-wise conv (stride 1, padding k // 2) of one H x W image held in y
// (channels last): each output pixel gathers its k * k taps, and
// epilogue(r, c, n, t) receives output row r's chunk [c, c + n).
template <typename scalar_t, typename Epilogue>
void dwconv_image(const scalar_t* y, const scalar_t* taps, int64_t H,
                  int64_t W, int64_t C, int64_t k,
                  std::vector<int64_t>& tap_ids, std::vector<int64_t>& rows,
                  const Epilogue& epilogue) {
  const int64_t pad = k / 2;
  for (int64_t p = 0; p < H; ++p) {
    for (int64_t q = 0; q < W; ++q) {
      int64_t taps_in = 0;
      for (int64_t i = 0; i < k; ++i) {
        for (int64_t j = 0; j < k; ++j) {
          const int64_t pi = p + i - pad, qj = q + j - pad;
          if (pi >= 0 && pi < H && qj >= 0 && qj < W) {
            tap_ids[taps_in] = i * k + j;
            rows[taps_in++] = pi * W + qj;
          }
        }
      }
      const int64_t r = p * W + q;
      for_chunks<scalar_t>(C, [&](int64_t c, int64_t n) {
        Vec<scalar_t> t(0);
        for (int64_t a = 0; a < taps_in; ++a)
          t = t + load(taps + tap_ids[a] * C + c, n) *
                      load(y + rows[a] * C + c, n);
        epilogue(r, c, n, t);
      });
    }
  }
}

// Depth-wise conv backward (stride 1, padding k // 2) into the gradient at
// the BatchNorm output before it, one image at a time: the conv input
// act(x * scale + shift) is made for the image in a cache-sized buffer, the
// weight gradient is summed tap by tap, the input gradient is a conv of the
// output gradient, and the BatchNorm column sums of the result are taken on
// the way.
template <typename scalar_t, int64_t act>
std::vector<at::Tensor> dwconv_bn_act_backward_impl(
    const BnInputGrad<scalar_t, act>& output_grad, const at::Tensor& x,
    const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& mean,
    const at::Tensor& taps, int64_t H, int64_t W, at::Tensor& dy_out) {
  const int64_t C = x.size(1), HW = H * W, images = x.size(0) / HW;
  const int64_t k = taps.size(0), K = k * k, pad = k / 2;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* sp = scale.data_ptr<scalar_t>();
  const scalar_t* bp = shift.data_ptr<scalar_t>();
  const scalar_t* mp = mean.data_ptr<scalar_t>();
  const scalar_t* wp = taps.data_ptr<scalar_t>();  // (k, k, C)
  scalar_t* dp = dy_out.data_ptr<scalar_t>();
  std::vector<scalar_t> turned(K * C);  // taps[k-1-i][k-1-j]
  for (int64_t t = 0; t < K; ++t)
    std::copy(wp + (K - 1 - t) * C, wp + (K - t) * C, turned.data() + t * C);
  // Per thread: weight gradient (K, C), sum(dy), sum(dy * (x - mean)).
  ThreadSums sums((K + 2) * C);
  at::parallel_for(0, images, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> y(HW * C), g(HW * C), block((K + 2) * C);
    std::vector<int64_t> tap_ids(K), rows(K);
    const scalar_t* gb = g.data();
    for (int64_t image = begin; image < end; ++image) {
      const int64_t base = image * HW * C;
      const scalar_t* xb = xp + base;
      act_affine_rows<scalar_t, act>(xb, sp, bp, HW, C, y.data());
      for (int64_t r = 0; r < HW; ++r) {  // the conv output's gradient
        for_chunks<scalar_t>(C, [&](int64_t c, int64_t n) {
          store(output_grad(image * HW + r, c, n), g.data() + r * C + c, n);
        });
      }
      std::fill(block.begin(), block.end(), scalar_t(0));
      scalar_t* gw = block.data();
      // Weight gradient, tap by tap: the output pixels whose input pixel
      // (p + i - pad, q + j - pad) lies inside the image form a rectangle.
      for (int64_t i = 0; i < k; ++i) {
        for (int64_t j = 0; j < k; ++j) {
          const int64_t p0 = std::max<int64_t>(0, pad - i),
                        p1 = std::min(H, H + pad - i);
          const int64_t q0 = std::max<int64_t>(0, pad - j),
                        q1 = std::min(W, W + pad - j);
          const int64_t shift_rows = (i - pad) * W + (j - pad);
          // Row by row along memory (whole cache lines, prefetched), the
          // tap's C sums staying in L1.
          scalar_t* acc = gw + (i * k + j) * C;
          for (int64_t p = p0; p < p1; ++p) {
            for (int64_t r = p * W + q0; r < p * W + q1; ++r) {
              const scalar_t *g_row = gb + r * C,
                             *y_row = y.data() + (r + shift_rows) * C;
              for_chunks<scalar_t>(C, [&](int64_t c, int64_t n) {
                add_to(acc + c, load(g_row + c, n) * load(y_row + c, n), n);
              });
            }
          }
        }
      }
      // Input gradient: the conv of the output gradient with the kernel
      // turned by 180 degrees, then through act and into BN's column sums.
      dwconv_image(gb, turned.data(), H, W, C, k, tap_ids, rows,
                   [&](int64_t r, int64_t c, int64_t n, Vec<scalar_t> g_in) {
                     auto xv = load(xb + r * C + c, n);
                     auto dy = activation_grad<scalar_t, act>(
                         g_in, xv * load(sp + c, n) + load(bp + c, n));
                     store(dy, dp + base + r * C + c, n);
                     add_to(gw + K * C + c, dy, n);
                     add_to(gw + (K + 1) * C + c,
                            dy * (xv - load(mp + c, n)), n);
                   });
      sums.add(block);
    }
  });
  at::Tensor out = sums_tensor(sums.total(), K + 2, x);
  return {out.narrow(0, 0, K).view({k, k, C}), out[K], out[K + 1]};
}

// Training forward: t = dwconv(act(x * scale + shift)) into out, with the
// batch statistics of t summed on the way, shifted by each image's first
// pixel against cancellation.
template <typename scalar_t, int64_t act>
std::vector<at::Tensor> bn_act_dwconv_impl(const at::Tensor& x,
                                           const at::Tensor& scale,
                                           const at::Tensor& shift,
                                           const at::Tensor& taps, int64_t H,
                                           int64_t W, at::Tensor& out) {
  const int64_t M = x.size(0), C = x.size(1), HW = H * W, images = M / HW;
  const int64_t k = taps.size(0);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* wp = taps.data_ptr<scalar_t>();  // (k, k, C)
  scalar_t* op = out.data_ptr<scalar_t>();
  ThreadSums sums(2 * C);  // sum(t), sum(t^2)
  at::parallel_for(0, images, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> y(HW * C), block(2 * C);
    std::vector<double> exact(2 * C);
    std::vector<int64_t> tap_ids(k * k), rows(k * k);
    for (int64_t image = begin; image < end; ++image) {
      act_affine_rows<scalar_t, act>(xp + image * HW * C,
                                 scale.data_ptr<scalar_t>(),
                                 shift.data_ptr<scalar_t>(), HW, C, y.data());
      std::fill(block.begin(), block.end(), scalar_t(0));
      scalar_t* o = op + image * HW * C;
      dwconv_image(y.data(), wp, H, W, C, k, tap_ids, rows,
                   [&](int64_t r, int64_t c, int64_t n, Vec<scalar_t> t) {
                     store(t, o + r * C + c, n);
                     auto d = t - load(o + c, n);  // the image's first pixel
                     add_to(block.data() + c, d, n);
                     add_to(block.data() + C + c, d * d, n);
                   });
      // sum(t) = sum(d) + HW t0; sum(t^2) = sum(d^2) + 2 t0 sum(d) + HW t0^2
      for (int64_t c = 0; c < C; ++c) {
        const double t0 = o[c], sd = block[c];
        exact[c] = sd + HW * t0;
        exact[C + c] = block[C + c] + 2 * t0 * sd + HW * t0 * t0;
      }
      sums.add(exact);
    }
  });
  return mean_and_var<scalar_t>(sums.total(), nullptr, M, x.options());
}

// Inference: x = act(dwconv(act(x + input_bias)) + bias) in place, image
// by image, and each image's token mean of the result into pooled when it
// is defined (both biases optional).
template <typename scalar_t, int64_t act>
void act_dwconv_act_impl(at::Tensor& x, const at::Tensor& input_bias,
                         const at::Tensor& taps, const at::Tensor& bias,
                         int64_t H, int64_t W, at::Tensor& pooled) {
  const int64_t M = x.size(0), C = x.size(1), HW = H * W, images = M / HW;
  const int64_t k = taps.size(0);
  scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* wp = taps.data_ptr<scalar_t>();
  const scalar_t* ip =
      input_bias.defined() ? input_bias.data_ptr<scalar_t>() : nullptr;
  const scalar_t* bp = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
  scalar_t* pp = pooled.defined() ? pooled.data_ptr<scalar_t>() : nullptr;
  at::parallel_for(0, images, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> y(HW * C);
    std::vector<int64_t> tap_ids(k * k), rows(k * k);
    for (int64_t image = begin; image < end; ++image) {
      scalar_t* o = xp + image * HW * C;  // free once y holds the input
      act_affine_rows<scalar_t, act>(o, nullptr, ip, HW, C, y.data());
      scalar_t* mean = pp ? pp + image * C : nullptr;
      if (mean) std::fill(mean, mean + C, scalar_t(0));
      dwconv_image(y.data(), wp, H, W, C, k, tap_ids, rows,
                   [&](int64_t r, int64_t c, int64_t n, Vec<scalar_t> t) {
                     if (bp) t = t + load(bp + c, n);
                     t = activate<scalar_t, act>(t);
                     store(t, o + r * C + c, n);
                     if (mean) add_to(mean + c, t / Vec<scalar_t>(HW), n);
                   });
    }
  });
}

template <typename scalar_t, int64_t act>
void gated_backward_impl(at::Tensor& grad_u, const at::Tensor& x,
                         const at::Tensor& scale, const at::Tensor& shift,
                         const at::Tensor& gate, at::Tensor& gated_u,
                         at::Tensor& grad_gate) {
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
          auto y = load(xp + r * C + c, n) * load(sp + c, n) + load(bp + c, n);
          auto u = activate<scalar_t, act>(y);
          auto g = load(gp + r * C + c, n), w = load(wp + b * C + c, n);
          add_to(op + b * C + c, g * u, n);
          store(u * w, up + r * C + c, n);
          store(g * w, gp + r * C + c, n);
        });
      }
    }
  });
}

void check_x(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.device().is_cpu() &&
                  x.size(0) > 0,
              "x must be non-empty contiguous (M, C) CPU rows");
}

void check_rows(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() &&
                  t.scalar_type() == x.scalar_type() && t.sizes() == x.sizes(),
              name, " must be a contiguous CPU tensor like x ", x.sizes());
}

// Each (tensor, name): a per-channel vector of x's; undefined tensors (the
// optional arguments not given) pass.
void check_channels(
    const at::Tensor& x,
    std::initializer_list<std::pair<at::Tensor, const char*>> vectors) {
  for (const auto& [t, name] : vectors) {
    TORCH_CHECK(!t.defined() ||
                    (t.device().is_cpu() && t.is_contiguous() && t.dim() == 1 &&
                     t.size(0) == x.size(1) &&
                     t.scalar_type() == x.scalar_type()),
                name, " must be a contiguous CPU vector of ", x.size(1),
                " channels of x's dtype");
  }
}

void check_groups(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.dim() == 2 &&
                  t.size(0) > 0 && x.size(0) % t.size(0) == 0 &&
                  t.size(1) == x.size(1) && t.scalar_type() == x.scalar_type(),
              name, " must be a contiguous CPU (groups, ", x.size(1),
              ") tensor of x's dtype, the groups dividing its ", x.size(0),
              " rows");
}

void check_lattice(const at::Tensor& x, const at::Tensor& taps,
                   int64_t height, int64_t width) {
  TORCH_CHECK(height > 0 && width > 0 && x.size(0) % (height * width) == 0,
              "the ", x.size(0), " rows are not images of ", height, "x",
              width, " pixels");
  TORCH_CHECK(taps.device().is_cpu() && taps.is_contiguous() &&
                  taps.dim() == 3 && taps.size(0) == taps.size(1) &&
                  taps.size(0) % 2 == 1 && taps.size(2) == x.size(1) &&
                  taps.scalar_type() == x.scalar_type(),
              "taps must be a contiguous CPU (k, k, ", x.size(1),
              ") tensor of x's dtype with an odd k");
}

at::Tensor defined_or_empty(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? *t : at::Tensor();
}

#define DISPATCH_ACT(act, NAME, ...)                                        \
  switch (act) {                                                            \
    case kHSwish: { constexpr int64_t NAME = kHSwish; __VA_ARGS__; break; } \
    case kReLU6: { constexpr int64_t NAME = kReLU6; __VA_ARGS__; break; }   \
    case kReLU: { constexpr int64_t NAME = kReLU; __VA_ARGS__; break; }     \
    default: TORCH_CHECK(false, "unknown activation code ", act);           \
  }

}  // namespace

// Per channel mean and biased variance of (M, C) rows.
std::vector<at::Tensor> channel_stats(const at::Tensor& x) {
  check_x(x);
  std::vector<at::Tensor> stats;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "channel_stats", [&] {
    stats = channel_stats_impl<scalar_t>(x);
  });
  return stats;
}

// out = act(x * scale + shift) for (M, C) rows; out may be x.
void act_affine(const at::Tensor& x, const at::Tensor& scale,
                const at::Tensor& shift, int64_t act, at::Tensor out) {
  check_x(x);
  check_rows(out, x, "out");
  check_channels(x, {{scale, "scale"}, {shift, "shift"}});
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "act_affine", [&] {
    DISPATCH_ACT(act, A, (act_affine_impl<scalar_t, A>(x, scale, shift, out)));
  });
}

// Backward of act(BatchNorm(x)) in training mode for (M, C) rows, where
// BatchNorm(x) == x * scale + shift with the batch mean and invstd. The
// rows come in G equal groups (images) when pooled_grad (G, C) is given: it
// is added to the gradient of every row of its group (the gradient of the
// group's mean, divided by the group size). Writes the input gradient into
// grad_x when given (may be grad) and returns per channel (sum(dy),
// sum(dy * (x - mean)), coef), dy the gradient at the BatchNorm output:
// the bias gradient, times invstd the weight gradient, and the (3, C)
// coefficients of the input gradient dy * a + x * b + k.
std::vector<at::Tensor> bn_act_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& shift, const at::Tensor& mean, const at::Tensor& invstd,
    const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& pooled_grad, int64_t act,
    const c10::optional<at::Tensor>& grad_x) {
  check_x(x);
  check_rows(grad, x, "grad");
  at::Tensor out = defined_or_empty(grad_x);
  if (out.defined()) check_rows(out, x, "grad_x");
  at::Tensor w = defined_or_empty(weight), pooled = defined_or_empty(pooled_grad);
  check_channels(x, {{scale, "scale"}, {shift, "shift"}, {mean, "mean"},
                     {invstd, "invstd"}, {w, "weight"}});
  if (pooled.defined()) check_groups(pooled, x, "pooled_grad");
  std::vector<at::Tensor> sums;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bn_act_backward", [&] {
    DISPATCH_ACT(act, A, (sums = bn_act_backward_impl<scalar_t, A>(
                              grad, x, scale, shift, mean, invstd, w, pooled,
                              out)));
  });
  return sums;
}

// Backward of act2(BN2(dwconv(act(BN1(x))))), the depth-wise k x k conv
// with stride 1, padding k // 2 and no bias, for (M, C) rows of images of
// H x W pixels (row-major, channels last), down to BN1's output:
// * BN2's side: grad (at act2's output, plus the per-image share of
//   pooled_grad as in bn_act_backward), t (BN2's input = the conv output),
//   BN2 as t * scale2 + shift2, and coef2, the third result of
//   bn_act_backward(..., grad_x=None) for BN2. The conv output gradient is
//   made per image in cache, never in memory.
// * BN1's side: BN1(x) == x * scale + shift with the batch mean.
// Writes dy (the gradient at BN1's output) into dy_out and returns (the
// conv weight gradient as (k, k, C), sum(dy), sum(dy * (x - mean))). taps
// is the conv weight as (k, k, C).
std::vector<at::Tensor> dwconv_bn_act_backward(
    const at::Tensor& grad, const at::Tensor& t, const at::Tensor& scale2,
    const at::Tensor& shift2, const c10::optional<at::Tensor>& pooled_grad,
    const at::Tensor& coef2, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& shift, const at::Tensor& mean, const at::Tensor& taps,
    int64_t height, int64_t width, int64_t act, at::Tensor dy_out) {
  check_x(x);
  for (const auto& [r, name] : {std::pair{grad, "grad"}, {t, "t"},
                                {dy_out, "dy_out"}})
    check_rows(r, x, name);
  check_channels(x, {{scale2, "scale2"}, {shift2, "shift2"}, {scale, "scale"},
                     {shift, "shift"}, {mean, "mean"}});
  TORCH_CHECK(coef2.is_contiguous() && coef2.dim() == 2 &&
                  coef2.size(0) == 3 && coef2.size(1) == x.size(1) &&
                  coef2.scalar_type() == x.scalar_type(),
              "coef2 must be the (3, ", x.size(1), ") coefficients that "
              "bn_act_backward returns");
  at::Tensor pooled = defined_or_empty(pooled_grad);
  if (pooled.defined()) check_groups(pooled, x, "pooled_grad");
  check_lattice(x, taps, height, width);
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dwconv_bn_act_backward", [&] {
    DISPATCH_ACT(act, A, ({
      const BnInputGrad<scalar_t, A> output_grad{
          row_grad<scalar_t, A>(grad, t, scale2, shift2, pooled),
          t.data_ptr<scalar_t>(), coef2.data_ptr<scalar_t>()};
      out = dwconv_bn_act_backward_impl<scalar_t, A>(
          output_grad, x, scale, shift, mean, taps, height, width, dy_out);
    }));
  });
  return out;
}

// t = dwconv(act(x * scale + shift)) for (M, C) rows of images of H x W
// pixels (channels last), written into out; taps is the conv weight as
// (k, k, C), k odd. Returns t's per channel mean and biased variance.
std::vector<at::Tensor> bn_act_dwconv(const at::Tensor& x,
                                      const at::Tensor& scale,
                                      const at::Tensor& shift,
                                      const at::Tensor& taps, int64_t height,
                                      int64_t width, int64_t act,
                                      at::Tensor out) {
  check_x(x);
  check_rows(out, x, "out");
  check_channels(x, {{scale, "scale"}, {shift, "shift"}});
  check_lattice(x, taps, height, width);
  std::vector<at::Tensor> stats;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bn_act_dwconv", [&] {
    DISPATCH_ACT(act, A, (stats = bn_act_dwconv_impl<scalar_t, A>(
                              x, scale, shift, taps, height, width, out)));
  });
  return stats;
}

// The BatchNorm input gradient from dy (the gradient at its output) and
// the column sums of dy (dwconv_bn_act_backward returns them); grad_x
// may be dy.
void bn_backward_apply(const at::Tensor& dy, const at::Tensor& x,
                       const at::Tensor& mean, const at::Tensor& invstd,
                       const c10::optional<at::Tensor>& weight,
                       const at::Tensor& sum_dy, const at::Tensor& sum_dy_xmu,
                       at::Tensor grad_x) {
  check_x(x);
  check_rows(dy, x, "dy");
  check_rows(grad_x, x, "grad_x");
  at::Tensor w = defined_or_empty(weight);
  check_channels(x, {{mean, "mean"}, {invstd, "invstd"}, {sum_dy, "sum_dy"},
                     {sum_dy_xmu, "sum_dy_xmu"}, {w, "weight"}});
  const int64_t C = x.size(1), M = x.size(0);
  at::Tensor sums = at::stack({sum_dy, sum_dy_xmu}).to(at::kDouble);
  const double* sp = sums.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bn_backward_apply", [&] {
    const RowGrad<scalar_t, kIdentity> rows{dy.data_ptr<scalar_t>(),
                                            nullptr, nullptr, nullptr,
                                            nullptr, C, M};
    at::Tensor coef = bn_backward_coefficients<scalar_t>(sp, sp + C, mean,
                                                         invstd, w, M);
    bn_backward_apply_impl(BnInputGrad<scalar_t, kIdentity>{
                               rows, x.data_ptr<scalar_t>(),
                               coef.data_ptr<scalar_t>()},
                           M, grad_x);
  });
}

// Inference form of the conv stage: x = act(dwconv(act(x + input_bias)) +
// bias) in place for (M, C) rows of images of H x W pixels (channels
// last); taps is the conv weight as (k, k, C), k odd, the biases optional
// (input_bias: the projection's bias, so that its GEMM need not add it).
// With pool, returns the per-image token mean (images, C) of the result
// (else None), which a channel gate needs.
at::Tensor act_dwconv_act_(at::Tensor x,
                           const c10::optional<at::Tensor>& input_bias,
                           const at::Tensor& taps,
                           const c10::optional<at::Tensor>& bias,
                           int64_t height, int64_t width, int64_t act,
                           bool pool) {
  check_x(x);
  check_lattice(x, taps, height, width);
  at::Tensor ib = defined_or_empty(input_bias), b = defined_or_empty(bias);
  check_channels(x, {{ib, "input_bias"}, {b, "bias"}});
  at::Tensor pooled;
  if (pool) pooled = at::empty({x.size(0) / (height * width), x.size(1)},
                               x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "act_dwconv_act_", [&] {
    DISPATCH_ACT(act, A, (act_dwconv_act_impl<scalar_t, A>(
                              x, ib, taps, b, height, width, pooled)));
  });
  return pool ? pooled : at::Tensor();
}

// Backward of (act(x * scale + shift) * gate) for (M, C) rows in B equal
// groups and a (B, C) gate, given the gradient grad_u of the product:
// returns the gate's gradient, writes act(...) * gate into gated_u and
// multiplies grad_u by the gate in place.
at::Tensor gated_backward(at::Tensor grad_u, const at::Tensor& x,
                          const at::Tensor& scale, const at::Tensor& shift,
                          const at::Tensor& gate, int64_t act,
                          at::Tensor gated_u) {
  check_x(x);
  check_rows(grad_u, x, "grad_u");
  check_rows(gated_u, x, "gated_u");
  check_channels(x, {{scale, "scale"}, {shift, "shift"}});
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
  m.def("bn_act_dwconv", &bn_act_dwconv,
        "dwconv(act(x * scale + shift)) and its batch statistics");
  m.def("act_dwconv_act_", &act_dwconv_act_,
        "x = act(dwconv(act(x + input_bias)) + bias) in place, token means");
  m.def("bn_act_backward", &bn_act_backward,
        "backward of act(BatchNorm(x)), batch statistics");
  m.def("dwconv_bn_act_backward", &dwconv_bn_act_backward,
        "backward of dwconv(act(BatchNorm(x))) to the BatchNorm output");
  m.def("bn_backward_apply", &bn_backward_apply,
        "BatchNorm input gradient from its output gradient and column sums");
  m.def("gated_backward", &gated_backward,
        "backward of act(x * scale + shift) * gate");
}
