# The layering rule, checked by file contents (run at configure time and as the ctest `layering`):
#   - common/, kernels/, impl/ never include LibTorch (torch/, ATen/, c10/): the product has no Torch in it;
#   - reference/ never includes impl/ or kernels/ headers: the oracle must not share our bugs;
#   - common/ never includes kernels/ or impl/, kernels/ never includes impl/.
# Usage: cmake -DSRC=<repo root> -P TegemmaLayeringCheck.cmake
if(NOT SRC)
  message(FATAL_ERROR "TegemmaLayeringCheck: pass -DSRC=<repository root>")
endif()
set(violations "")
function(_scan folder regex why)
  file(GLOB_RECURSE files LIST_DIRECTORIES false
       "${SRC}/${folder}/*.h" "${SRC}/${folder}/*.hpp" "${SRC}/${folder}/*.cpp" "${SRC}/${folder}/*.cc"
       "${SRC}/${folder}/*.cu" "${SRC}/${folder}/*.cuh")
  foreach(f IN LISTS files)
    file(STRINGS "${f}" hits REGEX "${regex}")
    if(hits)
      file(RELATIVE_PATH rel "${SRC}" "${f}")
      list(GET hits 0 first)
      string(STRIP "${first}" first)
      set(violations "${violations}\n  ${rel}: '${first}' (${why})" PARENT_SCOPE)
    endif()
  endforeach()
endfunction()
set(torch_re "^[ \t]*#[ \t]*include[ \t]*[<\"](torch/|ATen/|c10/)")
foreach(folder common kernels impl)
  _scan(${folder} "${torch_re}" "LibTorch is allowed only in reference/, parity/ and bench/")
  set(violations "${violations}")
endforeach()
_scan(reference "^[ \t]*#[ \t]*include[ \t]*[<\"](impl|kernels)/" "reference/ must not use impl/ or kernels/")
_scan(common "^[ \t]*#[ \t]*include[ \t]*[<\"](impl|kernels|reference|parity|bench|reports)/" "common/ is the bottom layer")
_scan(kernels "^[ \t]*#[ \t]*include[ \t]*[<\"](impl|reference|parity|bench|reports)/" "kernels/ depends on common/ only")
_scan(impl "^[ \t]*#[ \t]*include[ \t]*[<\"](reference|parity|bench|reports)/" "impl/ depends on kernels/ and common/ only")
if(violations)
  message(FATAL_ERROR "tegemma layering violations:${violations}")
endif()
message(STATUS "tegemma: layering check passed")
