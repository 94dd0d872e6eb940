# Third-party dependencies. Everything comes from Debian packages (scripts/bootstrap installs
# them). On the GPU machine, which has no package manager, scripts/gpu-check carries the
# header-only ones and the GoogleTest sources in .carry/ (MOLT_CARRY_DIR).
set(MOLT_CARRY_DIR "${PROJECT_SOURCE_DIR}/.carry" CACHE PATH "Carried third-party sources")
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bin)

# nlohmann/json: manifests, metrics, safetensors headers.
find_package(nlohmann_json 3.10 QUIET)
if(NOT TARGET nlohmann_json::nlohmann_json)
  find_path(MOLT_JSON_INCLUDE nlohmann/json.hpp PATHS ${MOLT_CARRY_DIR}/include REQUIRED)
  add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED)
  set_target_properties(nlohmann_json::nlohmann_json PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES ${MOLT_JSON_INCLUDE})
endif()

# CLI11: the tools' command lines.
find_package(CLI11 QUIET CONFIG)
if(NOT TARGET CLI11::CLI11)
  find_path(MOLT_CLI11_INCLUDE CLI/CLI.hpp PATHS ${MOLT_CARRY_DIR}/include REQUIRED)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  set_target_properties(CLI11::CLI11 PROPERTIES INTERFACE_INCLUDE_DIRECTORIES ${MOLT_CLI11_INCLUDE})
endif()

find_package(Threads REQUIRED)
find_package(OpenMP)
# A well-kept BLAS for the dense GEMMs (encoder, dense reference). Optional: the CPU kernels
# have a blocked fallback.
set(BLA_VENDOR OpenBLAS)
find_package(BLAS QUIET)
find_path(MOLT_CBLAS_INCLUDE cblas.h PATH_SUFFIXES openblas x86_64-linux-gnu/openblas-pthread)
if(BLAS_FOUND AND MOLT_CBLAS_INCLUDE)
  set(MOLT_HAVE_BLAS ON)
else()
  set(MOLT_HAVE_BLAS OFF)
endif()
message(STATUS "molt: BLAS ${MOLT_HAVE_BLAS}, OpenMP ${OpenMP_CXX_FOUND}, CUDA ${MOLT_ENABLE_CUDA}")

if(MOLT_BUILD_TESTS)
  find_package(GTest QUIET)
  if(NOT TARGET GTest::gtest_main)
    # Debian's googletest package ships the sources; so does .carry/googletest.
    foreach(src ${MOLT_CARRY_DIR}/googletest /usr/src/googletest) # carried first: gpu-check builds with it
      if(EXISTS ${src}/CMakeLists.txt AND NOT TARGET gtest)
        set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
        add_subdirectory(${src} ${PROJECT_BINARY_DIR}/googletest EXCLUDE_FROM_ALL)
        if(NOT TARGET GTest::gtest_main) # googletest >= 1.11 defines these aliases itself
          add_library(GTest::gtest ALIAS gtest)
          add_library(GTest::gtest_main ALIAS gtest_main)
        endif()
      endif()
    endforeach()
  endif()
endif()
if(MOLT_BUILD_BENCH)
  find_package(benchmark QUIET)
  if(NOT TARGET benchmark::benchmark AND EXISTS ${MOLT_CARRY_DIR}/benchmark/lib/libbenchmark.so)
    # Debian's libbenchmark.so and headers, carried to the GPU machine by scripts/gpu-check.
    add_library(benchmark::benchmark SHARED IMPORTED)
    set_target_properties(benchmark::benchmark PROPERTIES
      IMPORTED_LOCATION ${MOLT_CARRY_DIR}/benchmark/lib/libbenchmark.so.1debian
      IMPORTED_SONAME libbenchmark.so.1debian
      INTERFACE_INCLUDE_DIRECTORIES ${MOLT_CARRY_DIR}/benchmark/include)
  endif()
endif()
