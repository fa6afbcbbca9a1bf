// Which BLAS LibTorch's CPU matrix products call. No LibTorch types here: the library is
// found through the dynamic linker, so builds without LibTorch answer "none".

#include "tbp/runtime/Runtime.h"

#include <dlfcn.h>

#include <climits>
#include <cstdlib>

namespace tbp::runtime {

namespace {

/// The kind of BLAS a library file is, by its resolved path: Debian installs each provider of
/// the libblas.so.3 alternative in a folder of its own (blas/ for netlib's reference BLAS,
/// openblas-pthread/, openblas-openmp/, blis-openmp/, atlas/), and MKL's files say mkl.
std::string kindOf(const std::string& path) {
  auto has = [&](const char* part) { return path.find(part) != std::string::npos; };
  if (has("openblas")) return "openblas";
  if (has("mkl")) return "mkl";
  if (has("blis")) return "blis";
  if (has("atlas")) return "atlas";
  if (has("/blas/libblas.so")) return "reference";
  return "other";
}

} // namespace

BlasInfo cpuBlas() {
  BlasInfo info{"none", ""};
  void* symbol = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info where{};
  if (!symbol || !dladdr(symbol, &where) || !where.dli_fname) return info;
  info.library = where.dli_fname;
  if (char resolved[PATH_MAX]; realpath(where.dli_fname, resolved)) info.library = resolved;
  info.kind = kindOf(info.library);
  return info;
}

} // namespace tbp::runtime
