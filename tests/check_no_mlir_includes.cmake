# Fails when any runtime or kernel source includes an MLIR or LLVM header: the runtime must
# build on the GPU machine, which has neither. Run as: cmake -DROOT=<src> -P this-file
file(GLOB_RECURSE files ${ROOT}/runtime/*.h ${ROOT}/runtime/*.cpp ${ROOT}/kernels/*.h
     ${ROOT}/kernels/*.cpp ${ROOT}/kernels/*.cuh ${ROOT}/tools/molt-train/*.cpp
     ${ROOT}/tools/molt-eval/*.cpp)
set(bad "")
foreach(f ${files})
  file(STRINGS ${f} lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"](mlir|llvm|llvm-c)/")
  if(lines)
    list(APPEND bad "${f}: ${lines}")
  endif()
endforeach()
list(LENGTH files n)
if(n EQUAL 0)
  message(FATAL_ERROR "no runtime sources found under ${ROOT}")
endif()
if(bad)
  string(REPLACE ";" "\n" bad "${bad}")
  message(FATAL_ERROR "runtime files include MLIR/LLVM headers:\n${bad}")
endif()
message(STATUS "${n} runtime files, none includes an MLIR or LLVM header")
