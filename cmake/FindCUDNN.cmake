# Finds cuDNN 9 (headers + libcudnn). Looks in CUDNN_ROOT, the CUDA toolkit, and the pip wheel layout
# (<site-packages>/nvidia/cudnn/{include,lib}) used on the GPU machine, where only libcudnn.so.9 may exist.
# Defines CUDNN_FOUND, CUDNN_VERSION and the imported target CUDNN::cudnn.
# An explicit CUDNN_ROOT is used exclusively, so headers and library always come from one install
# (the GPU machine has a system cuDNN 9.14 and torch's wheel cuDNN 9.19; mixing them is an ABI trap).
set(_cudnn_root ${CUDNN_ROOT})
if(NOT _cudnn_root)
  set(_cudnn_root $ENV{CUDNN_ROOT})
endif()
set(_cudnn_suffixes_inc include include/x86_64-linux-gnu)
set(_cudnn_suffixes_lib lib lib64 lib/x86_64-linux-gnu targets/x86_64-linux/lib)
if(_cudnn_root)
  find_path(CUDNN_INCLUDE_DIR cudnn_version.h PATHS ${_cudnn_root} PATH_SUFFIXES ${_cudnn_suffixes_inc} NO_DEFAULT_PATH)
  find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 PATHS ${_cudnn_root} PATH_SUFFIXES ${_cudnn_suffixes_lib}
               NO_DEFAULT_PATH)
else()
  set(_cudnn_hints ${CUDAToolkit_LIBRARY_ROOT} ${CUDAToolkit_TARGET_DIR} /usr/local/cuda /usr)
  find_path(CUDNN_INCLUDE_DIR cudnn_version.h HINTS ${_cudnn_hints} ${CUDAToolkit_INCLUDE_DIRS}
            PATH_SUFFIXES ${_cudnn_suffixes_inc})
  find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 HINTS ${_cudnn_hints} PATH_SUFFIXES ${_cudnn_suffixes_lib})
endif()
if(CUDNN_INCLUDE_DIR AND EXISTS "${CUDNN_INCLUDE_DIR}/cudnn_version.h")
  file(STRINGS "${CUDNN_INCLUDE_DIR}/cudnn_version.h" _v REGEX "#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) +[0-9]+")
  string(REGEX REPLACE ".*CUDNN_MAJOR +([0-9]+).*" "\\1" _maj "${_v}")
  string(REGEX REPLACE ".*CUDNN_MINOR +([0-9]+).*" "\\1" _min "${_v}")
  string(REGEX REPLACE ".*CUDNN_PATCHLEVEL +([0-9]+).*" "\\1" _pat "${_v}")
  set(CUDNN_VERSION "${_maj}.${_min}.${_pat}")
endif()
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(CUDNN REQUIRED_VARS CUDNN_LIBRARY CUDNN_INCLUDE_DIR VERSION_VAR CUDNN_VERSION)
if(CUDNN_FOUND AND NOT TARGET CUDNN::cudnn)
  add_library(CUDNN::cudnn UNKNOWN IMPORTED)
  set_target_properties(CUDNN::cudnn PROPERTIES IMPORTED_LOCATION "${CUDNN_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${CUDNN_INCLUDE_DIR}")
endif()
