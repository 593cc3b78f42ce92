# tegemma_add_test(<name> LABEL cpu|gpu SOURCES <files...> LIBS <targets...> [RUN_SERIAL])
# One GoogleTest executable; every test in it is registered with ctest under the given label.
# GPU tests GTEST_SKIP when no device is present, so the `gpu` label is safe to run anywhere.
# RUN_SERIAL: ctest -j runs no other test beside these (tests that measure device-wide free memory).
function(tegemma_add_test name)
  cmake_parse_arguments(T "RUN_SERIAL" "LABEL;TIMEOUT" "SOURCES;LIBS" ${ARGN})
  if(NOT TEGEMMA_TESTS)
    return()
  endif()
  if(NOT T_LABEL MATCHES "^(cpu|gpu)$")
    message(FATAL_ERROR "tegemma_add_test(${name}): LABEL must be cpu or gpu, got '${T_LABEL}'")
  endif()
  if(T_LABEL STREQUAL "gpu" AND NOT TEGEMMA_GPU_TESTS)
    return()  # TEGEMMA_GPU_TESTS=OFF: a build that only runs the cpu label (ci/sanitize.sh) skips compiling these
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE TEGEMMA_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  tegemma_target_warnings(${name})
  set(serial FALSE)
  if(T_RUN_SERIAL)
    set(serial TRUE)
  endif()
  gtest_discover_tests(${name} PROPERTIES LABELS ${T_LABEL} TIMEOUT ${T_TIMEOUT} RUN_SERIAL ${serial}
                       DISCOVERY_TIMEOUT 60)
endfunction()
