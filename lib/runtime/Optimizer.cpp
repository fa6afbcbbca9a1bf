// Optimizer memory rules, shared by builds with and without LibTorch.

#include "tbp/runtime/Runtime.h"

namespace tbp::runtime {

uint64_t optimizerStateBytes(const std::string& optimizer, uint64_t parameterBytes) {
  return optimizer == "adam" ? 2 * parameterBytes : 0;
}

uint64_t optimizerTransientBytes(const std::string& optimizer, uint64_t largestParameterBytes) {
  return optimizer == "adam" ? largestParameterBytes : 0;
}

} // namespace tbp::runtime
