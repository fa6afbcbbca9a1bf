// The runtime of builds without LibTorch: it says so.

#include "tbp/runtime/Runtime.h"

namespace tbp::runtime {

bool available() { return false; }

std::vector<std::string> missingKernels(const ir::Graph&) { return {}; }

int intraOpThreads(int requested) { return requested > 0 ? requested : 1; }

Expected<plan::NodeCosts> profileForwardCosts(const ir::Graph&, const std::vector<ir::NodeId>&, const RunOptions&, int) {
  return Status(ErrorCode::Internal,
                "this build of tbp has no LibTorch runtime to measure costs; install libtorch-dev and rebuild with -DTBP_WITH_TORCH=ON");
}

Expected<std::vector<std::optional<ir::MeasuredScratch>>> profileScratch(const ir::Graph&, const std::vector<ir::NodeId>&,
                                                                        const RunOptions&) {
  return Status(ErrorCode::Internal,
                "this build of tbp has no LibTorch runtime to measure kernel scratch; install libtorch-dev and rebuild with -DTBP_WITH_TORCH=ON");
}

Expected<RunReport> runTrainingStep(const ir::Graph&, const plan::StageModel&, const plan::Stream&, const RunOptions&) {
  return Status(ErrorCode::Internal,
                "this build of tbp has no LibTorch runtime; install libtorch-dev and rebuild with -DTBP_WITH_TORCH=ON");
}

} // namespace tbp::runtime
