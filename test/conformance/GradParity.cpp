// Gradient parity: compares gradients that `tbp run --save-grads` wrote with PyTorch's
// (models/make_references.py).
//
//   tbp_grad_parity REFERENCE_DIR GOT_DIR
//
// Both folders hold manifest.json ({"parameters": [{"name", "file", "shape"}], "loss"}) and one
// .npy per parameter. Parameters are matched by name; a gradient passes when
// max|got - ref| <= 1e-5 + 2e-3 * max|ref| (fp32, different summation orders), and the loss
// within 1e-4 relative. Reference parameters tbp does not have (renamed by the exporter's
// constant folding) are listed and not counted. Ends with `N passed, M failed`.

#include "tbp/support/FileIO.h"
#include "tbp/support/Npy.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <iostream>
#include <map>

using namespace tbp;

namespace {

std::vector<float> floats(const NpyArray& a) {
  std::vector<float> out(a.data.size() / 4);
  std::memcpy(out.data(), a.data.data(), out.size() * 4);
  return out;
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: tbp_grad_parity REFERENCE_DIR GOT_DIR\n";
    return 2;
  }
  std::string refDir = argv[1], gotDir = argv[2];
  Expected<std::string> refText = readFile(refDir + "/manifest.json"), gotText = readFile(gotDir + "/manifest.json");
  if (!refText || !gotText) {
    std::cerr << (refText ? gotText.status() : refText.status()).message() << "\n";
    return 1;
  }
  nlohmann::json ref = nlohmann::json::parse(*refText), got = nlohmann::json::parse(*gotText);
  std::map<std::string, std::string> gotFiles;
  for (const auto& p : got["parameters"]) gotFiles[p["name"]] = p["file"];
  int passed = 0, failed = 0, missing = 0;
  double refLoss = ref["loss"], gotLoss = got["loss"];
  // Written so that a NaN fails: it compares as within every tolerance.
  if (!(std::fabs(refLoss - gotLoss) <= 1e-4 * std::max(1.0, std::fabs(refLoss)))) {
    std::cout << "FAIL loss: tbp " << gotLoss << ", PyTorch " << refLoss << "\n";
    ++failed;
  } else {
    ++passed;
  }
  double worst = 0, worstAbs = 0, worstRel = 0;
  std::string worstName;
  for (const auto& p : ref["parameters"]) {
    std::string name = p["name"];
    auto it = gotFiles.find(name);
    if (it == gotFiles.end()) {
      std::cout << "not in tbp's model: " << name << "\n";
      ++missing;
      continue;
    }
    Expected<NpyArray> r = readNpy(refDir + "/" + std::string(p["file"]));
    Expected<NpyArray> g = readNpy(gotDir + "/" + it->second);
    if (!r || !g || r->shape != g->shape || r->descr != "<f4" || g->descr != "<f4") {
      std::cout << "FAIL " << name << ": missing file, shape or dtype mismatch\n";
      ++failed;
      continue;
    }
    std::vector<float> a = floats(*g), b = floats(*r);
    double maxAbs = 0, scale = 0;
    size_t nonFinite = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!std::isfinite(a[i]) || !std::isfinite(b[i])) {
        ++nonFinite; // std::max would drop a NaN and pass it
        continue;
      }
      maxAbs = std::max(maxAbs, static_cast<double>(std::fabs(a[i] - b[i])));
      scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
    }
    if (nonFinite > 0) {
      std::cout << "FAIL " << name << ": " << nonFinite << " NaN or infinite values (tbp or PyTorch)\n";
      ++failed;
      continue;
    }
    double rel = scale > 0 ? maxAbs / scale : maxAbs;
    double tolerance = 1e-5 + 2e-3 * scale;
    // Report the parameter closest to its tolerance: a relative error alone names gradients that
    // are zero up to rounding (a key bias under softmax) and pass on the absolute term.
    if (maxAbs / tolerance > worst) {
      worst = maxAbs / tolerance;
      worstName = name;
      worstAbs = maxAbs;
      worstRel = rel;
    }
    if (maxAbs <= tolerance) {
      ++passed;
    } else {
      std::cout << "FAIL " << name << ": max abs error " << maxAbs << " (" << rel << " of max |grad| " << scale << ")\n";
      ++failed;
    }
  }
  std::cout << "loss tbp " << gotLoss << " PyTorch " << refLoss << "; ";
  if (worstName.empty())
    std::cout << "every gradient identical";
  else
    std::cout << "closest to tolerance '" << worstName << "' (" << worst << " of it: max abs error " << worstAbs << ", "
              << worstRel << " of max |grad|)";
  std::cout << "; " << missing << " reference parameters not in tbp's model\n";
  std::cout << passed << " passed, " << failed << " failed\n";
  return failed == 0 ? 0 : 1;
}
