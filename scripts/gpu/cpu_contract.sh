#!/usr/bin/env bash
# GPU-machine part (see scripts/gpu_session.sh): the C++ CPU reference's contracted build there. An earlier
# whole-suite run on the GPU machine found `plain_contract` giving multiply-then-add results (2 fma tests failed):
# this records how that file was compiled there (the compile command CMake wrote, the compiler, the fused
# instructions in its object) and runs the CPU reference tests. Arg: output folder.
D=${1:?output folder}
B=$(ls -d build/cmake-* 2>/dev/null | head -1)
{
  echo "build tree: ${B:-none}"
  [ -n "$B" ] && grep -m1 -E "CMAKE_CXX_COMPILER:|CMAKE_CXX_COMPILER_ID" "$B/CMakeCache.txt"
  [ -n "$B" ] && { ninja -C "$B" -t commands 2>/dev/null || true; } | grep -m1 "cpu_plain_contract.cpp" | tr ' ' '\n' \
    | grep -E "^-(O|f|m|march|std)" | tr '\n' ' '; echo
  obj=$(find "${B:-build}" -name "cpu_plain_contract.cpp.o" | head -1)
  echo "object: ${obj:-not found}"
  [ -n "$obj" ] && echo "fused multiply-add instructions in it: $(objdump -d "$obj" | grep -c -E 'vfn?m(add|sub)[0-9]{3}')"
  grep -m1 -o -w -E "fma|avx2" /proc/cpuinfo | sort -u | tr '\n' ' '; echo "(cpu flags)"
  python3 -c "import probes.fma.kernels as k; print('cpu_has_fma:', k.cpu_has_fma())"
  python3 -m pytest -q -p no:cacheprovider -rfEs tests/test_fma_kernels.py 2>&1 | tail -15
} 2>&1 | tee "$D/cpu_contract.txt"
