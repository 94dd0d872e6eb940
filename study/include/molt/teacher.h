// The teacher MLP (docs/architecture.md §3): y = w_out·act(w_in·x + b_in) + b_out, or a SwiGLU MLP
// y = w_down·(silu(w_gate·x) ∘ (w_up·x)) as in Llama-family models, loaded from safetensors.
//
// Everything is float64 on the host: the teacher is the reference that Jacobian faithfulness
// and the harvest check are measured against, so it must not add float32 noise of its own.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "molt/status.h"

namespace molt {

enum class Activation { Gelu, GeluTanh, Relu, SwiGlu };

/// "gelu" (exact, erf) | "gelu_tanh" | "relu" | "swiglu"; anything else is InvalidArgument.
StatusOr<Activation> parseActivation(const std::string &name);
const char *activationName(Activation a);
/// The element-wise nonlinearity (for SwiGlu: silu, the gate's).
double activate(Activation a, double x);
/// d act / dx; relu's derivative at 0 is taken as 0.
double activateDerivative(Activation a, double x);

/// A SwiGLU teacher is held in the same fields, stacked, so that its Jacobian keeps the form
/// w_out·diag(δ)·w_in that every Jacobian method relies on: with m the MLP's width,
///   w_in = [w_gate; w_up] (2m × d), w_out = [w_down | w_down] (d × 2m), b_in = b_out = 0,
///   h = 2m, δ = [silu'(g) ∘ u ; silu(g)] where g = w_gate·x, u = w_up·x.
struct TeacherMlp {
  int64_t d = 0; // model width
  int64_t h = 0; // hidden width (2m for SwiGlu: see above)
  Activation activation = Activation::Gelu;
  std::vector<double> w_in;  // [h, d] row-major
  std::vector<double> b_in;  // [h]
  std::vector<double> w_out; // [d, h] row-major
  std::vector<double> b_out; // [d]
};

/// A SwiGlu teacher from row-major w_gate [m, d], w_up [m, d], w_down [d, m], stacked as above.
TeacherMlp swigluTeacher(int64_t d, int64_t m, const std::vector<double> &w_gate,
                         const std::vector<double> &w_up, const std::vector<double> &w_down);

/// Checks that the four tensors have the shapes d and h imply and hold only finite values.
Status validateTeacher(const TeacherMlp &t);

/// Reads a teacher file (through molt/safetensors.h): F32/F16/BF16 tensors w_in, b_in, w_out,
/// b_out and the required __metadata__ "activation"; for "swiglu" instead w_gate [m, d],
/// w_up [m, d] and w_down [d, m], no biases. Every problem is one line ("teacher.safetensors: w_out has shape
/// [384, 1000], expected [384, 1536]").
StatusOr<TeacherMlp> loadTeacher(const std::string &path);

/// pre = w_in·x + b_in for one token (pre has h entries).
void teacherPreactivation(const TeacherMlp &t, const double *x, double *pre);
/// δ = act'(w_in·x + b_in) for one token (h entries): J_teacher = w_out·diag(δ)·w_in (SwiGlu:
/// the stacked δ above).
void teacherDerivative(const TeacherMlp &t, const double *x, double *delta);
/// y = teacher(x) for one token.
void teacherForward(const TeacherMlp &t, const double *x, double *y);
/// The dense d×d Jacobian w_out·diag(act'(pre))·w_in, row-major (J[i*d+j] = ∂y_i/∂x_j).
/// Costs d·h·d: tests and references only; jacobian.h never forms it per token.
void teacherJacobian(const TeacherMlp &t, const double *x, double *J);

} // namespace molt
