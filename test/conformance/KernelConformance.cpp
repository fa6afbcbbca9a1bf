// Conformance of the runtime's kernels against the ONNX backend node tests (DESIGN.md §8).
//
//   tbp_kernel_conformance NODE_TEST_DIR EXCLUSIONS_FILE
//
// For every test under NODE_TEST_DIR/node whose nodes all use op types tbp imports, imports
// model.onnx with its data (symbolic input dims bound from the test's inputs; a default-domain
// opset below 7 raised to 7, as tbp_node_conformance does), feeds test_data_set_0/input_N.pb to
// the graph inputs, runs every node in graph order through the runtime's kernel table
// (a CPU generator seeded 0, firstForward true), and compares each graph output with
// output_N.pb:
//   - shape equal to the reference, and every node output of the IR's shape and dtype;
//   - floating outputs: |got - want| <= 1e-4 + 1e-3 * |want| elementwise, infinities equal,
//     NaN at the same positions;
//   - integer and boolean outputs: exactly equal.
// Float graph inputs require grad and every float output that autograd tracks is
// backpropagated once, so a kernel autograd cannot differentiate fails too.
// Outputs of a training-mode Dropout with a nonzero ratio are random: for them only shapes, the
// mask's dtype and the relation y = x * mask / (1 - ratio) (or y in {0, x / (1 - ratio)} without
// a mask output) are checked.
// Tests listed in EXCLUSIONS_FILE (`test_name  reason`) are counted but not run. Prints one line
// per failure and ends with the plain `N passed, M failed` line; exits non-zero on any failure.

#include "Kernels.h"
#include "NodeTestSupport.h"

#include "tbp/frontend/onnx/OnnxImporter.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

namespace fs = std::filesystem;
using tbp::ir::DType;

namespace {

using tbp::conformance::loadProto;

std::string shapeText(at::IntArrayRef dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + std::to_string(dims[i]);
  return s + "]";
}

/// The tbp dtype of an ONNX TensorProto element type.
std::optional<DType> dtypeOf(int onnxType) {
  switch (onnxType) {
  case onnx::TensorProto::FLOAT: return DType::F32;
  case onnx::TensorProto::FLOAT16: return DType::F16;
  case onnx::TensorProto::BFLOAT16: return DType::BF16;
  case onnx::TensorProto::DOUBLE: return DType::F64;
  case onnx::TensorProto::INT8: return DType::I8;
  case onnx::TensorProto::INT16: return DType::I16;
  case onnx::TensorProto::INT32: return DType::I32;
  case onnx::TensorProto::INT64: return DType::I64;
  case onnx::TensorProto::UINT8: return DType::U8;
  case onnx::TensorProto::UINT16: return DType::U16;
  case onnx::TensorProto::UINT32: return DType::U32;
  case onnx::TensorProto::UINT64: return DType::U64;
  case onnx::TensorProto::BOOL: return DType::Bool;
  default: return std::nullopt;
  }
}

/// A tensor from little-endian element bytes of `dtype` (u16/u32/u64 widened to int64).
at::Tensor fromBytes(const std::string& bytes, DType dtype, at::IntArrayRef shape) {
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(tbp::runtime::torchDType(dtype)));
  const size_t n = static_cast<size_t>(t.numel());
  auto widen = [&](auto sample) {
    using U = decltype(sample);
    int64_t* out = t.data_ptr<int64_t>();
    for (size_t i = 0; i < n; ++i) {
      U v;
      std::memcpy(&v, bytes.data() + i * sizeof(U), sizeof(U));
      out[i] = static_cast<int64_t>(v);
    }
  };
  switch (dtype) {
  case DType::U16: widen(uint16_t{}); break;
  case DType::U32: widen(uint32_t{}); break;
  case DType::U64: widen(uint64_t{}); break;
  default: std::memcpy(t.data_ptr(), bytes.data(), n * tbp::ir::dtypeSize(dtype)); break;
  }
  return t;
}

/// The element bytes of a TensorProto, from raw_data or the typed field.
std::string protoBytes(const onnx::TensorProto& t, DType dtype) {
  if (t.has_raw_data()) return t.raw_data();
  std::string out;
  auto append = [&out](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
  switch (dtype) {
  case DType::F32: for (float v : t.float_data()) append(&v, 4); break;
  case DType::F64: for (double v : t.double_data()) append(&v, 8); break;
  case DType::I64: for (int64_t v : t.int64_data()) append(&v, 8); break;
  case DType::U32: for (uint64_t v : t.uint64_data()) { auto s = static_cast<uint32_t>(v); append(&s, 4); } break;
  case DType::U64: for (uint64_t v : t.uint64_data()) append(&v, 8); break;
  case DType::I32: for (int32_t v : t.int32_data()) append(&v, 4); break;
  case DType::I16:
  case DType::U16:
  case DType::F16:
  case DType::BF16: for (int32_t v : t.int32_data()) { auto s = static_cast<uint16_t>(v); append(&s, 2); } break;
  case DType::I8:
  case DType::U8:
  case DType::Bool: for (int32_t v : t.int32_data()) { auto s = static_cast<uint8_t>(v); append(&s, 1); } break;
  }
  return out;
}

/// A reference tensor as `want` (the IR dtype). numpy has no bfloat16: the generator stores
/// bfloat16 tensors as uint16 bit patterns.
std::optional<at::Tensor> fromProto(const onnx::TensorProto& t, DType want, std::string& error) {
  std::optional<DType> stored = dtypeOf(t.data_type());
  if (!stored) {
    error = "reference '" + t.name() + "' has ONNX element type " + std::to_string(t.data_type()) + ", which tbp lacks";
    return std::nullopt;
  }
  if (*stored == DType::U16 && want == DType::BF16) stored = DType::BF16;
  std::vector<int64_t> dims(t.dims().begin(), t.dims().end());
  std::string bytes = protoBytes(t, *stored);
  int64_t count = 1;
  for (int64_t d : dims) count *= d;
  if (bytes.size() != static_cast<size_t>(count) * tbp::ir::dtypeSize(*stored)) {
    error = "reference '" + t.name() + "' holds " + std::to_string(bytes.size()) + " bytes for " + std::to_string(count) + " elements";
    return std::nullopt;
  }
  at::Tensor r = fromBytes(bytes, *stored, dims);
  return r.to(tbp::runtime::torchDType(want));
}

std::string firstLine(const std::string& s) { return s.substr(0, s.find('\n')); }

/// Empty when `got` matches `want` within the tolerances stated above.
std::string compare(const at::Tensor& got, const at::Tensor& want) {
  if (got.sizes() != want.sizes()) return "shape " + shapeText(got.sizes()) + ", the reference " + shapeText(want.sizes());
  if (got.numel() == 0) return {};
  if (!at::isFloatingType(want.scalar_type())) {
    at::Tensor g = got.to(at::kLong), w = want.to(at::kLong);
    if (at::equal(g, w)) return {};
    at::Tensor bad = at::ne(g, w).reshape({-1}).nonzero();
    int64_t i = bad[0].item<int64_t>();
    return std::to_string(bad.size(0)) + " elements differ, first at flat index " + std::to_string(i) + ": got " +
           std::to_string(g.reshape({-1})[i].item<int64_t>()) + ", want " + std::to_string(w.reshape({-1})[i].item<int64_t>());
  }
  at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  at::Tensor nanG = at::isnan(g), nanW = at::isnan(w);
  if (!at::equal(nanG, nanW)) return "NaN positions differ";
  at::Tensor ok = at::eq(g, w) | nanW | (at::abs(g - w) <= 1e-4 + 1e-3 * at::abs(w));
  if (ok.all().item<bool>()) return {};
  at::Tensor err = at::where(ok, at::zeros_like(g), at::abs(g - w)).reshape({-1});
  int64_t i = err.argmax().item<int64_t>();
  std::ostringstream s;
  s.precision(9);
  s << (~ok).sum().item<int64_t>() << " elements off, worst at flat index " << i << ": got " << g.reshape({-1})[i].item<double>()
    << ", want " << w.reshape({-1})[i].item<double>();
  return s.str();
}

/// A training-mode Dropout with a nonzero ratio: its outputs are random.
struct RandomDropout {
  at::Tensor x;
  double ratio = 0;
  std::vector<tbp::ir::ValueId> outputs;
};

/// Checks a random Dropout's outputs: y is x scaled by 1/(1-ratio) where kept and 0 elsewhere.
std::string checkDropout(const RandomDropout& d, const std::vector<at::Tensor>& values) {
  at::Tensor y = values[d.outputs[0]].detach().to(at::kDouble);
  at::Tensor scaled = d.x.detach().to(at::kDouble) / (1.0 - d.ratio);
  auto close = [](const at::Tensor& a, const at::Tensor& b) { return at::abs(a - b) <= 1e-4 + 1e-3 * at::abs(b); };
  if (y.sizes() != d.x.sizes()) return "dropout output has shape " + shapeText(y.sizes()) + ", its input " + shapeText(d.x.sizes());
  at::Tensor kept;
  if (d.outputs.size() > 1) {
    const at::Tensor& mask = values[d.outputs[1]];
    if (mask.scalar_type() != at::kBool || mask.sizes() != d.x.sizes()) return "dropout mask is not a bool tensor of the input's shape";
    kept = mask;
    if (!close(y, at::where(mask, scaled, at::zeros_like(scaled))).all().item<bool>()) return "dropout output is not x * mask / (1 - ratio)";
  } else {
    kept = at::ne(y, 0);
    if (!(close(y, scaled) | at::eq(y, 0)).all().item<bool>()) return "dropout output has elements other than 0 and x / (1 - ratio)";
  }
  const double keptFraction = kept.to(at::kDouble).mean().item<double>();
  if (d.x.numel() >= 50 && std::abs(keptFraction - (1.0 - d.ratio)) > 0.2)
    return "dropout kept " + std::to_string(keptFraction) + " of the elements at ratio " + std::to_string(d.ratio);
  return {};
}

/// Imports and runs one test; empty when it passes.
std::string runTest(const fs::path& dir, onnx::ModelProto& model, int opset) {
  tbp::conformance::ImportedNodeTest test = tbp::conformance::importNodeTest(dir, model, opset);
  tbp::Expected<tbp::ir::Graph>& imported = test.graph;
  const auto& inputFiles = test.inputFiles;
  if (!imported) return "import: " + imported.status().message();
  const tbp::ir::Graph& g = *imported;

  std::vector<at::Tensor> values(g.numValues());
  for (tbp::ir::ValueId id = 0; id < g.numValues(); ++id) {
    const tbp::ir::Value& v = g.value(id);
    if (v.data) values[id] = fromBytes(*v.data, v.type.dtype, v.type.shape);
  }
  for (const auto& [inputName, file] : inputFiles) {
    std::optional<tbp::ir::ValueId> id = g.findValue(inputName);
    if (!id) continue;
    onnx::TensorProto proto;
    if (!loadProto(file, proto)) return "missing input file " + file.filename().string();
    std::string error;
    std::optional<at::Tensor> t = fromProto(proto, g.value(*id).type.dtype, error);
    if (!t) return error;
    if (at::isFloatingType(t->scalar_type())) t->requires_grad_(true);
    values[*id] = *t;
  }

  at::Generator generator = at::detail::createCPUGenerator(0);
  tbp::runtime::KernelContext context{&generator, true, &values};
  std::vector<RandomDropout> randomDropouts;
  for (const tbp::ir::Node& node : g.nodes()) {
    const std::string where = std::string(tbp::ir::opName(node.op)) + " node" + (node.name.empty() ? "" : " '" + node.name + "'");
    tbp::runtime::Kernel kernel = tbp::runtime::kernelFor(node.op);
    if (!kernel) return "no kernel for " + std::string(tbp::ir::opName(node.op));
    std::vector<at::Tensor> inputs;
    for (tbp::ir::ValueId in : node.inputs) {
      if (in != tbp::ir::kNone && !values[in].defined()) return where + ": input '" + g.value(in).name + "' has no tensor";
      inputs.push_back(in == tbp::ir::kNone ? at::Tensor() : values[in]);
    }
    if (node.op == tbp::ir::Op::Dropout) {
      double ratio = inputs.size() > 1 && inputs[1].defined() ? inputs[1].item<double>() : node.attrFloat("ratio", 0.5);
      bool training = inputs.size() > 2 && inputs[2].defined() ? inputs[2].item<bool>() : node.attrInt("training_mode", 0) != 0;
      if (training && ratio > 0) randomDropouts.push_back({inputs[0], ratio, node.outputs});
    }
    std::vector<at::Tensor> outs;
    try {
      outs = kernel(context, g, node, inputs);
    } catch (const c10::Error& e) {
      return where + ": " + firstLine(e.what_without_backtrace());
    } catch (const std::exception& e) {
      return where + ": " + firstLine(e.what());
    }
    if (outs.size() < node.outputs.size())
      return where + ": returned " + std::to_string(outs.size()) + " outputs for " + std::to_string(node.outputs.size());
    for (size_t o = 0; o < node.outputs.size(); ++o) {
      const tbp::ir::Value& v = g.value(node.outputs[o]);
      if (!outs[o].defined()) return where + ": output " + std::to_string(o) + " is undefined";
      if (outs[o].sizes() != at::IntArrayRef(v.type.shape))
        return where + ": output '" + v.name + "' has shape " + shapeText(outs[o].sizes()) + ", the IR says " + shapeText(v.type.shape);
      if (outs[o].scalar_type() != tbp::runtime::torchDType(v.type.dtype))
        return where + ": output '" + v.name + "' has dtype " + std::string(at::toString(outs[o].scalar_type())) + ", the IR says " +
               tbp::ir::dtypeName(v.type.dtype);
      values[node.outputs[o]] = outs[o];
    }
  }

  std::set<tbp::ir::ValueId> random;
  for (const RandomDropout& d : randomDropouts) {
    random.insert(d.outputs.begin(), d.outputs.end());
    std::string problem = checkDropout(d, values);
    if (!problem.empty()) return problem;
  }
  const auto& outs = g.outputs();
  for (size_t k = 0; k < outs.size(); ++k) {
    const tbp::ir::Value& v = g.value(outs[k]);
    const std::string what = "output " + std::to_string(k) + " '" + v.name + "'";
    if (!values[outs[k]].defined()) return what + " was not computed";
    if (random.count(outs[k])) continue;
    onnx::TensorProto ref;
    if (!loadProto(dir / "test_data_set_0" / ("output_" + std::to_string(k) + ".pb"), ref)) return "missing reference output " + std::to_string(k);
    std::string error;
    std::optional<at::Tensor> want = fromProto(ref, v.type.dtype, error);
    if (!want) return what + ": " + error;
    std::string problem = compare(values[outs[k]].detach(), *want);
    if (!problem.empty()) return what + ": " + problem;
  }
  // Every kernel must be differentiable where autograd tracks it: the runtime backpropagates.
  at::Tensor total;
  for (tbp::ir::ValueId out : outs) {
    const at::Tensor& t = values[out];
    if (!t.requires_grad() || !at::isFloatingType(t.scalar_type())) continue;
    at::Tensor s = t.to(at::kDouble).sum();
    total = total.defined() ? total + s : s;
  }
  try {
    if (total.defined()) total.backward();
  } catch (const c10::Error& e) {
    return "backward: " + firstLine(e.what_without_backtrace());
  }
  return {};
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: tbp_kernel_conformance NODE_TEST_DIR EXCLUSIONS_FILE\n";
    return 2;
  }
  const fs::path root = fs::path(argv[1]) / "node";
  std::map<std::string, std::string> exclusions;
  if (!tbp::conformance::readExclusions(argv[2], exclusions)) {
    std::cerr << argv[2] << ": cannot open the exclusions file\n";
    return 2;
  }
  std::vector<std::string> ops = tbp::frontend::supportedOnnxOps();
  std::set<std::string> claimed(ops.begin(), ops.end());
  std::vector<fs::path> dirs = tbp::conformance::listNodeTests(root);
  if (dirs.empty()) {
    std::cerr << "no node tests under " << root << "\n";
    return 1;
  }
  int passed = 0, failed = 0, excluded = 0;
  std::set<std::string> unusedExclusions;
  for (const auto& [name, reason] : exclusions) unusedExclusions.insert(name);
  for (const fs::path& dir : dirs) {
    const std::string name = dir.filename().string();
    onnx::ModelProto model;
    if (!loadProto(dir / "model.onnx", model)) continue;
    int opset = -1;
    for (const auto& o : model.opset_import())
      if (o.domain().empty() || o.domain() == "ai.onnx") opset = static_cast<int>(o.version());
    bool isClaimed = opset >= 1 && opset <= tbp::frontend::kMaxOnnxOpset;
    for (const auto& n : model.graph().node())
      isClaimed = isClaimed && (n.domain().empty() || n.domain() == "ai.onnx") && claimed.count(n.op_type());
    if (!isClaimed) continue;
    unusedExclusions.erase(name);
    if (exclusions.count(name)) {
      ++excluded;
      continue;
    }
    std::string problem;
    try {
      problem = runTest(dir, model, opset);
    } catch (const c10::Error& e) {
      problem = firstLine(e.what_without_backtrace());
    } catch (const std::exception& e) {
      problem = firstLine(e.what());
    }
    if (problem.empty()) {
      ++passed;
    } else {
      ++failed;
      std::cout << "FAIL " << name << ": " << problem << "\n";
    }
  }
  for (const std::string& stale : unusedExclusions) std::cout << "note: exclusion '" << stale << "' matches no claimed test\n";
  std::cout << excluded << " excluded (see the exclusions file)\n";
  std::cout << passed << " passed, " << failed << " failed\n";
  return failed == 0 && passed > 0 ? 0 : 1;
}
