// The replacement layer in float64: building it from a model description and its params, the
// open units of a token, its forward, dense Jacobian and Jacobian-vector products, and the
// per-token products the cosine methods share.
#include "jacobian/common.h"

#include <algorithm>
#include <numeric>

namespace molt {

namespace {

std::string shapeError(const std::string &name, size_t got, int64_t want) {
  return "param '" + name + "' has " + std::to_string(got) + " values, expected " +
         std::to_string(want);
}

} // namespace

namespace jacobian {

// For a molt token: hs = [V_t x] (each open t, r_t values, concatenated) and zs = [U_t V_t x]
// (L0 × d). Transcoders need neither.
void moltProducts(const ReplacementLayer &L, const double *x, const std::vector<ActiveUnit> &act,
                  std::vector<double> &hs, std::vector<double> &zs) {
  int64_t R = 0;
  for (const ActiveUnit &a : act)
    R += L.rank[size_t(a.index)];
  hs.assign(size_t(R), 0.0);
  zs.assign(act.size() * size_t(L.d), 0.0);
  int64_t off = 0;
  for (size_t q = 0; q < act.size(); ++q) {
    int64_t t = act[q].index, r = L.rank[size_t(t)];
    const double *V = &L.v[size_t(L.v_off[size_t(t)])], *U = &L.u[size_t(L.u_off[size_t(t)])];
    double *hv = &hs[size_t(off)], *z = &zs[q * size_t(L.d)];
    for (int64_t i = 0; i < r; ++i)
      hv[i] = dot(V + i * L.d, x, L.d);
    for (int64_t a = 0; a < L.d; ++a)
      z[a] = dot(U + a * r, hv, r);
    off += r;
  }
}

// out = J·v for a token whose open units and molt products are known.
void jvpKnown(const ReplacementLayer &L, const std::vector<ActiveUnit> &act,
              const std::vector<double> &zs, const double *v, double *out, std::vector<double> &tmp) {
  std::fill(out, out + L.d, 0.0);
  for (size_t q = 0; q < act.size(); ++q) {
    int64_t t = act[q].index;
    const double *e = &L.enc_w[size_t(t * L.d)];
    double ev = dot(e, v, L.d);
    if (L.molt) {
      int64_t r = L.rank[size_t(t)];
      const double *V = &L.v[size_t(L.v_off[size_t(t)])], *U = &L.u[size_t(L.u_off[size_t(t)])];
      tmp.resize(size_t(r));
      for (int64_t i = 0; i < r; ++i)
        tmp[size_t(i)] = act[q].gate * dot(V + i * L.d, v, L.d);
      for (int64_t a = 0; a < L.d; ++a)
        out[a] += dot(U + a * r, tmp.data(), r);
      axpy(ev, &zs[q * size_t(L.d)], out, L.d);
    } else {
      axpy(ev, &L.dec_w[size_t(t * L.d)], out, L.d);
    }
  }
  if (!L.skip_w.empty())
    for (int64_t a = 0; a < L.d; ++a)
      out[a] += dot(&L.skip_w[size_t(a * L.d)], v, L.d);
}

void teacherJvpKnown(const TeacherMlp &T, const double *delta, const double *v, double *out,
                     std::vector<double> &tmp) {
  tmp.resize(size_t(T.h));
  for (int64_t k = 0; k < T.h; ++k)
    tmp[size_t(k)] = delta[k] * dot(&T.w_in[size_t(k * T.d)], v, T.d);
  for (int64_t a = 0; a < T.d; ++a)
    out[a] = dot(&T.w_out[size_t(a * T.h)], tmp.data(), T.h);
}

} // namespace jacobian

using jacobian::axpy;
using jacobian::jvpKnown;
using jacobian::moltProducts;
using jacobian::teacherJvpKnown;
using jacobian::dot;

StatusOr<ReplacementLayer> makeReplacement(const ModelDesc &model, const HostTensors &params) {
  ReplacementLayer L;
  L.d = model.d_model;
  const std::optional<GateKind> gate = parseGateKind(model.gate.kind);
  if (!gate)
    return invalidArgument("gate '" + model.gate.kind + "' is not one of " + gateKindList());
  L.gate = *gate;
  if (L.d <= 0)
    return invalidArgument("model d_model must be positive");
  if (model.kind == "molt") {
    L.molt = true;
    L.enc_sign = -1;
    if (L.gate == GateKind::TopK)
      return invalidArgument("a molt cannot have a topk gate (transcoders only)");
    for (const Bucket &b : model.buckets) {
      if (b.rank <= 0 || b.count < 0)
        return invalidArgument("bucket (rank " + std::to_string(b.rank) + ", count " +
                               std::to_string(b.count) + ") is invalid");
      L.units += b.count;
    }
  } else if (model.kind == "transcoder") {
    L.molt = false;
    L.enc_sign = +1;
    L.units = model.features;
    L.topk = model.gate.k;
    if (L.gate == GateKind::TopK && (L.topk <= 0 || L.topk > L.units))
      return invalidArgument("topk k=" + std::to_string(L.topk) + " is outside [1, features]");
  } else {
    return invalidArgument("model kind '" + model.kind + "' is not molt or transcoder");
  }
  if (L.units <= 0)
    return invalidArgument("model has no transforms or features");

  auto fetch = [&](const std::string &name, int64_t count, bool required,
                   std::vector<double> &into) -> Status {
    auto it = params.find(name);
    if (it == params.end()) {
      if (required)
        return notFound("param '" + name + "' is missing");
      into.assign(size_t(count), 0.0);
      return Status::ok();
    }
    if (int64_t(it->second.size()) != count)
      return invalidArgument(shapeError(name, it->second.size(), count));
    into.assign(it->second.begin(), it->second.end());
    for (double v : into)
      if (!std::isfinite(v))
        return invalidArgument("param '" + name + "' holds a non-finite value");
    return Status::ok();
  };
  const int64_t d = L.d, n = L.units;
  MOLT_RETURN_IF_ERROR(fetch("enc_w", n * d, true, L.enc_w));
  MOLT_RETURN_IF_ERROR(fetch("enc_b", n, true, L.enc_b));
  MOLT_RETURN_IF_ERROR(fetch("theta", n, L.gate == GateKind::JumpReLU, L.theta));
  MOLT_RETURN_IF_ERROR(fetch("dec_b", d, model.decoder_bias, L.dec_b));
  if (L.molt) {
    for (size_t k = 0; k < model.buckets.size(); ++k) {
      const Bucket &b = model.buckets[k];
      std::vector<double> u, v;
      MOLT_RETURN_IF_ERROR(fetch("u" + std::to_string(k), b.count * d * b.rank, true, u));
      MOLT_RETURN_IF_ERROR(fetch("v" + std::to_string(k), b.count * b.rank * d, true, v));
      for (int64_t i = 0; i < b.count; ++i) {
        L.rank.push_back(b.rank);
        L.u_off.push_back(int64_t(L.u.size()) + i * d * b.rank);
        L.v_off.push_back(int64_t(L.v.size()) + i * b.rank * d);
      }
      L.u.insert(L.u.end(), u.begin(), u.end());
      L.v.insert(L.v.end(), v.begin(), v.end());
    }
  } else {
    MOLT_RETURN_IF_ERROR(fetch("dec_w", n * d, true, L.dec_w));
    if (model.skip)
      MOLT_RETURN_IF_ERROR(fetch("skip_w", d * d, true, L.skip_w));
  }
  return L;
}

void activeUnits(const ReplacementLayer &L, const double *x, std::vector<ActiveUnit> &out) {
  out.clear();
  std::vector<double> pre(size_t(L.units));
  for (int64_t t = 0; t < L.units; ++t)
    pre[size_t(t)] = dot(&L.enc_w[size_t(t * L.d)], x, L.d) + L.enc_sign * L.enc_b[size_t(t)];
  if (L.gate == GateKind::TopK) {
    // The k largest pre-activations (ties to the lower index), then ReLU.
    std::vector<int64_t> idx(size_t(L.units));
    std::iota(idx.begin(), idx.end(), 0);
    std::nth_element(idx.begin(), idx.begin() + (L.topk - 1), idx.end(), [&](int64_t a, int64_t b) {
      return pre[size_t(a)] > pre[size_t(b)] || (pre[size_t(a)] == pre[size_t(b)] && a < b);
    });
    idx.resize(size_t(L.topk));
    std::sort(idx.begin(), idx.end());
    for (int64_t t : idx)
      if (pre[size_t(t)] > 0)
        out.push_back({t, pre[size_t(t)], pre[size_t(t)]});
    return;
  }
  // JumpReLU opens at θ⁺ = max(θ, 0) (docs/bundle.md), so a gate is never negative.
  const bool jump = L.gate == GateKind::JumpReLU;
  for (int64_t t = 0; t < L.units; ++t) {
    double a = pre[size_t(t)];
    if (a > (jump ? std::max(L.theta[size_t(t)], 0.0) : 0.0))
      out.push_back({t, a, a});
  }
}

void replacementForward(const ReplacementLayer &L, const double *x, double *y) {
  std::vector<ActiveUnit> act;
  activeUnits(L, x, act);
  std::copy(L.dec_b.begin(), L.dec_b.end(), y);
  if (L.molt) {
    std::vector<double> hs, zs;
    moltProducts(L, x, act, hs, zs);
    for (size_t q = 0; q < act.size(); ++q)
      axpy(act[q].gate, &zs[q * size_t(L.d)], y, L.d);
  } else {
    for (const ActiveUnit &a : act)
      axpy(a.gate, &L.dec_w[size_t(a.index * L.d)], y, L.d);
    if (!L.skip_w.empty())
      for (int64_t i = 0; i < L.d; ++i)
        y[i] += dot(&L.skip_w[size_t(i * L.d)], x, L.d);
  }
}

void replacementJacobian(const ReplacementLayer &L, const double *x, double *J) {
  const int64_t d = L.d;
  std::vector<ActiveUnit> act;
  activeUnits(L, x, act);
  if (L.skip_w.empty())
    std::fill(J, J + d * d, 0.0);
  else
    std::copy(L.skip_w.begin(), L.skip_w.end(), J);
  std::vector<double> hs, zs;
  if (L.molt)
    moltProducts(L, x, act, hs, zs);
  for (size_t q = 0; q < act.size(); ++q) {
    int64_t t = act[q].index;
    const double *e = &L.enc_w[size_t(t * d)];
    if (!L.molt) {
      for (int64_t i = 0; i < d; ++i)
        axpy(L.dec_w[size_t(t * d + i)], e, J + i * d, d);
      continue;
    }
    int64_t r = L.rank[size_t(t)];
    const double *U = &L.u[size_t(L.u_off[size_t(t)])], *V = &L.v[size_t(L.v_off[size_t(t)])];
    const double *z = &zs[q * size_t(d)];
    for (int64_t i = 0; i < d; ++i) {
      for (int64_t p = 0; p < r; ++p)
        axpy(act[q].gate * U[i * r + p], V + p * d, J + i * d, d); // g U_t V_t
      axpy(z[i], e, J + i * d, d);                                   // (U_tV_t x) e_tᵀ
    }
  }
}

void replacementJvp(const ReplacementLayer &L, const double *x, const double *v, double *out) {
  std::vector<ActiveUnit> act;
  activeUnits(L, x, act);
  std::vector<double> hs, zs, tmp;
  if (L.molt)
    moltProducts(L, x, act, hs, zs);
  jvpKnown(L, act, zs, v, out, tmp);
}

void teacherJvp(const TeacherMlp &T, const double *x, const double *v, double *out) {
  std::vector<double> delta(size_t(T.h)), tmp;
  teacherDerivative(T, x, delta.data());
  teacherJvpKnown(T, delta.data(), v, out, tmp);
}

} // namespace molt
