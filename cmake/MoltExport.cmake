# find_package(molt) for C++ embedders (docs/embedding.md): the floor, the runtime and the study
# library exported as molt::core, molt::runtime and molt::study from the build tree (molt_DIR=<build>) and from an install (`cmake --install
# <build> --component dev`, then molt_DIR=<prefix>/lib/cmake/molt), plus a ctest that builds
# examples/embed against the build tree's export.
include(CMakePackageConfigHelpers)

set_target_properties(molt_core PROPERTIES EXPORT_NAME core)
set_target_properties(molt_runtime PROPERTIES EXPORT_NAME runtime)
set_target_properties(molt_study PROPERTIES EXPORT_NAME study)
set_target_properties(molt_cpu_kernels PROPERTIES EXPORT_NAME cpu_kernels)

# The targets name their include directories by source path; an install must name its own.
foreach(target molt_core molt_runtime molt_study molt_cpu_kernels)
  get_target_property(dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
  set(wrapped "")
  foreach(dir ${dirs})
    if(dir MATCHES "^\\$<")
      list(APPEND wrapped "${dir}")
    else()
      list(APPEND wrapped "$<BUILD_INTERFACE:${dir}>")
    endif()
  endforeach()
  list(APPEND wrapped "$<INSTALL_INTERFACE:include>")
  set_property(TARGET ${target} PROPERTY INTERFACE_INCLUDE_DIRECTORIES "${wrapped}")
endforeach()

# What the targets' link interfaces name, for moltConfig.cmake to recreate.
get_target_property(MOLT_JSON_INCLUDE_DIRS nlohmann_json::nlohmann_json INTERFACE_INCLUDE_DIRECTORIES)
set(MOLT_EXPORT_OPENMP ${OpenMP_CXX_FOUND})

export(TARGETS molt_core molt_runtime molt_study molt_cpu_kernels NAMESPACE molt::
  FILE ${PROJECT_BINARY_DIR}/moltTargets.cmake)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/moltConfig.cmake.in
  ${PROJECT_BINARY_DIR}/moltConfig.cmake INSTALL_DESTINATION lib/cmake/molt)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/moltConfigVersion.cmake
  VERSION 0.1.0 COMPATIBILITY SameMajorVersion)

install(TARGETS molt_core molt_runtime molt_study molt_cpu_kernels EXPORT moltTargets
  ARCHIVE DESTINATION lib COMPONENT dev)
foreach(layer core runtime study)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${layer}/include/molt DESTINATION include COMPONENT dev)
endforeach()
install(EXPORT moltTargets NAMESPACE molt:: DESTINATION lib/cmake/molt COMPONENT dev)
install(FILES ${PROJECT_BINARY_DIR}/moltConfig.cmake ${PROJECT_BINARY_DIR}/moltConfigVersion.cmake
  DESTINATION lib/cmake/molt COMPONENT dev)

if(MOLT_BUILD_TESTS)
  add_test(NAME embed_example_builds
    COMMAND ${CMAKE_CTEST_COMMAND} --build-and-test
      ${PROJECT_SOURCE_DIR}/examples/embed ${PROJECT_BINARY_DIR}/embed-example
      --build-generator ${CMAKE_GENERATOR}
      --build-options -Dmolt_DIR=${PROJECT_BINARY_DIR} -DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE}
      --test-command embed_example ${PROJECT_SOURCE_DIR}/tests/fixtures/tiny-molt)
endif()
