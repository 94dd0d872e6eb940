// JacobianMethod::Dense: both d×d Jacobians formed per token, the reference the Exact method is
// tested against.
#include "jacobian/common.h"

namespace molt::jacobian {

void denseCosines(const ReplacementLayer &L, const TeacherMlp &T, const std::vector<double> &xs,
                  TokenResults &out) {
  const int64_t d = L.d, dd = d * d, n = int64_t(xs.size()) / d;
#pragma omp parallel
  {
    std::vector<double> Jm(static_cast<size_t>(dd)), Jt(static_cast<size_t>(dd));
#pragma omp for schedule(dynamic, 4)
    for (int64_t i = 0; i < n; ++i) {
      const double *x = &xs[size_t(i * d)];
      replacementJacobian(L, x, Jm.data());
      teacherJacobian(T, x, Jt.data());
      Frob f;
      f.cross = dot(Jm.data(), Jt.data(), dd);
      f.model2 = dot(Jm.data(), Jm.data(), dd);
      f.teacher2 = dot(Jt.data(), Jt.data(), dd);
      bool deg = false;
      out.cosine[size_t(i)] = f.cosine(deg);
      out.degenerate[size_t(i)] = deg;
    }
  }
}

} // namespace molt::jacobian
