#!/usr/bin/env bash
# Sourced by the ci/ scripts: makes sure the build and test dependencies are present, installing the
# missing ones with apt-get (as root, on Debian/Ubuntu). On a machine without a package registry (the GPU
# machine) nothing is installed: what is there is used, and CMake names whatever is still missing.
#
#   tegemma_ensure_deps [extra packages...]
#
# Packages: cmake ninja-build g++ (toolchain), libgtest-dev libbenchmark-dev nlohmann-json3-dev (tests, benchmarks,
# JSON), libtorch-dev (the LibTorch reference; skipped when a Python torch with its CMake package is present),
# sentencepiece libsentencepiece-dev (tokenizer and corpus preparation), fortunes (the training corpus text).

tegemma_torch_prefix() {
  # torch's CMake package from the Python install (the GPU machine), else Debian's libtorch-dev.
  local p
  p=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null) || p=""
  if [ -n "$p" ] && [ -d "$p/Torch" ]; then echo "$p"; return; fi
  if [ -d /usr/lib/x86_64-linux-gnu/cmake/Torch ]; then echo /usr/lib/x86_64-linux-gnu/cmake/Torch; return; fi
  echo ""
}

tegemma_ensure_deps() {
  local want=(cmake ninja-build g++ libgtest-dev libbenchmark-dev nlohmann-json3-dev sentencepiece
              libsentencepiece-dev fortunes "$@")
  if [ -z "$(tegemma_torch_prefix)" ]; then want+=(libtorch-dev); fi
  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps: no dpkg here; assuming the dependencies are installed" >&2
    return 0
  fi
  local missing=()
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "deps: installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/tegemma-apt.log 2>&1; then
    echo "deps: apt-get could not install ${missing[*]} (no registry here?); continuing with what is present." >&2
    echo "      see /tmp/tegemma-apt.log" >&2
  fi
}

tegemma_have_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# Configures $1 from source dir $2 (default: the repository). Extra CMake args follow.
tegemma_configure() {
  local build=$1 src=${2:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
  shift 2 || shift $#
  local torch; torch=$(tegemma_torch_prefix)
  local args=(-S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release)
  [ -n "$torch" ] && args+=(-DCMAKE_PREFIX_PATH="$torch" -DTEGEMMA_TORCH=ON)
  local cudnn
  cudnn=$(python3 -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])' 2>/dev/null) || cudnn=""
  [ -n "$cudnn" ] && args+=(-DCUDNN_ROOT="$cudnn")
  cmake "${args[@]}" "$@"
}

# Configures and builds into $1 from source dir $2 (default: the repository). Extra CMake args follow.
tegemma_build() {
  tegemma_configure "$@"
  cmake --build "$1" -j "$(nproc)"
}

# Compile check of what a machine without a GPU does not build (ci/test.sh): $1 was configured and built from $2
# with -DTEGEMMA_GPU_TESTS=OFF -DTEGEMMA_BENCH=OFF (ctest -L cpu runs none of the gpu-labelled suites and no
# benchmark; ci/gpu_session.sh builds and runs them on the device). Configures $1/gpu-syntax-check with both on and
# the same extra CMake args, takes the object files it has beyond $1 (exactly the gpu-labelled suites' and bench/'s,
# whatever their names) and compiles each with -fsyntax-only: every declaration, call and template instantiation
# is checked, with the build's warnings; no code is generated and nothing is linked (a missing definition shows up
# on the device). A CUDA source among them is compiled in full. About 1 minute on 2 cores, against about 2 for
# building and linking them.
tegemma_gpu_syntax_check() {
  local build=$1 src=$2
  shift 2
  local check=$build/gpu-syntax-check
  if ! tegemma_configure "$check" "$src" "$@" -DTEGEMMA_GPU_TESTS=ON -DTEGEMMA_BENCH=ON > "$check.log" 2>&1; then
    echo "gpu syntax check: configure failed, see $check.log" >&2
    return 1
  fi
  local objs
  objs=$(comm -13 <(ninja -C "$build" -t targets all | awk -F': ' '$1 ~ /\.o$/ {print $1}' | sort) \
                  <(ninja -C "$check" -t targets all | awk -F': ' '$1 ~ /\.o$/ {print $1}' | sort))
  local n=0 o cmd
  local list=$check/syntax_commands
  : > "$list"
  for o in $objs; do
    cmd=$(ninja -C "$check" -t commands -s "$o")
    # A precompiled header shared from a built target (REUSE_FROM, e.g. the reference's ATen.h) is in $build.
    cmd=${cmd//"-include $check/"/"-include $build/"}
    case $cmd in
      *nvcc*) ;;                                  # CUDA: a full compile (nvcc has no syntax-only mode)
      *) cmd="$cmd -fsyntax-only";;
    esac
    printf '%s\0' "$cmd" >> "$list"
    n=$((n + 1))
  done
  echo "== gpu syntax check: $n objects that this build leaves out (gpu-labelled suites, bench/), -fsyntax-only"
  [ "$n" -eq 0 ] && return 0
  (cd "$check" && xargs -0 -n1 -P "$(nproc)" sh -c < "$list")
}

# compute-sanitizer: $COMPUTE_SANITIZER, on PATH, beside nvcc, under /usr/local/cuda*, or in Python's nvidia.*
# packages (the PyPI wheel nvidia-cuda-sanitizer-api puts it in nvidia/cu13/bin). Prints the path.
tegemma_find_sanitizer() {
  local c
  for c in "${COMPUTE_SANITIZER:-}" "$(command -v compute-sanitizer 2>/dev/null)" \
           "$(dirname "$(command -v nvcc 2>/dev/null || echo /nonexistent/nvcc)")/compute-sanitizer" \
           /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer \
           /usr/local/cuda-*/bin/compute-sanitizer /usr/local/cuda-*/compute-sanitizer/compute-sanitizer \
           $(python3 -c 'import nvidia, glob, os
for p in nvidia.__path__: print(" ".join(glob.glob(os.path.join(p, "*", "bin", "compute-sanitizer"))))' 2>/dev/null); do
    if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}

# The arguments compute-sanitizer $1 needs to find its injection libraries: the PyPI wheel keeps them in ../lib
# rather than beside the binary. Prints nothing or "--injection-path DIR".
tegemma_sanitizer_injection_args() {
  if [ -e "$(dirname "$1")/../lib/libTreeLauncherTargetInjection.so" ]; then
    echo "--injection-path $(cd "$(dirname "$1")/../lib" && pwd)"
  fi
}
