# Runs the layering check at configure time so a violation stops the build before it starts.
function(tegemma_check_layering)
  execute_process(COMMAND ${CMAKE_COMMAND} -DSRC=${PROJECT_SOURCE_DIR}
                          -P ${PROJECT_SOURCE_DIR}/cmake/TegemmaLayeringCheck.cmake
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${out}${err}")
  endif()
endfunction()
