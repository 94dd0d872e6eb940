# lit configuration of molt's FileCheck suite: tools on PATH, substitutions, features.
import os
import shutil
import subprocess

import lit.formats

config.name = "molt"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".test"]
config.excludes = ["Inputs", "CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.molt_obj_root, "tests", "lit")

config.environment["PATH"] = os.pathsep.join(
    [config.molt_tools_dir, config.llvm_tools_dir, config.environment.get("PATH", "")])
# lit hands tests a clean environment; keep the caller's OpenMP settings (ctest sets
# OMP_WAIT_POLICY=PASSIVE so parallel tests do not spin against each other).
for name in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS"):
    if name in os.environ:
        config.environment[name] = os.environ[name]

config.substitutions.append(("%python", config.python_executable))
config.substitutions.append(("%examples", os.path.join(config.molt_src_root, "examples", "specs")))
config.substitutions.append(("%molt_src", config.molt_src_root))

# Tests that compile generated CUDA need NVRTC (works without a GPU); tests that launch
# kernels need a usable device.
if getattr(config, "molt_have_nvrtc", False):
    config.available_features.add("nvrtc")


def gpu_usable():
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and b"GPU" in out.stdout


if gpu_usable():
    config.available_features.add("cuda")
