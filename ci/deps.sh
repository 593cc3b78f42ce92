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

# Configures and builds into $1 from source dir $2 (default: the repository). Extra CMake args follow.
tegemma_build() {
  local build=$1 src=${2:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
  shift 2 || shift $#
  local torch; torch=$(tegemma_torch_prefix)
  local args=(-S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release)
  [ -n "$torch" ] && args+=(-DCMAKE_PREFIX_PATH="$torch" -DTEGEMMA_TORCH=ON)
  local cudnn
  cudnn=$(python3 -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])' 2>/dev/null) || cudnn=""
  [ -n "$cudnn" ] && args+=(-DCUDNN_ROOT="$cudnn")
  cmake "${args[@]}" "$@"
  cmake --build "$build" -j "$(nproc)"
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
