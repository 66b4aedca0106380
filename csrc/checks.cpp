// The array checks of checks.h that need the CUDA helpers (device_info.h).
#include "checks.h"

#include "device_info.h"

namespace driftscope {
namespace checks {

bool same_device(const std::vector<ArrayView*>& arrays, const std::string& what) {
  const ArrayView& first = *arrays[0];
  for (const ArrayView* a : arrays) {
    if (a->where != first.where)
      value_error(a->arg + ": is a " + a->where_name() + " array but " + first.arg + " is a " + first.where_name() +
                  " array; all arrays must be on the same device");
  }
  if (first.where == Where::CPU) return false;
  require_gpu(what);
  for (ArrayView* a : arrays)
    if (a->device < 0) a->device = pointer_device(a->data, a->arg);
  for (const ArrayView* a : arrays) {
    if (a->device != first.device)
      value_error(a->arg + ": is on cuda:" + std::to_string(a->device) + " but " + first.arg + " is on cuda:" +
                  std::to_string(first.device) + "; all arrays must be on the same device");
  }
  return true;
}

}  // namespace checks
}  // namespace driftscope
