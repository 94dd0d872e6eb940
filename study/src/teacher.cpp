// The teacher MLP: activations, loading and validation, forward and dense Jacobian (float64).
#include "molt/teacher.h"

#include <algorithm>
#include <cmath>

#include "molt/safetensors.h"

namespace molt {

namespace {

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kGeluTanhCubic = 0.044715;

} // namespace

StatusOr<Activation> parseActivation(const std::string &name) {
  if (name == "gelu")
    return Activation::Gelu;
  if (name == "gelu_tanh")
    return Activation::GeluTanh;
  if (name == "relu")
    return Activation::Relu;
  if (name == "swiglu")
    return Activation::SwiGlu;
  return invalidArgument("unknown activation '" + name +
                         "' (expected gelu, gelu_tanh, relu or swiglu)");
}

const char *activationName(Activation a) {
  switch (a) {
  case Activation::Gelu:
    return "gelu";
  case Activation::GeluTanh:
    return "gelu_tanh";
  case Activation::Relu:
    return "relu";
  case Activation::SwiGlu:
    return "swiglu";
  }
  return "?";
}

double activate(Activation a, double x) {
  switch (a) {
  case Activation::Gelu:
    return 0.5 * x * (1.0 + std::erf(x * kInvSqrt2));
  case Activation::GeluTanh:
    return 0.5 * x * (1.0 + std::tanh(kSqrt2OverPi * (x + kGeluTanhCubic * x * x * x)));
  case Activation::Relu:
    return x > 0 ? x : 0.0;
  case Activation::SwiGlu: // silu
    return x / (1.0 + std::exp(-x));
  }
  return 0.0;
}

double activateDerivative(Activation a, double x) {
  switch (a) {
  case Activation::Gelu: // Φ(x) + x·φ(x)
    return 0.5 * (1.0 + std::erf(x * kInvSqrt2)) + x * kInvSqrt2Pi * std::exp(-0.5 * x * x);
  case Activation::GeluTanh: {
    double u = kSqrt2OverPi * (x + kGeluTanhCubic * x * x * x);
    double th = std::tanh(u);
    double du = kSqrt2OverPi * (1.0 + 3.0 * kGeluTanhCubic * x * x);
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du;
  }
  case Activation::Relu:
    return x > 0 ? 1.0 : 0.0;
  case Activation::SwiGlu: { // silu' = σ(x)(1 + x(1 − σ(x)))
    double sig = 1.0 / (1.0 + std::exp(-x));
    return sig * (1.0 + x * (1.0 - sig));
  }
  }
  return 0.0;
}

TeacherMlp swigluTeacher(int64_t d, int64_t m, const std::vector<double> &w_gate,
                         const std::vector<double> &w_up, const std::vector<double> &w_down) {
  TeacherMlp t;
  t.d = d, t.h = 2 * m, t.activation = Activation::SwiGlu;
  t.w_in = w_gate;
  t.w_in.insert(t.w_in.end(), w_up.begin(), w_up.end());
  t.w_out.assign(size_t(d * 2 * m), 0.0);
  if (w_down.size() == size_t(d * m))
    for (int64_t i = 0; i < d; ++i)
      for (int64_t k = 0; k < m; ++k)
        t.w_out[size_t(i * 2 * m + k)] = t.w_out[size_t(i * 2 * m + m + k)] = w_down[size_t(i * m + k)];
  t.b_in.assign(size_t(2 * m), 0.0);
  t.b_out.assign(size_t(d), 0.0);
  return t;
}

Status validateTeacher(const TeacherMlp &t) {
  if (t.d <= 0 || t.h <= 0)
    return invalidArgument("teacher widths must be positive (d=" + std::to_string(t.d) +
                           ", h=" + std::to_string(t.h) + ")");
  if (t.activation == Activation::SwiGlu && t.h % 2)
    return invalidArgument("a swiglu teacher's stacked width must be even, got " +
                           std::to_string(t.h));
  struct Want {
    const char *name;
    const std::vector<double> &v;
    size_t n;
  };
  const Want wants[] = {{"w_in", t.w_in, size_t(t.h * t.d)},
                        {"b_in", t.b_in, size_t(t.h)},
                        {"w_out", t.w_out, size_t(t.d * t.h)},
                        {"b_out", t.b_out, size_t(t.d)}};
  for (const Want &w : wants) {
    if (w.v.size() != w.n)
      return invalidArgument(std::string(w.name) + " has " + std::to_string(w.v.size()) +
                             " values, expected " + std::to_string(w.n));
    for (double v : w.v)
      if (!std::isfinite(v))
        return invalidArgument(std::string(w.name) + " holds a non-finite value");
  }
  return Status::ok();
}

StatusOr<TeacherMlp> loadTeacher(const std::string &path) {
  auto file = SafetensorsFile::open(path);
  if (!file)
    return file.status();
  TeacherMlp teacher;
  auto meta = (*file)->metadata().find("activation");
  if (meta == (*file)->metadata().end())
    return invalidArgument(path + ": no __metadata__ \"activation\" (gelu, gelu_tanh, relu or swiglu)");
  auto act = parseActivation(meta->second);
  if (!act)
    return act.status().withContext(path);
  teacher.activation = *act;
  if (*act == Activation::SwiGlu) {
    const TensorView *gate = (*file)->find("w_gate");
    if (!gate)
      return notFound(path + ": no tensor 'w_gate' (a swiglu teacher holds w_gate, w_up, w_down)");
    if (gate->shape.size() != 2)
      return invalidArgument(path + ": tensor 'w_gate' must be 2-D [m, d]");
    const int64_t m = gate->shape[0], d = gate->shape[1];
    auto g = (*file)->readF32("w_gate", {m, d});
    if (!g)
      return g.status();
    auto u = (*file)->readF32("w_up", {m, d});
    if (!u)
      return u.status();
    auto w = (*file)->readF32("w_down", {d, m});
    if (!w)
      return w.status();
    auto wide = [](const std::vector<float> &v) { return std::vector<double>(v.begin(), v.end()); };
    teacher = swigluTeacher(d, m, wide(*g), wide(*u), wide(*w));
    MOLT_RETURN_IF_ERROR(validateTeacher(teacher).withContext(path));
    return teacher;
  }
  const TensorView *win = (*file)->find("w_in");
  if (!win)
    return notFound(path + ": no tensor 'w_in'");
  if (win->shape.size() != 2)
    return invalidArgument(path + ": tensor 'w_in' must be 2-D [h, d]");
  teacher.h = win->shape[0];
  teacher.d = win->shape[1];
  const struct {
    const char *name;
    std::vector<int64_t> shape;
    std::vector<double> &into;
  } wants[] = {{"w_in", {teacher.h, teacher.d}, teacher.w_in},
               {"b_in", {teacher.h}, teacher.b_in},
               {"w_out", {teacher.d, teacher.h}, teacher.w_out},
               {"b_out", {teacher.d}, teacher.b_out}};
  for (const auto &w : wants) {
    auto values = (*file)->readF32(w.name, w.shape);
    if (!values)
      return values.status();
    w.into.assign(values->begin(), values->end());
  }
  MOLT_RETURN_IF_ERROR(validateTeacher(teacher).withContext(path));
  return teacher;
}

namespace {
// out = W·x + b for a row-major [rows, cols] W.
void affine(const std::vector<double> &W, const std::vector<double> &b, const double *x,
            double *out, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const double *w = &W[size_t(r * cols)];
    double s = b[size_t(r)];
    for (int64_t j = 0; j < cols; ++j)
      s += w[j] * x[j];
    out[r] = s;
  }
}
} // namespace

void teacherPreactivation(const TeacherMlp &t, const double *x, double *pre) {
  affine(t.w_in, t.b_in, x, pre, t.h, t.d);
}

void teacherDerivative(const TeacherMlp &t, const double *x, double *delta) {
  teacherPreactivation(t, x, delta);
  if (t.activation == Activation::SwiGlu) { // [g; u] -> [silu'(g)∘u; silu(g)]
    const int64_t m = t.h / 2;
    for (int64_t k = 0; k < m; ++k) {
      const double g = delta[k], u = delta[m + k];
      delta[k] = activateDerivative(Activation::SwiGlu, g) * u;
      delta[m + k] = activate(Activation::SwiGlu, g);
    }
    return;
  }
  for (int64_t k = 0; k < t.h; ++k)
    delta[k] = activateDerivative(t.activation, delta[k]);
}

void teacherForward(const TeacherMlp &t, const double *x, double *y) {
  std::vector<double> a(size_t(t.h));
  teacherPreactivation(t, x, a.data());
  if (t.activation == Activation::SwiGlu) {
    // silu(g)∘u in the first half, zeros in the second: w_out's halves are both w_down.
    const int64_t m = t.h / 2;
    for (int64_t k = 0; k < m; ++k) {
      a[size_t(k)] = activate(Activation::SwiGlu, a[size_t(k)]) * a[size_t(m + k)];
      a[size_t(m + k)] = 0.0;
    }
  } else {
    for (double &v : a)
      v = activate(t.activation, v);
  }
  affine(t.w_out, t.b_out, a.data(), y, t.d, t.h);
}

void teacherJacobian(const TeacherMlp &t, const double *x, double *J) {
  std::vector<double> delta(size_t(t.h));
  teacherDerivative(t, x, delta.data());
  std::fill(J, J + t.d * t.d, 0.0);
  for (int64_t i = 0; i < t.d; ++i)
    for (int64_t k = 0; k < t.h; ++k) {
      double c = t.w_out[size_t(i * t.h + k)] * delta[size_t(k)];
      if (c == 0.0)
        continue;
      const double *w = &t.w_in[size_t(k * t.d)];
      double *row = J + i * t.d;
      for (int64_t j = 0; j < t.d; ++j)
        row[j] += c * w[j];
    }
}

} // namespace molt
