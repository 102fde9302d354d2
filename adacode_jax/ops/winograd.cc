// Winograd F(2x2, 3x3) convolution (Lavin & Gray 2016), NHWC, stride 1, padding 1, float32, as
// an XLA FFI CPU handler (adacode_jax/ops/winograd.py builds and calls it).
//
// y = A^T [ (G g G^T) . (B^T d B) ] A per 2x2 output tile d: 16 products per tile and channel
// pair instead of 36. Fused per block of tiles so that the transformed input block V and the
// products M stay in the core's L2 cache:
//   1. input transform of the block's tiles: V[16][tiles][C];
//   2. for each of the 16 positions p, M[p] = V[p] . U[p] (tiles x C times C x O), with U the
//      transformed kernel, computed first (per call) and packed as U[16][O/NR][C][NR] so that
//      an NR-wide column panel (NR = 32 with AVX-512, 16 with AVX2) is contiguous;
//   3. output transform (plus bias) straight into y.
// Blocks are shared out over XLA's intra-op thread pool; the calling thread works too.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// VW floats per vector register; the products' register tile is MR rows by NR = 2 VW columns
// (AVX-512: 8 x 32, 16 accumulators of 32; AVX2: 6 x 16, 12 of 16 registers).
#if defined(__AVX512F__)
constexpr int VW = 16, MR = 8;
#elif defined(__AVX__)
constexpr int VW = 8, MR = 6;
#else
constexpr int VW = 4, MR = 6;
#endif
constexpr int NR = 2 * VW;

typedef float vec __attribute__((vector_size(VW * sizeof(float))));

inline vec ld(const float* p) { vec r; std::memcpy(&r, p, sizeof(r)); return r; }
inline void st(float* p, vec v) { std::memcpy(p, &v, sizeof(v)); }

struct Shape { int64_t n, h, w, c, o, th, tw, tiles, tb, blocks; };

// Input transform of tiles [t0, t0 + cnt) of image n into V[16][tbp][c].
void input_transform(const Shape& s, const float* x, int64_t n, int64_t t0, int64_t cnt,
                     int64_t tbp, float* V) {
  const int64_t C = s.c;
  const float* xn = x + n * s.h * s.w * C;
  for (int64_t i = 0; i < tbp; ++i) {
    if (i >= cnt) {  // padding rows of the block: zeros
      for (int p = 0; p < 16; ++p) std::memset(V + (p * tbp + i) * C, 0, C * sizeof(float));
      continue;
    }
    const int64_t t = t0 + i, ti = t / s.tw, tj = t % s.tw;
    const float* src[4][4];
    for (int a = 0; a < 4; ++a) {
      const int64_t r = 2 * ti - 1 + a;
      for (int b = 0; b < 4; ++b) {
        const int64_t c = 2 * tj - 1 + b;
        src[a][b] = (r >= 0 && r < s.h && c >= 0 && c < s.w) ? xn + (r * s.w + c) * C : nullptr;
      }
    }
    for (int64_t c = 0; c < C; c += VW) {
      vec d[4][4];
      for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) d[a][b] = src[a][b] ? ld(src[a][b] + c) : vec{};
      vec t[4][4];
      for (int b = 0; b < 4; ++b) {
        t[0][b] = d[0][b] - d[2][b];
        t[1][b] = d[1][b] + d[2][b];
        t[2][b] = d[2][b] - d[1][b];
        t[3][b] = d[1][b] - d[3][b];
      }
      for (int a = 0; a < 4; ++a) {
        float* base = V + (a * 4 * tbp + i) * C + c;
        st(base + 0 * tbp * C, t[a][0] - t[a][2]);
        st(base + 1 * tbp * C, t[a][1] + t[a][2]);
        st(base + 2 * tbp * C, t[a][2] - t[a][1]);
        st(base + 3 * tbp * C, t[a][1] - t[a][3]);
      }
    }
  }
}

// M[p][tbp][ob] = V[p] (tbp x C) . U[p][:, o0:o0+ob]
void products(const Shape& s, const float* V, const float* U, int64_t tbp, int64_t o0,
              int64_t ob, float* M) {
  const int64_t C = s.c, O = s.o;
  for (int p = 0; p < 16; ++p) {
    const float* Vp = V + p * tbp * C;
    float* Mp = M + p * tbp * ob;
    for (int64_t j = 0; j < ob; j += NR) {
      const float* Up = U + (p * (O / NR) + (o0 + j) / NR) * C * NR;
      for (int64_t r0 = 0; r0 < tbp; r0 += MR) {
        vec acc0[MR], acc1[MR];
        for (int r = 0; r < MR; ++r) { acc0[r] = vec{}; acc1[r] = vec{}; }
        const float* vr = Vp + r0 * C;
        const float* uk = Up;
        for (int64_t k = 0; k < C; ++k, uk += NR) {
          const vec u0 = ld(uk), u1 = ld(uk + VW);
          for (int r = 0; r < MR; ++r) {
            const float a = vr[r * C + k];
            acc0[r] += a * u0;
            acc1[r] += a * u1;
          }
        }
        for (int r = 0; r < MR; ++r) {
          st(Mp + (r0 + r) * ob + j, acc0[r]);
          st(Mp + (r0 + r) * ob + j + VW, acc1[r]);
        }
      }
    }
  }
}

void output_transform(const Shape& s, const float* M, const float* bias, int64_t n, int64_t t0,
                      int64_t cnt, int64_t tbp, int64_t o0, int64_t ob, float* y) {
  const int64_t O = s.o;
  float* yn = y + n * s.h * s.w * O;
  for (int64_t i = 0; i < cnt; ++i) {
    const int64_t t = t0 + i, ti = t / s.tw, tj = t % s.tw;
    const bool r1 = 2 * ti + 1 < s.h, c1 = 2 * tj + 1 < s.w;
    float* y00 = yn + ((2 * ti) * s.w + 2 * tj) * O + o0;
    for (int64_t j = 0; j < ob; j += VW) {
      vec m[4][4];
      for (int p = 0; p < 16; ++p) m[p / 4][p % 4] = ld(M + (p * tbp + i) * ob + j);
      vec q[2][4];
      for (int b = 0; b < 4; ++b) {
        q[0][b] = m[0][b] + m[1][b] + m[2][b];
        q[1][b] = m[1][b] - m[2][b] - m[3][b];
      }
      const vec bv = ld(bias + o0 + j);
      st(y00 + j, q[0][0] + q[0][1] + q[0][2] + bv);
      if (c1) st(y00 + O + j, q[0][1] - q[0][2] - q[0][3] + bv);
      if (r1) {
        st(y00 + s.w * O + j, q[1][0] + q[1][1] + q[1][2] + bv);
        if (c1) st(y00 + (s.w + 1) * O + j, q[1][1] - q[1][2] - q[1][3] + bv);
      }
    }
  }
}

void run_unit(const Shape& s, const float* x, const float* U, const float* bias, float* y,
              int64_t unit, int64_t ob) {
  thread_local std::vector<float> Vbuf, Mbuf;
  const int64_t n = unit / s.blocks, blk = unit % s.blocks;
  const int64_t t0 = blk * s.tb, cnt = std::min(s.tb, s.tiles - t0);
  const int64_t tbp = (cnt + MR - 1) / MR * MR;
  Vbuf.resize(16 * tbp * s.c);
  Mbuf.resize(16 * tbp * ob);
  input_transform(s, x, n, t0, cnt, tbp, Vbuf.data());
  for (int64_t o0 = 0; o0 < s.o; o0 += ob) {
    products(s, Vbuf.data(), U, tbp, o0, ob, Mbuf.data());
    output_transform(s, Mbuf.data(), bias, n, t0, cnt, tbp, o0, ob, y);
  }
}

// Runs fn(0 .. n-1) over XLA's intra-op pool and the calling thread; returns when all are done.
// Helpers that start late find no work left; the shared state outlives the call for them.
struct Loop {
  std::function<void(int64_t)> fn;
  int64_t n = 0;
  std::atomic<int64_t> next{0}, done{0};
  void work() {
    for (;;) {
      const int64_t i = next.fetch_add(1);
      if (i >= n) return;
      fn(i);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

void parallel_for(ffi::ThreadPool& pool, int64_t n, std::function<void(int64_t)> fn) {
  auto loop = std::make_shared<Loop>();
  loop->fn = std::move(fn);
  loop->n = n;
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([loop] { loop->work(); });
  loop->work();
  while (loop->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

// U[p][o/NR][c][NR] = (G g G^T)[p] for output panel `panel` of the HWIO kernel w (3, 3, C, O),
// G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]].
void transform_kernel_panel(const float* w, int64_t C, int64_t O, int64_t panel, float* U) {
  const int64_t P = O / NR;
  for (int64_t c = 0; c < C; ++c) {
    for (int half = 0; half < 2; ++half) {
      const int64_t o = panel * NR + half * VW;
      vec g[3][3];
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) g[i][j] = ld(w + ((i * 3 + j) * C + c) * O + o);
      vec t[4][3];                                   // G g: along the kernel's rows
      for (int j = 0; j < 3; ++j) {
        t[0][j] = g[0][j];
        t[1][j] = (g[0][j] + g[1][j] + g[2][j]) * 0.5f;
        t[2][j] = (g[0][j] - g[1][j] + g[2][j]) * 0.5f;
        t[3][j] = g[2][j];
      }
      for (int a = 0; a < 4; ++a) {                  // (G g) G^T: along its columns
        const vec r[4] = {t[a][0], (t[a][0] + t[a][1] + t[a][2]) * 0.5f,
                          (t[a][0] - t[a][1] + t[a][2]) * 0.5f, t[a][2]};
        for (int b = 0; b < 4; ++b)
          st(U + (((a * 4 + b) * P + panel) * C + c) * NR + half * VW, r[b]);
      }
    }
  }
}

// Inputs x (N, H, W, C), the HWIO kernel w (3, 3, C, O) and bias (O); results y (N, H, W, O)
// and u, XLA-allocated scratch for the transformed kernel (16 * C * O floats).
ffi::Error Impl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> y,
                ffi::ResultBuffer<ffi::F32> u, int64_t tile_block, int64_t out_block) {
  auto xd = x.dimensions();
  auto wd = w.dimensions();
  if (xd.size() != 4 || wd.size() != 4 || wd[0] != 3 || wd[1] != 3 || wd[2] != xd[3] ||
      u->element_count() != 16 * wd[2] * wd[3] || bias.element_count() != wd[3])
    return ffi::Error::InvalidArgument("winograd: expected x (N, H, W, C), w (3, 3, C, O), "
                                       "bias (O), scratch of 16*C*O");
  Shape s;
  s.n = xd[0]; s.h = xd[1]; s.w = xd[2]; s.c = xd[3]; s.o = wd[3];
  if (s.c % 16 || s.o % 32)
    return ffi::Error::InvalidArgument("winograd: C must be a multiple of 16, O of 32");
  s.th = (s.h + 1) / 2; s.tw = (s.w + 1) / 2; s.tiles = s.th * s.tw;
  s.tb = std::max<int64_t>(MR, std::min<int64_t>(tile_block, s.tiles));
  s.blocks = (s.tiles + s.tb - 1) / s.tb;
  const float* wp = w.typed_data();
  float* U = u->typed_data();
  parallel_for(pool, s.o / NR, [&](int64_t panel) {
    transform_kernel_panel(wp, s.c, s.o, panel, U);
  });
  const int64_t ob = (out_block > 0 && s.o % out_block == 0 && out_block % NR == 0) ? out_block
                                                                                    : s.o;
  const float* xp = x.typed_data();
  const float* bp = bias.typed_data();
  float* yp = y->typed_data();
  parallel_for(pool, s.n * s.blocks, [&](int64_t unit) {
    run_unit(s, xp, U, bp, yp, unit, ob);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AdacodeWinogradF2, Impl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("tile_block")
                                  .Attr<int64_t>("out_block"));
