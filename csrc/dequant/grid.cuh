// Grid size of the streaming dequantisation kernels: enough blocks to fill every SM at the kernel's
// occupancy (cudaOccupancyMaxActiveBlocksPerMultiprocessor), never more than there are tiles; the
// kernels walk the remaining tiles grid-stride.
#pragma once

#include "../cuda_check.h"

namespace driftscope {
namespace dq {

template <typename Kernel>
unsigned grid_for(Kernel kernel, int threads, long long tiles) {
  int dev = 0, sms = 0, per_sm = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0),
             "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  long long grid = (long long)sms * (per_sm > 0 ? per_sm : 1);
  if (grid > tiles) grid = tiles;
  return (unsigned)(grid > 0 ? grid : 1);
}

}  // namespace dq
}  // namespace driftscope
