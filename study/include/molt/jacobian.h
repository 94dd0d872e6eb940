// Jacobian faithfulness: exact per-token Jacobians of a MOLT, a transcoder and the teacher MLP,
// and `jacobian_cosine` (mean over tokens of cos(vec J_model, vec J_teacher)), exact or randomised.
//
// All host float64 with OpenMP over tokens (but the Compiled method's model J·v, which the
// bundle's `jvp` entry computes in fp32 on an executor); results do not depend on the thread count.
// Gate derivatives: every gate here is piecewise linear with slope 1 where it is open
// (JumpReLU: g = a·H(a−θ⁺), θ⁺ = max(θ,0); ReLU: g = max(a,0); TopK: the selection is locally
// constant), so φ'(a_t) = 1 on the active set and 0 elsewhere; the delta at the threshold is ignored (it
// has measure zero, and finite differences never see it away from thresholds).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "molt/backend.h"
#include "molt/gate.h"
#include "molt/plan.h"
#include "molt/status.h"
#include "molt/teacher.h"

namespace molt {

/// A layer's params by name, float32, in the layouts of docs/bundle.md (what Executor::read or a
/// checkpoint gives): molt enc_w [T,d], enc_b [T], theta [T] (jumprelu), u<k> [N,d,R],
/// v<k> [N,R,d], dec_b [d]; transcoder enc_w [F,d], enc_b [F], theta [F] (jumprelu),
/// dec_w [F,d], skip_w [d,d] (skip), dec_b [d]. Params that the gate or flags do not use may be
/// absent; optimiser state and gradients are ignored.
using HostTensors = std::map<std::string, std::vector<float>>;

/// A replacement layer (MOLT or transcoder) copied to float64. Fields are laid out for the
/// Jacobian code; build one with makeReplacement().
struct ReplacementLayer {
  bool molt = true;  // false: transcoder
  GateKind gate = GateKind::JumpReLU; // topk: transcoders only
  int64_t topk = 0;  // topk's k
  int64_t d = 0;     // model width
  int64_t units = 0; // T transforms (molt) or F features (transcoder)
  std::vector<double> enc_w, enc_b, theta; // [units,d], [units], [units] (zeros if unused)
  double enc_sign = -1; // molt: pre = x·enc_wᵀ − enc_b; transcoder: + enc_b
  std::vector<double> dec_b;                 // [d] (zeros without a decoder bias)
  // molt: transform t is U_t = u[u_off[t] ..] as [d, rank[t]] and V_t = v[v_off[t] ..] as
  // [rank[t], d], both row-major.
  std::vector<int64_t> rank, u_off, v_off;
  std::vector<double> u, v;
  // transcoder
  std::vector<double> dec_w;  // [F,d], row f is feature f's decoder vector
  std::vector<double> skip_w; // [d,d] or empty
};

/// Validates names, sizes and finiteness against the model description (one-line errors).
StatusOr<ReplacementLayer> makeReplacement(const ModelDesc &model, const HostTensors &params);

/// One open unit of a token: index, pre-activation a and gate value g (φ'(a) = 1).
struct ActiveUnit {
  int64_t index = 0;
  double pre = 0;
  double gate = 0;
};
/// The open units for one token, in increasing index order.
void activeUnits(const ReplacementLayer &layer, const double *x, std::vector<ActiveUnit> &out);

void replacementForward(const ReplacementLayer &layer, const double *x, double *y);
/// Dense d×d Jacobian, row-major (J[i*d+j] = ∂y_i/∂x_j):
///   molt:       J = Σ_{t active} [ g_t U_tV_t + (U_tV_t x) e_tᵀ ]
///   transcoder: J = Σ_{f active} dec_w_f enc_w_fᵀ + skip_w
/// Costs (Σ_active r_t)·d² (molt) or L0·d² (transcoder): tests and references only.
void replacementJacobian(const ReplacementLayer &layer, const double *x, double *J);
/// Jacobian-vector product out = J(x)·v without forming J: (Σ_active r_t)·2d + L0·d.
void replacementJvp(const ReplacementLayer &layer, const double *x, const double *v, double *out);
/// out = J_teacher(x)·v = w_out·(act'(pre) ∘ (w_in·v)): 2·d·h.
void teacherJvp(const TeacherMlp &teacher, const double *x, const double *v, double *out);

enum class JacobianMethod {
  // Identities on small matrices, never a d×d Jacobian per token (costs: study/src/jacobian/exact.cpp). Tables
  // in doubles: h² (teacher); MOLT (r_t + 2)·h per transform ever open and d + 1 per ordered
  // pair of transforms ever open together; transcoder h + 1 per feature ever open. At d = 384,
  // h = 1536, N = 2, L0 ≈ 20: about 100 MB, and a token costs ~6 ms of one core against
  // ~130 ms for Dense (docs/jacobian.md).
  Exact,
  Dense,  // forms both d×d Jacobians per token: the reference the Exact path is tested against
  Random, // Jacobian-vector products with random probes
  // Random's estimator with the model's J·v from the bundle's compiled `jvp` entry, run on
  // JacobianOptions::executor (CPU or CUDA); the teacher's J·v stays on the host. The same seed
  // draws the same probes as Random, so the two differ only by the executor's fp32 rounding.
  Compiled,
};

struct JacobianOptions {
  JacobianMethod method = JacobianMethod::Exact;
  int probes = 64;       // Random: probes per token
  bool gaussian = false; // Random: N(0,1) probes instead of Rademacher ±1
  uint64_t seed = 1;     // Random: probe stream (per token, so thread count does not matter)
  // Compiled: an executor of the layer's bundle holding its params (written by the caller, e.g.
  // from a checkpoint). Its `x`, `x_dot` and `y_dot` are overwritten, batch() rows at a time.
  Executor *executor = nullptr;
};

struct JacobianCosine {
  double mean = 0;      // mean over tokens of the per-token cosine (or its estimate)
  double std_error = 0; // standard error of `mean` as an estimate of the population mean over
                        // tokens: sd of the per-token values / sqrt(tokens)
  double probe_std_error = 0; // Random, Compiled: the part due to the probes alone, conditional on
                              // these tokens (delta method on each token's probe averages); 0
                              // for Exact and Dense
  int64_t tokens = 0;
  int64_t degenerate = 0;         // tokens where either Jacobian is zero: their cosine counts as 0
  std::vector<double> per_token;  // each token's cosine (or estimate), in row order
};

/// The metric over n rows of x (float32, [n, d], e.g. a data shard's `x`).
StatusOr<JacobianCosine> jacobianCosine(const ReplacementLayer &layer, const TeacherMlp &teacher,
                                        const float *x, int64_t n, const JacobianOptions &options = {});

/// The one-call form molt-eval uses: a bundle's model description, its params by name, the
/// teacher and the rows. Params must map raw x to raw y (normalisation folded in).
StatusOr<JacobianCosine> jacobianCosine(const ModelDesc &model, const HostTensors &params,
                                        const TeacherMlp &teacher, const float *x, int64_t n,
                                        const JacobianOptions &options = {});

} // namespace molt
