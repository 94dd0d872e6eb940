// molt._molt: the nanobind extension under the `molt` package — a bundle bound to an executor,
// with tensors exchanged as DLPack views of executor memory or bound to caller memory (no copies).
//
// Python-facing policy (batch handling, NumPy/torch conversion, training loop state) lives in
// python/molt/__init__.py; this file only exposes the runtime's public API and adds what the
// runtime lacks for embedding. The gradients a caller seeds with dL/dŷ (`backward`, `input_grad`,
// `vjp`) are entries of the bundle, emitted by the compiler like `jvp`.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>

#include "molt/backend.h"
#include "molt/config.h"
#include "molt/jacobian.h"
#include "molt/ops.h"
#include "molt/plan.h"
#include "molt/run.h"
#include "molt/safetensors.h"
#include "molt/stop.h"
#include "molt/trainer.h"
#ifdef MOLT_PY_WITH_COMPILER
#include "CompileSpec.h"
#endif

namespace nb = nanobind;
using namespace nb::literals;

namespace molt {
namespace {

// The boundary where molt::Status becomes a Python exception (the runtime never throws): a
// StatusError carries the code across nanobind, and the translator registered in NB_MODULE
// raises the Python class for that code (molt.InvalidArgument, molt.NotFound, ..., all
// subclasses of molt.MoltError). One place: every binding reports errors through check().
struct StatusError {
  Code code;
  std::string message;
};
void check(const Status &s) {
  if (!s.isOk())
    throw StatusError{s.code(), s.message()};
}
template <typename T> T take(StatusOr<T> r) {
  check(r.status());
  return std::move(r.value());
}

// Tensors an entry reads before any of its ops writes them, which an op of `after` writes: what
// a caller-seeded entry (backward, input_grad, vjp) takes from the `forward` run it follows
// (the pair lists), by the op table's roles.
std::vector<std::string> recordedTensors(const Plan &plan, const std::string &entry,
                                         const std::string &after) {
  auto e = plan.entry_points.find(entry), f = plan.entry_points.find(after);
  if (e == plan.entry_points.end() || f == plan.entry_points.end())
    return {};
  auto roles = [&](const Invocation &inv, auto &&fn) {
    const KernelDesc *k = plan.findKernel(inv.kernel);
    if (const OpSignature *sig = k ? findOp(k->op) : nullptr)
      for (const OpArg &a : sig->arguments)
        if (a.dtype != ArgDType::Params)
          fn(a.role, inv.args.at(a.name));
  };
  std::set<std::string> produced, written, out;
  for (const Invocation &inv : f->second)
    roles(inv, [&](ArgRole r, const std::string &n) {
      if (r != ArgRole::In)
        produced.insert(n);
    });
  for (const Invocation &inv : e->second) {
    roles(inv, [&](ArgRole r, const std::string &n) {
      if ((r == ArgRole::In || r == ArgRole::InOut) && !written.count(n) && produced.count(n) &&
          !plan.findParam(n))
        out.insert(n);
    });
    roles(inv, [&](ArgRole r, const std::string &n) {
      if (r != ArgRole::In)
        written.insert(n);
    });
  }
  return {out.begin(), out.end()};
}

// The CUDA backend's own device choice (MOLT_CUDA_DEVICE), for DLPack views of its memory.
int cudaOrdinal() { return int(molt::config::cudaDevice()); }

int dlpackDevice(const std::string &device) {
  return device == "cuda" ? nb::device::cuda::value : nb::device::cpu::value;
}

using AnyArray = nb::ndarray<nb::c_contig>;

// A bundle bound to one executor of a fixed batch on one device.
class Session {
public:
  Session(const std::string &bundleDir, int64_t batch, const std::string &device)
      : bundleDir_(bundleDir), device_(device) {
    plan_ = take(loadPlan(bundleDir));
    addTrainPhases(plan_); // Layer.train_step under torch.distributed
    backend_ = take(createBackend(device));
    exec_ = take(backend_->prepare(plan_, bundleDir_, batch));
  }

  int64_t batch() const { return exec_->batch(); }
  int64_t rows() const { return exec_->rows(); }
  Executor &executor() { return *exec_; }
  /// Runs later entries on `rows` rows: within the prepared batch without re-preparing (the
  /// executor's setRows), beyond it by re-preparing at `rows` (setBatch).
  void setRows(int64_t rows) {
    if (rows > exec_->batch())
      setBatch(rows);
    check(exec_->setRows(rows));
  }
  /// `t`'s shape at the active rows.
  std::vector<size_t> liveShape(const BufferInfo &t) const {
    std::vector<int64_t> s = t.shapeAt(exec_->rows());
    return {s.begin(), s.end()};
  }
  const std::string &device() const { return device_; }
  std::string manifest() const { return planToJson(plan_); }
  std::string deviceName() const { return backend_->deviceName(); }
  bool hasEntry(const std::string &e) const { return plan_.entry_points.count(e) > 0; }

  std::vector<std::pair<std::string, std::vector<int64_t>>> params() const {
    std::vector<std::pair<std::string, std::vector<int64_t>>> out;
    for (const ParamDesc &p : plan_.params)
      out.push_back({p.name, p.shape});
    return out;
  }
  std::vector<std::string> names() const { return exec_->names(); }

  const BufferInfo &info(const std::string &name) const {
    const BufferInfo *t = exec_->info(name);
    if (!t)
      throw nb::key_error(("no tensor named '" + name + "'").c_str());
    return *t;
  }

  /// Re-binds to a new batch size, carrying every param and Adam moment over.
  void setBatch(int64_t batch) {
    if (batch == exec_->batch())
      return;
    std::vector<std::string> keep;
    for (const ParamDesc &p : plan_.params)
      for (const char *prefix : {"", "m_", "v_"})
        keep.push_back(prefix + p.name);
    TensorMap state = take(readTensors(*exec_, keep));
    auto next = take(backend_->prepare(plan_, bundleDir_, batch));
    check(writeTensors(*next, state));
    exec_ = std::move(next);
  }

  /// A DLPack view of the storage the executor uses for `name` (valid while this session lives
  /// and the batch is unchanged; the next run overwrites outputs).
  nb::object view(nb::handle self, const std::string &name) {
    const BufferInfo &t = info(name);
    void *p = exec_->storage(name);
    std::vector<size_t> shape = liveShape(t);
    if (!p)
      throw StatusError{Code::Unavailable,
                        "the " + device_ + " backend does not expose tensor storage"};
    nb::dlpack::dtype dt = t.dtype == DType::F32 ? nb::dtype<float>() : nb::dtype<int32_t>();
    if (device_ == "cpu")
      return nb::cast(nb::ndarray<nb::numpy>(p, shape.size(), shape.data(), self, nullptr, dt,
                                             nb::device::cpu::value, 0));
    // CUDA: a bare DLPack object (torch.from_dlpack / cupy.from_dlpack take it).
    return nb::cast(nb::ndarray<>(p, shape.size(), shape.data(), self, nullptr, dt,
                                  dlpackDevice(device_), cudaOrdinal()));
  }

  /// Makes the executor use the caller's memory for `name` (no copy). Checked: dtype, size,
  /// contiguity, device. The caller unbinds (or rebinds) before that memory goes away.
  void bind(const std::string &name, AnyArray a) {
    const BufferInfo &t = info(name);
    const bool f32 = a.dtype() == nb::dtype<float>(), i32 = a.dtype() == nb::dtype<int32_t>();
    if ((t.dtype == DType::F32 && !f32) || (t.dtype == DType::I32 && !i32))
      throw nb::type_error(("'" + name + "' needs a contiguous " +
                            (t.dtype == DType::F32 ? "float32" : "int32") + " array")
                               .c_str());
    // A row-sized tensor is bound at the active rows (the caller rebinds after set_rows).
    const int64_t want = BufferInfo{t.name, t.dtype, t.shapeAt(exec_->rows()), 0}.numel();
    if (int64_t(a.size()) != want)
      throw nb::value_error(("'" + name + "' holds " + std::to_string(want) +
                             " elements, the array " + std::to_string(a.size()))
                                .c_str());
    if (a.device_type() != dlpackDevice(device_))
      throw nb::value_error(("'" + name + "': the array is not on the layer's device (" +
                             device_ + ")")
                                .c_str());
    check(exec_->bind(name, a.data()));
  }
  void unbind(const std::string &name) { check(exec_->bind(name, nullptr)); }
  bool canBind() {
    const std::string probe = "x";
    if (!exec_->info(probe))
      return false;
    if (!exec_->bind(probe, exec_->storage(probe)).isOk())
      return false;
    check(exec_->bind(probe, nullptr));
    return true;
  }

  void write(const std::string &name, nb::ndarray<float, nb::c_contig, nb::device::cpu> a) {
    check(exec_->write(name, a.data(), a.size() * sizeof(float)));
  }
  nb::ndarray<nb::numpy, float> read(const std::string &name) {
    const BufferInfo &t = info(name);
    if (t.dtype != DType::F32)
      throw nb::type_error(("'" + name + "' is not float32; use view()").c_str());
    std::vector<size_t> shape = liveShape(t);
    size_t n = 1;
    for (size_t d : shape)
      n *= d;
    auto *buf = new std::vector<float>(n);
    nb::capsule owner(buf, [](void *p) noexcept { delete static_cast<std::vector<float> *>(p); });
    check(exec_->read(name, buf->data(), n * sizeof(float)));
    return nb::ndarray<nb::numpy, float>(buf->data(), shape.size(), shape.data(), owner);
  }
  void zero(const std::string &name) { check(exec_->zero(name)); }

  std::vector<std::string> recorded(const std::string &entry, const std::string &after) const {
    return recordedTensors(plan_, entry, after);
  }

  void run(const std::string &entry) {
    nb::gil_scoped_release release;
    check(exec_->run(entry));
  }
  void synchronize() {
    nb::gil_scoped_release release;
    check(exec_->synchronize());
  }

  void initParams(uint64_t seed) { check(writeTensors(*exec_, molt::initParams(plan_, seed))); }

  std::vector<float> stepScalars(const Schedule &s, int64_t step, int64_t adamStep) const {
    auto a = molt::stepScalars(s, step, adamStep, exec_->rows());
    return {a.begin(), a.end()};
  }

  ReplacementLayer replacement() {
    TensorMap params = take(readTensors(*exec_));
    return take(makeReplacement(plan_.model, params));
  }

  /// Exact per-row Jacobians ∂ŷ/∂x [n, d, d] in float64 (study/include/molt/jacobian.h).
  nb::ndarray<nb::numpy, double> jacobian(nb::ndarray<const float, nb::c_contig, nb::device::cpu> x) {
    const int64_t d = plan_.model.d_model;
    if (x.ndim() != 2 || int64_t(x.shape(1)) != d)
      throw nb::value_error(("x must be [n, " + std::to_string(d) + "]").c_str());
    ReplacementLayer L = replacement();
    const int64_t n = int64_t(x.shape(0));
    auto *buf = new std::vector<double>(size_t(n * d * d));
    nb::capsule owner(buf, [](void *p) noexcept { delete static_cast<std::vector<double> *>(p); });
    {
      nb::gil_scoped_release release;
      std::vector<double> row(static_cast<size_t>(d));
      for (int64_t i = 0; i < n; ++i) {
        bool finite = true;
        for (int64_t j = 0; j < d; ++j) {
          row[size_t(j)] = x.data()[i * d + j];
          finite = finite && std::isfinite(row[size_t(j)]);
        }
        double *J = buf->data() + i * d * d;
        if (finite)
          replacementJacobian(L, row.data(), J);
        else // the rule for non-finite input rows (docs/reliability.md)
          std::fill(J, J + d * d, std::numeric_limits<double>::quiet_NaN());
      }
    }
    return nb::ndarray<nb::numpy, double>(buf->data(), {size_t(n), size_t(d), size_t(d)}, owner);
  }

private:
  std::string bundleDir_, device_;
  Plan plan_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Executor> exec_;
};

// ---- data-parallel training (python -m molt.train, docs/distributed.md) ----
//
// The all-reduce is Python's (torch.distributed): between train_grad and train_apply, C++
// calls reduce(names, arrays) with views of the executor's stats and d_<p> (zero-copy where
// the backend exposes storage: NumPy on the CPU, DLPack on CUDA; host copies written back
// otherwise). The callback reduces them in place.
Status callReduce(const nb::callable &reduce, Executor &exec, const std::string &device) {
  nb::gil_scoped_acquire gil;
  std::vector<std::string> names = reducedTensors(exec.plan());
  std::vector<std::vector<float>> copies(names.size());
  nb::list arrays;
  for (size_t i = 0; i < names.size(); ++i) {
    const BufferInfo *t = exec.info(names[i]);
    if (!t)
      return internalError("the executor has no tensor '" + names[i] + "'");
    std::vector<size_t> shape(t->shape.begin(), t->shape.end());
    void *p = device == "cpu" || device == "cuda" ? exec.storage(names[i]) : nullptr;
    // A view needs an owner: without one nanobind hands Python a copy. The executor outlives
    // the call, so the owner frees nothing.
    static int token;
    nb::capsule view(&token, [](void *) noexcept {});
    if (p && device == "cuda") {
      arrays.append(nb::cast(nb::ndarray<>(p, shape.size(), shape.data(), view, nullptr,
                                           nb::dtype<float>(), nb::device::cuda::value,
                                           cudaOrdinal())));
      continue;
    }
    if (!p) { // no exposed storage: a host copy, written back below
      copies[i].resize(size_t(t->numel()));
      MOLT_RETURN_IF_ERROR(exec.read(names[i], copies[i].data(), t->bytes()));
      p = copies[i].data();
    }
    arrays.append(nb::cast(nb::ndarray<nb::numpy, float>(p, shape.size(), shape.data(), view)));
  }
  try {
    reduce(names, arrays);
  } catch (nb::python_error &e) {
    return internalError(std::string("the reduce callback raised: ") + e.what());
  }
  for (size_t i = 0; i < names.size(); ++i)
    if (!copies[i].empty())
      MOLT_RETURN_IF_ERROR(exec.write(names[i], copies[i].data(), copies[i].size() * 4));
  return Status::ok();
}

/// runTraining (molt-train's driver) for one rank, with `reduce` as its all-reduce.
void runTrainingRank(TrainOptions opts, int rank, int world, nb::object reduce) {
  opts.parallel.rank = rank;
  opts.parallel.world = world;
  nb::callable fn;
  if (!reduce.is_none()) {
    // The driver copies its options (and so this function) with the GIL released: the lambda
    // holds only a pointer to the callable, which this frame keeps alive until it returns.
    fn = nb::cast<nb::callable>(reduce);
    const nb::callable *held = &fn;
    std::string device = opts.device;
    opts.parallel.allReduce = [held, device](Executor &exec) {
      return callReduce(*held, exec, device);
    };
  }
  Status st;
  {
    nb::gil_scoped_release release;
    st = runTraining(opts);
  }
  check(st);
}

// A NumPy array of T, shaped like the view, that owns a buffer `fill` writes (Store: T's bytes;
// uint8_t for bool, which std::vector packs).
template <typename T, typename Store = T, typename Fill>
nb::object ownedArray(const TensorView &t, Fill fill) {
  static_assert(sizeof(T) == sizeof(Store));
  auto *buf = new std::vector<Store>(size_t(t.numel()));
  nb::capsule owner(buf, [](void *p) noexcept { delete static_cast<std::vector<Store> *>(p); });
  fill(buf->data());
  std::vector<size_t> shape(t.shape.begin(), t.shape.end());
  return nb::ndarray<nb::numpy, T>(reinterpret_cast<T *>(buf->data()), shape.size(), shape.data(),
                                   owner)
      .cast();
}

// The view's bytes as they are (safetensors is little-endian, like every host molt runs on).
template <typename T, typename Store = T> nb::object rawArray(const TensorView &t) {
  return ownedArray<T, Store>(t, [&](Store *p) {
    if (t.numel() > 0)
      std::memcpy(p, t.data, size_t(t.numel()) * sizeof(Store));
  });
}

// Host safetensors through the runtime's reader and writer. F32 / F16 / BF16 load as float32,
// F64 as float64, the integer dtypes and BOOL as NumPy arrays of their own type (the harvest's
// seq / pos / token columns, a checkpoint's step counters); any other dtype (F8_*) is an
// InvalidArgument naming the tensor, never a silent omission. Writing is F32 only.
std::map<std::string, nb::object> loadTensors(const std::string &path) {
  auto file = take(SafetensorsFile::open(path));
  std::map<std::string, nb::object> out;
  for (const TensorView &t : file->tensors()) {
    const std::string &d = t.dtype;
    nb::object a;
    if (isFloatDtype(d)) {
      a = ownedArray<float>(t, [&](float *p) { toF32(t, 0, t.numel(), p); });
    } else if (d == "F64") a = rawArray<double>(t);
    else if (d == "I64") a = rawArray<int64_t>(t);
    else if (d == "I32") a = rawArray<int32_t>(t);
    else if (d == "I16") a = rawArray<int16_t>(t);
    else if (d == "I8") a = rawArray<int8_t>(t);
    else if (d == "U64") a = rawArray<uint64_t>(t);
    else if (d == "U32") a = rawArray<uint32_t>(t);
    else if (d == "U16") a = rawArray<uint16_t>(t);
    else if (d == "U8") a = rawArray<uint8_t>(t);
    else if (d == "BOOL") a = rawArray<bool, uint8_t>(t);
    else
      check(invalidArgument(path + ": tensor '" + t.name + "' has dtype " + d +
                            ", which molt.load_tensors cannot load"));
    out.emplace(t.name, std::move(a));
  }
  return out;
}

void saveTensors(const std::string &path,
                 const std::map<std::string, nb::ndarray<const float, nb::c_contig, nb::device::cpu>> &tensors,
                 const std::map<std::string, std::string> &metadata) {
  std::vector<TensorData> data;
  for (const auto &[name, a] : tensors) {
    std::vector<int64_t> shape;
    for (size_t i = 0; i < a.ndim(); ++i)
      shape.push_back(int64_t(a.shape(i)));
    data.push_back({name, "F32", shape,
                    std::string(reinterpret_cast<const char *>(a.data()), a.size() * sizeof(float))});
  }
  check(writeSafetensors(path, data, metadata));
}

} // namespace
} // namespace molt

namespace molt {
namespace {

// The Python exception class for each Status code, created once at import (molt/__init__.py
// re-exports them). Extra bases keep `except ValueError` / `except LookupError` working.
struct ErrorClass {
  Code code;
  const char *name;
  PyObject *extraBase;
  const char *doc;
};
PyObject *gErrorClass[16] = {};

// SIGTERM / SIGINT -> requestStop() while installed (the C++ handlers, so a second signal ends
// the process even while Python is inside a long call).
std::optional<StopOnSignals> &stopHandlers() {
  static std::optional<StopOnSignals> handlers;
  return handlers;
}

void registerErrors(nb::module_ &m) {
  PyObject *base = PyErr_NewExceptionWithDoc(
      "molt.MoltError", "A molt runtime or compiler failure: the message is its one-line cause.",
      PyExc_RuntimeError, nullptr);
  m.attr("MoltError") = nb::handle(base);
  const ErrorClass classes[] = {
      {Code::InvalidArgument, "InvalidArgument", PyExc_ValueError, "Bad input: a file, a flag, a shape."},
      {Code::NotFound, "NotFound", PyExc_LookupError, "A missing file or name."},
      {Code::DataLoss, "DataLoss", nullptr, "Truncated or corrupt data."},
      {Code::Unavailable, "Unavailable", nullptr, "A backend this machine lacks (no GPU, no NVRTC)."},
      {Code::Internal, "InternalError", nullptr, "A bug in molt."},
      {Code::Io, "IoError", nullptr, "The OS refused a read or write."},
      {Code::Cancelled, "Cancelled", nullptr, "Stopped on request (molt.request_stop, a signal)."},
  };
  for (const ErrorClass &c : classes) {
    PyObject *bases = c.extraBase ? PyTuple_Pack(2, base, c.extraBase) : PyTuple_Pack(1, base);
    PyObject *cls = PyErr_NewExceptionWithDoc((std::string("molt.") + c.name).c_str(), c.doc,
                                              bases, nullptr);
    Py_DECREF(bases);
    gErrorClass[int(c.code)] = cls;
    m.attr(c.name) = nb::handle(cls);
  }
  gErrorClass[0] = base;
  nb::register_exception_translator([](const std::exception_ptr &p, void *) {
    try {
      std::rethrow_exception(p);
    } catch (const StatusError &e) {
      PyObject *cls = size_t(e.code) < 16 && gErrorClass[int(e.code)] ? gErrorClass[int(e.code)]
                                                                      : gErrorClass[0];
      PyErr_SetString(cls, e.message.c_str());
    }
  });
}

} // namespace
} // namespace molt

NB_MODULE(_molt, m) {
  using namespace molt;
  m.doc() = "molt runtime bindings (use the `molt` package, not this module directly)";
  registerErrors(m);

  nb::class_<Schedule>(m, "Schedule")
      .def(nb::init<>())
      .def_rw("steps", &Schedule::steps)
      .def_rw("lr", &Schedule::lr)
      .def_rw("lr_warmup", &Schedule::lrWarmup)
      .def_rw("decay", &Schedule::decay)
      .def_rw("min_lr_fraction", &Schedule::minLrFraction)
      .def_rw("lambda_", &Schedule::lambda)
      .def_rw("lambda_warmup", &Schedule::lambdaWarmup)
      .def_rw("beta1", &Schedule::beta1)
      .def_rw("beta2", &Schedule::beta2)
      .def_rw("eps", &Schedule::eps)
      .def_rw("clip", &Schedule::clip);

  nb::class_<Session>(m, "Session")
      .def(nb::init<const std::string &, int64_t, const std::string &>(), "bundle"_a, "batch"_a,
           "device"_a = "cpu")
      .def_prop_ro("batch", &Session::batch)
      .def_prop_ro("rows", &Session::rows)
      .def("set_profiling", [](Session &s, bool on) { s.executor().setProfiling(on); }, "on"_a)
      .def("profile", [](Session &s) { return s.executor().profile(); })
      .def("set_rows", &Session::setRows, "rows"_a)
      .def_prop_ro("device", &Session::device)
      .def_prop_ro("device_name", &Session::deviceName)
      .def_prop_ro("manifest", &Session::manifest)
      .def("has_entry", &Session::hasEntry)
      .def("params", &Session::params)
      .def("names", &Session::names)
      .def("shape", [](Session &s, const std::string &n) { return s.info(n).shape; })
      .def("set_batch", &Session::setBatch)
      .def("view", [](nb::handle self, const std::string &name) {
        return nb::cast<Session &>(self).view(self, name);
      })
      .def("bind", &Session::bind)
      .def("unbind", &Session::unbind)
      .def("can_bind", &Session::canBind)
      .def("write", &Session::write)
      .def("read", &Session::read)
      .def("zero", &Session::zero)
      .def("run", &Session::run)
      .def("synchronize", &Session::synchronize)
      .def("init_params", &Session::initParams, "seed"_a)
      .def("step_scalars", &Session::stepScalars)
      .def("recorded", &Session::recorded, "entry"_a, "after"_a = "forward")
      .def("jacobian", &Session::jacobian);

  // The training loops' stop flag (molt/stop.h), for `python -m molt.train` and user loops.
  m.def("request_stop", &requestStop);
  m.def("stop_requested", &stopRequested);
  m.def("clear_stop", &clearStopRequest);
  m.def("install_stop_handlers", [] { stopHandlers().emplace(); });
  m.def("restore_signal_handlers", [] { stopHandlers().reset(); });
  nb::class_<TrainOptions>(m, "TrainOptions")
      .def(nb::init<>())
      .def_rw("bundle", &TrainOptions::bundle)
      .def_rw("spec", &TrainOptions::spec)
      .def_rw("data", &TrainOptions::data)
      .def_rw("val", &TrainOptions::val)
      .def_rw("out", &TrainOptions::out)
      .def_rw("steps", &TrainOptions::steps)
      .def_rw("schedule_steps", &TrainOptions::scheduleSteps)
      .def_rw("batch", &TrainOptions::batch)
      .def_rw("lr", &TrainOptions::lr)
      .def_rw("lambda_", &TrainOptions::lambda)
      .def_rw("decay", &TrainOptions::decay)
      .def_rw("seed", &TrainOptions::seed)
      .def_rw("device", &TrainOptions::device)
      .def_rw("resume", &TrainOptions::resume)
      .def_rw("log_every", &TrainOptions::logEvery)
      .def_rw("checkpoint_every", &TrainOptions::checkpointEvery)
      .def_rw("dead_window", &TrainOptions::deadWindow)
      .def_rw("quiet", &TrainOptions::quiet);
  m.def("run_training", &runTrainingRank, "options"_a, "rank"_a = 0, "world"_a = 1,
        "reduce"_a = nb::none());
  m.attr("TRAIN_GRAD_ENTRY") = kTrainGradEntry;
  m.attr("TRAIN_APPLY_ENTRY") = kTrainApplyEntry;

  m.def("load_tensors", &loadTensors, "path"_a,
        "{name: NumPy array} of every tensor in a safetensors file: F32/F16/BF16 as float32, F64 as "
        "float64, integers and BOOL in their own dtype; another dtype is molt.InvalidArgument.");
  m.def("save_tensors", &saveTensors, "path"_a, "tensors"_a, "metadata"_a = std::map<std::string, std::string>{});
#ifdef MOLT_PY_WITH_COMPILER
  m.def("compile_spec", [](const std::string &spec, const std::string &out,
                           const std::string &symbol) {
    compiler::CompileOptions options;
    options.symbol = symbol; // "" : the first layer
    check(compiler::compileSpec(spec, out, options));
  }, "spec"_a, "out"_a, "symbol"_a = "");
  m.attr("HAS_COMPILER") = true;
#else
  m.attr("HAS_COMPILER") = false;
#endif
#ifdef MOLT_HAVE_CUDA
  m.attr("HAS_CUDA_BACKEND") = true;
#else
  m.attr("HAS_CUDA_BACKEND") = false;
#endif
}
