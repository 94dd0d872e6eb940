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
  return invalidArgument("unknown activation '" + name + "' (expected gelu, gelu_tanh or relu)");
}

const char *activationName(Activation a) {
  switch (a) {
  case Activation::Gelu:
    return "gelu";
  case Activation::GeluTanh:
    return "gelu_tanh";
  case Activation::Relu:
    return "relu";
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
  }
  return 0.0;
}

Status validateTeacher(const TeacherMlp &t) {
  if (t.d <= 0 || t.h <= 0)
    return invalidArgument("teacher widths must be positive (d=" + std::to_string(t.d) +
                           ", h=" + std::to_string(t.h) + ")");
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
    return invalidArgument(path + ": no __metadata__ \"activation\" (gelu, gelu_tanh or relu)");
  auto act = parseActivation(meta->second);
  if (!act)
    return act.status().withContext(path);
  teacher.activation = *act;
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
  for (int64_t k = 0; k < t.h; ++k)
    delta[k] = activateDerivative(t.activation, delta[k]);
}

void teacherForward(const TeacherMlp &t, const double *x, double *y) {
  std::vector<double> a(size_t(t.h));
  teacherPreactivation(t, x, a.data());
  for (double &v : a)
    v = activate(t.activation, v);
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
