#include "tbp/frontend/onnx/OnnxImporter.h"

#include "ConstantFolding.h"
#include "Fusion.h"

#include "tbp/ir/OpRules.h"
#include "tbp/ir/Verify.h"
#include "tbp/support/FileIO.h"

#include <onnx/defs/schema.h>
#include <onnx/defs/shape_inference.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <google/protobuf/wire_format_lite.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace tbp::frontend {

namespace fs = std::filesystem;
using ir::DType;
using ir::Op;

namespace {

// ------------------------------------------------------------------------------- op table

/// ONNX op types tbp imports and the tbp op each becomes. Every entry must name an op of the
/// vocabulary; tbp's own loss ops are deliberately absent (they are appended, not imported).
struct OnnxOp {
  const char* onnxName;
  Op op;
};
constexpr OnnxOp kOnnxOps[] = {
    {"Abs", Op::Abs}, {"Add", Op::Add}, {"And", Op::And}, {"ArgMax", Op::ArgMax},
    {"ArgMin", Op::ArgMin}, {"AveragePool", Op::AveragePool},
    {"BatchNormalization", Op::BatchNormalization}, {"Cast", Op::Cast}, {"Ceil", Op::Ceil},
    {"Celu", Op::Celu}, {"Clip", Op::Clip}, {"Concat", Op::Concat},
    {"ConstantOfShape", Op::ConstantOfShape}, {"Conv", Op::Conv},
    {"ConvTranspose", Op::ConvTranspose}, {"Cos", Op::Cos}, {"CumSum", Op::CumSum},
    {"DepthToSpace", Op::DepthToSpace}, {"Div", Op::Div}, {"Dropout", Op::Dropout}, {"Einsum", Op::Einsum},
    {"Elu", Op::Elu}, {"Equal", Op::Equal}, {"Erf", Op::Erf}, {"Exp", Op::Exp},
    {"Expand", Op::Expand}, {"Flatten", Op::Flatten}, {"Floor", Op::Floor},
    {"Gather", Op::Gather}, {"GatherElements", Op::GatherElements}, {"Gemm", Op::Gemm},
    {"GlobalAveragePool", Op::GlobalAveragePool}, {"GlobalMaxPool", Op::GlobalMaxPool},
    {"Greater", Op::Greater}, {"GreaterOrEqual", Op::GreaterOrEqual},
    {"HardSigmoid", Op::HardSigmoid}, {"HardSwish", Op::HardSwish}, {"Identity", Op::Identity},
    {"InstanceNormalization", Op::InstanceNormalization}, {"IsInf", Op::IsInf},
    {"IsNaN", Op::IsNaN}, {"LayerNormalization", Op::LayerNormalization},
    {"LeakyRelu", Op::LeakyRelu}, {"Less", Op::Less}, {"LessOrEqual", Op::LessOrEqual},
    {"Log", Op::Log}, {"LogSoftmax", Op::LogSoftmax}, {"MatMul", Op::MatMul}, {"Max", Op::Max},
    {"MaxPool", Op::MaxPool}, {"Mean", Op::Mean}, {"Min", Op::Min}, {"Mod", Op::Mod},
    {"Mul", Op::Mul}, {"Neg", Op::Neg}, {"Not", Op::Not},
    {"OneHot", Op::OneHot}, {"Or", Op::Or}, {"Pad", Op::Pad}, {"Pow", Op::Pow},
    {"PRelu", Op::PRelu}, {"Range", Op::Range}, {"Reciprocal", Op::Reciprocal},
    {"ReduceL2", Op::ReduceL2}, {"ReduceMax", Op::ReduceMax}, {"ReduceMean", Op::ReduceMean},
    {"ReduceMin", Op::ReduceMin}, {"ReduceProd", Op::ReduceProd}, {"ReduceSum", Op::ReduceSum},
    {"ReduceSumSquare", Op::ReduceSumSquare}, {"Relu", Op::Relu}, {"Reshape", Op::Reshape},
    {"Resize", Op::Resize}, {"Round", Op::Round}, {"Selu", Op::Selu}, {"Shape", Op::Shape},
    {"Sigmoid", Op::Sigmoid}, {"Sign", Op::Sign}, {"Sin", Op::Sin}, {"Size", Op::Size},
    {"Slice", Op::Slice}, {"Softmax", Op::Softmax}, {"Softplus", Op::Softplus},
    {"Softsign", Op::Softsign}, {"SpaceToDepth", Op::SpaceToDepth}, {"Split", Op::Split},
    {"Sqrt", Op::Sqrt}, {"Squeeze", Op::Squeeze}, {"Sub", Op::Sub}, {"Sum", Op::Sum},
    {"Tanh", Op::Tanh}, {"Tile", Op::Tile}, {"Transpose", Op::Transpose}, {"Trilu", Op::Trilu},
    {"Unsqueeze", Op::Unsqueeze}, {"Upsample", Op::Upsample}, {"Where", Op::Where},
    {"Xor", Op::Xor},
};

const std::unordered_map<std::string, Op>& onnxOpTable() {
  static const std::unordered_map<std::string, Op> table = [] {
    std::unordered_map<std::string, Op> t;
    for (const OnnxOp& e : kOnnxOps) t.emplace(e.onnxName, e.op);
    return t;
  }();
  return table;
}

bool isDefaultDomain(const std::string& domain) { return domain.empty() || domain == "ai.onnx"; }

// ------------------------------------------------------------------------------- dtypes

struct OnnxDType {
  int onnx;
  DType dtype;
};
constexpr OnnxDType kDTypes[] = {
    {onnx::TensorProto_DataType_FLOAT, DType::F32},   {onnx::TensorProto_DataType_FLOAT16, DType::F16},
    {onnx::TensorProto_DataType_BFLOAT16, DType::BF16}, {onnx::TensorProto_DataType_DOUBLE, DType::F64},
    {onnx::TensorProto_DataType_INT8, DType::I8},     {onnx::TensorProto_DataType_INT16, DType::I16},
    {onnx::TensorProto_DataType_INT32, DType::I32},   {onnx::TensorProto_DataType_INT64, DType::I64},
    {onnx::TensorProto_DataType_UINT8, DType::U8},    {onnx::TensorProto_DataType_UINT16, DType::U16},
    {onnx::TensorProto_DataType_UINT32, DType::U32},  {onnx::TensorProto_DataType_UINT64, DType::U64},
    {onnx::TensorProto_DataType_BOOL, DType::Bool},
};

std::optional<DType> dtypeFromOnnx(int elemType) {
  for (const OnnxDType& d : kDTypes)
    if (d.onnx == elemType) return d.dtype;
  return std::nullopt;
}

std::string onnxDTypeName(int elemType) {
  return onnx::TensorProto_DataType_IsValid(elemType)
             ? onnx::TensorProto_DataType_Name(static_cast<onnx::TensorProto_DataType>(elemType))
             : "type " + std::to_string(elemType);
}

// ------------------------------------------------------------------------------- helpers

std::string describe(const onnx::NodeProto& node, int index) {
  std::string who = node.name().empty() ? "#" + std::to_string(index) : "'" + node.name() + "'";
  std::string type = isDefaultDomain(node.domain()) ? node.op_type() : node.domain() + "." + node.op_type();
  return "node " + who + " (" + type + ")";
}

/// Explains why `bytes` does not parse as a ModelProto by walking the top-level wire format.
std::string explainParseFailure(const std::string& bytes) {
  namespace wire = google::protobuf::internal;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(std::min<size_t>(bytes.size(), INT32_MAX)));
  while (true) {
    int offset = in.CurrentPosition();
    uint32_t tag = in.ReadTag();
    if (tag == 0) {
      if (static_cast<size_t>(offset) >= bytes.size()) break;
      return "not an ONNX protobuf: invalid field tag at byte offset " + std::to_string(offset);
    }
    int field = static_cast<int>(tag >> 3);
    auto type = wire::WireFormatLite::GetTagWireType(tag);
    if (type == wire::WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      uint32_t length = 0;
      if (!in.ReadVarint32(&length))
        return "truncated at byte offset " + std::to_string(offset) + " (field " + std::to_string(field) + ")";
      size_t remaining = bytes.size() - static_cast<size_t>(in.CurrentPosition());
      if (length > remaining)
        return "truncated: field " + std::to_string(field) + " at byte offset " + std::to_string(offset) +
               " declares " + std::to_string(length) + " bytes but only " + std::to_string(remaining) + " remain";
      in.Skip(static_cast<int>(length));
    } else if (!wire::WireFormatLite::SkipField(&in, tag)) {
      return "not an ONNX protobuf: malformed field " + std::to_string(field) + " at byte offset " + std::to_string(offset);
    }
  }
  return "not a valid ONNX protobuf (a nested message is malformed or truncated)";
}

/// Bytes of element data a TensorProto carries, without copying it.
uint64_t storedBytes(const onnx::TensorProto& t, DType dtype) {
  if (t.has_raw_data()) return t.raw_data().size();
  uint64_t count = 0;
  switch (dtype) {
  case DType::F32: count = static_cast<uint64_t>(t.float_data_size()); break;
  case DType::F64: count = static_cast<uint64_t>(t.double_data_size()); break;
  case DType::I64: count = static_cast<uint64_t>(t.int64_data_size()); break;
  case DType::U64:
  case DType::U32: count = static_cast<uint64_t>(t.uint64_data_size()); break;
  default: count = static_cast<uint64_t>(t.int32_data_size()); break;
  }
  return count * ir::dtypeSize(dtype);
}

/// Loads the element data of `tensor` as raw little-endian bytes.
Expected<std::string> tensorBytes(const onnx::TensorProto& t, DType dtype, uint64_t expectBytes,
                                  const std::string& where) {
  std::string out;
  if (t.has_raw_data()) {
    out = t.raw_data();
  } else {
    auto append = [&out](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
    switch (dtype) {
    case DType::F32: for (float v : t.float_data()) append(&v, 4); break;
    case DType::F64: for (double v : t.double_data()) append(&v, 8); break;
    case DType::I64: for (int64_t v : t.int64_data()) append(&v, 8); break;
    case DType::U64:
    case DType::U32: for (uint64_t v : t.uint64_data()) append(&v, ir::dtypeSize(dtype)); break;
    case DType::I32: for (int32_t v : t.int32_data()) append(&v, 4); break;
    case DType::I16:
    case DType::U16:
    case DType::F16:
    case DType::BF16: for (int32_t v : t.int32_data()) { auto s = static_cast<uint16_t>(v); append(&s, 2); } break;
    case DType::I8:
    case DType::U8:
    case DType::Bool: for (int32_t v : t.int32_data()) { auto s = static_cast<uint8_t>(v); append(&s, 1); } break;
    }
  }
  if (out.size() != expectBytes)
    return badInput(where + ": holds " + std::to_string(out.size()) + " bytes of data, its type needs " +
                    std::to_string(expectBytes));
  return out;
}

/// Reads external data of `tensor` into raw_data. The location must stay inside `baseDir`.
Status loadExternalData(onnx::TensorProto& tensor, const fs::path& baseDir, const std::string& where) {
  std::string location;
  uint64_t offset = 0;
  int64_t length = -1;
  for (const auto& entry : tensor.external_data()) {
    try {
      if (entry.key() == "location") location = entry.value();
      else if (entry.key() == "offset") offset = std::stoull(entry.value());
      else if (entry.key() == "length") length = std::stoll(entry.value());
    } catch (const std::exception&) {
      return badInput(where + ": external data entry '" + entry.key() + "' is not a number: '" + entry.value() + "'");
    }
  }
  if (location.empty()) return badInput(where + ": external data has no location");
  fs::path rel(location);
  if (rel.is_absolute())
    return badInput(where + ": external data location '" + location + "' is absolute; it must be relative to the model's folder");
  std::error_code ec;
  fs::path base = fs::weakly_canonical(baseDir, ec);
  fs::path full = fs::weakly_canonical(base / rel, ec);
  auto [baseEnd, fullIt] = std::mismatch(base.begin(), base.end(), full.begin(), full.end());
  if (ec || baseEnd != base.end())
    return badInput(where + ": external data location '" + location + "' points outside the model's folder");
  // A folder opens as a stream on Linux and reports a size of -1.
  if (!fs::is_regular_file(full, ec))
    return badInput(where + ": external data location '" + location + "' is not a file");
  std::ifstream in(full, std::ios::binary);
  if (!in) return badInput(where + ": external data file '" + full.string() + "' cannot be opened");
  in.seekg(0, std::ios::end);
  const std::streamoff end = in.tellg();
  if (end < 0) return badInput(where + ": cannot read external data from '" + location + "'");
  uint64_t size = static_cast<uint64_t>(end);
  uint64_t want = length >= 0 ? static_cast<uint64_t>(length) : (offset <= size ? size - offset : 0);
  if (offset > size || want > size - offset)
    return badInput(where + ": external data range [" + std::to_string(offset) + ", +" + std::to_string(want) +
                    ") is past the end of '" + location + "' (" + std::to_string(size) + " bytes)");
  std::string data(want, '\0');
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(data.data(), static_cast<std::streamsize>(want));
  if (!in) return badInput(where + ": cannot read external data from '" + location + "'");
  tensor.set_raw_data(std::move(data));
  tensor.clear_external_data();
  tensor.set_data_location(onnx::TensorProto_DataLocation_DEFAULT);
  return Status::ok();
}

Expected<ir::AttrValue> convertAttr(const onnx::AttributeProto& a, const std::string& where) {
  switch (a.type()) {
  case onnx::AttributeProto_AttributeType_INT: return ir::AttrValue(int64_t{a.i()});
  case onnx::AttributeProto_AttributeType_FLOAT: return ir::AttrValue(double{a.f()});
  case onnx::AttributeProto_AttributeType_STRING: return ir::AttrValue(a.s());
  case onnx::AttributeProto_AttributeType_INTS:
    return ir::AttrValue(std::vector<int64_t>(a.ints().begin(), a.ints().end()));
  case onnx::AttributeProto_AttributeType_FLOATS:
    return ir::AttrValue(std::vector<double>(a.floats().begin(), a.floats().end()));
  case onnx::AttributeProto_AttributeType_STRINGS:
    return ir::AttrValue(std::vector<std::string>(a.strings().begin(), a.strings().end()));
  case onnx::AttributeProto_AttributeType_TENSOR: {
    // Only scalar tensors appear on supported ops (ConstantOfShape's `value`).
    const onnx::TensorProto& t = a.t();
    auto dtype = dtypeFromOnnx(t.data_type());
    if (!dtype || (dtype != DType::F32 && dtype != DType::F64 && dtype != DType::I64 && dtype != DType::I32 &&
                   dtype != DType::Bool && dtype != DType::U8))
      break;
    Expected<std::string> bytes = tensorBytes(t, *dtype, ir::dtypeSize(*dtype), where + ": attribute '" + a.name() + "'");
    if (!bytes) return bytes.status();
    double v = 0;
    switch (*dtype) {
    case DType::F32: { float f; std::memcpy(&f, bytes->data(), 4); v = f; break; }
    case DType::F64: std::memcpy(&v, bytes->data(), 8); break;
    case DType::I64: { int64_t i; std::memcpy(&i, bytes->data(), 8); v = static_cast<double>(i); break; }
    case DType::I32: { int32_t i; std::memcpy(&i, bytes->data(), 4); v = i; break; }
    default: v = static_cast<unsigned char>((*bytes)[0]); break;
    }
    return ir::AttrValue(v);
  }
  default: break;
  }
  return badInput(where + ": attribute '" + a.name() + "' has a type tbp does not support (" +
                  onnx::AttributeProto_AttributeType_Name(a.type()) + ")");
}

/// Everything the import needs about one ONNX file.
class Importer {
public:
  Importer(std::string path, const OnnxImportOptions& options, const std::string* bytes = nullptr)
      : path_(std::move(path)), options_(options), bytes_(bytes) {}

  Expected<ir::Graph> run() {
    TBP_RETURN_IF_ERROR(parseModel());
    if (!model_.has_graph()) return fail("not an ONNX model: it has no graph");
    TBP_RETURN_IF_ERROR(checkOpsets());
    onnx::GraphProto& g = *model_.mutable_graph();
    if (g.node_size() == 0) return fail("the graph has no nodes");
    TBP_RETURN_IF_ERROR(checkOps());
    TBP_RETURN_IF_ERROR(checkStructure());
    TBP_RETURN_IF_ERROR(checkAttributes());
    TBP_RETURN_IF_ERROR(loadAllExternalData());
    TBP_RETURN_IF_ERROR(bindDims());
    TBP_RETURN_IF_ERROR(inferShapes());
    elideInertDropouts(*model_.mutable_graph());
    elideIdentities();
    if (options_.fuse) {
      fuseGelu(*model_.mutable_graph());
      fuseSilu(*model_.mutable_graph());
      fuseGroupNorm(*model_.mutable_graph());
    }
    return buildGraph();
  }

private:
  Status fail(const std::string& message) const { return badInput(path_ + ": " + message); }

  /// Parses straight from the file, so a large model is never held twice in memory; only a
  /// failed parse reads the bytes again to explain where the file goes wrong.
  Status parseModel() {
    if (bytes_) {
      google::protobuf::io::CodedInputStream coded(reinterpret_cast<const uint8_t*>(bytes_->data()), static_cast<int>(bytes_->size()));
      coded.SetTotalBytesLimit(INT32_MAX);
      if (model_.ParseFromCodedStream(&coded) && coded.ConsumedEntireMessage()) return Status::ok();
      return fail(explainParseFailure(*bytes_));
    }
    std::error_code ec;
    if (!fs::exists(path_, ec)) return fail("no such file");
    if (fs::is_directory(path_, ec)) return fail("is a directory, expected a file");
    if (fs::file_size(path_, ec) == 0) return fail("the file is empty, expected a binary ONNX model");
    std::ifstream in(path_, std::ios::binary);
    if (!in) return fail("cannot open the file");
    google::protobuf::io::IstreamInputStream raw(&in);
    google::protobuf::io::CodedInputStream coded(&raw);
    coded.SetTotalBytesLimit(INT32_MAX);
    if (model_.ParseFromCodedStream(&coded) && coded.ConsumedEntireMessage()) return Status::ok();
    Expected<std::string> bytes = readFile(path_);
    if (!bytes) return bytes.status();
    return fail(explainParseFailure(*bytes));
  }

  Status checkOpsets() {
    int opset = -1;
    for (const auto& o : model_.opset_import())
      if (isDefaultDomain(o.domain())) opset = static_cast<int>(o.version());
    if (opset < 0) {
      if (model_.opset_import_size() == 0) return fail("the model declares no opset_import");
      opset = 0; // only custom domains: the op check below reports the custom ops
    }
    if (opset != 0 && (opset < kMinOnnxOpset || opset > kMaxOnnxOpset))
      return fail("ai.onnx opset " + std::to_string(opset) + " is out of range: tbp supports opsets " +
                  std::to_string(kMinOnnxOpset) + " to " + std::to_string(kMaxOnnxOpset) +
                  " (convert the model with onnx.version_converter)");
    opset_ = opset;
    return Status::ok();
  }

  Status checkOps() {
    std::map<std::string, std::pair<int, std::string>> unsupported;  // type -> (count, first node)
    const auto& table = onnxOpTable();
    const auto& g = model_.graph();
    for (int i = 0; i < g.node_size(); ++i) {
      const onnx::NodeProto& n = g.node(i);
      bool ok = isDefaultDomain(n.domain()) && (n.op_type() == "Constant" || table.count(n.op_type()));
      if (ok) continue;
      std::string key = isDefaultDomain(n.domain()) ? n.op_type() : n.domain() + "." + n.op_type();
      auto& entry = unsupported[key];
      if (entry.first++ == 0) entry.second = describe(n, i);
    }
    if (unsupported.empty()) return Status::ok();
    int total = 0;
    std::string list;
    for (const auto& [type, entry] : unsupported) {
      total += entry.first;
      list += "\n  " + type + " x" + std::to_string(entry.first) + " (first: " + entry.second + ")";
    }
    return fail(std::to_string(total) + " node" + (total == 1 ? "" : "s") + " use " +
                std::to_string(unsupported.size()) + " op type" + (unsupported.size() == 1 ? "" : "s") +
                " that tbp does not support:" + list);
  }

  /// Undefined inputs and cycles, found before shape inference so the message is precise.
  Status checkStructure() {
    const auto& g = model_.graph();
    std::unordered_map<std::string, int> producer;
    std::unordered_set<std::string> external;
    for (const auto& in : g.input()) external.insert(in.name());
    for (const auto& init : g.initializer()) external.insert(init.name());
    for (int i = 0; i < g.node_size(); ++i)
      for (const auto& out : g.node(i).output()) {
        if (out.empty()) continue;
        if (external.count(out)) return fail(describe(g.node(i), i) + ": output '" + out + "' redefines a graph input or initializer");
        if (!producer.emplace(out, i).second)
          return fail(describe(g.node(i), i) + ": output '" + out + "' is already produced by " +
                      describe(g.node(producer[out]), producer[out]));
      }
    std::vector<int> pending(static_cast<size_t>(g.node_size()), 0);
    std::vector<std::vector<int>> users(static_cast<size_t>(g.node_size()));
    for (int i = 0; i < g.node_size(); ++i) {
      const auto& n = g.node(i);
      for (int k = 0; k < n.input_size(); ++k) {
        const std::string& in = n.input(k);
        if (in.empty() || external.count(in)) continue;
        auto it = producer.find(in);
        if (it == producer.end())
          return fail(describe(n, i) + ": input " + std::to_string(k) + " '" + in +
                      "' is not defined by any node, graph input or initializer");
        ++pending[static_cast<size_t>(i)];
        users[static_cast<size_t>(it->second)].push_back(i);
      }
    }
    std::vector<int> ready;
    for (int i = 0; i < g.node_size(); ++i)
      if (pending[static_cast<size_t>(i)] == 0) ready.push_back(i);
    int done = 0;
    while (!ready.empty()) {
      int i = ready.back();
      ready.pop_back();
      ++done;
      for (int u : users[static_cast<size_t>(i)])
        if (--pending[static_cast<size_t>(u)] == 0) ready.push_back(u);
    }
    if (done != g.node_size()) {
      for (int i = 0; i < g.node_size(); ++i)
        if (pending[static_cast<size_t>(i)] != 0)
          return fail("the graph has a cycle through " + describe(g.node(i), i));
    }
    for (const auto& out : g.output())
      if (!external.count(out.name()) && !producer.count(out.name()))
        return fail("graph output '" + out.name() + "' is not produced by any node");
    return Status::ok();
  }

  /// Values that ONNX's own shape inference divides by or loops over unchecked, refused before
  /// it runs: a stride, dilation or kernel size of 0 is a SIGFPE inside libonnx's Conv/Pool
  /// inference, and a Slice step beyond 2^31 overflows its data propagation's loop (a crash or
  /// an endless loop). ONNX requires the first positive and the second non-zero anyway.
  Status checkAttributes() {
    const auto& g = model_.graph();
    std::unordered_map<std::string, const onnx::TensorProto*> constants;
    // Ranks of the graph inputs with a shape and of the initializers (which win).
    std::unordered_map<std::string, int> ranks;
    for (const auto& in : g.input())
      if (in.type().has_tensor_type() && in.type().tensor_type().has_shape()) ranks[in.name()] = in.type().tensor_type().shape().dim_size();
    for (const auto& init : g.initializer()) {
      constants[init.name()] = &init;
      ranks[init.name()] = init.dims_size();
    }
    auto knownRank = [&ranks](const std::string& name) {
      auto it = ranks.find(name);
      return it == ranks.end() ? -1 : it->second;
    };
    for (const auto& n : g.node())
      if (isDefaultDomain(n.domain()) && n.op_type() == "Constant" && n.output_size() == 1)
        for (const auto& a : n.attribute())
          if (a.name() == "value") constants[n.output(0)] = &a.t();
    static const std::unordered_set<std::string> kWindowed = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool",
                                                              "AveragePool", "LpPool", "MaxUnpool", "MaxRoiPool"};
    // A step this large takes one element of any dimension (2^30 elements and more are not
    // sliced in practice); ONNX's data propagation is safe below 2^31 minus the rank.
    constexpr int64_t kMaxSliceStep = int64_t{1} << 30;
    for (int i = 0; i < g.node_size(); ++i) {
      const auto& n = g.node(i);
      if (!isDefaultDomain(n.domain())) continue;
      // The op's schema at the model's opset: input and output counts, attribute names and
      // types, required attributes (shape inference assumes them and skips a node that breaks them).
      if (const onnx::OpSchema* schema = onnx::OpSchemaRegistry::Schema(n.op_type(), opset_, "")) {
        try {
          schema->Verify(n);
        } catch (const std::exception& e) {
          std::string what = e.what();
          // ONNX appends "==> Context: Bad node spec for node. Name: ..."; the node is named here.
          if (size_t ctx = what.find("==> Context"); ctx != std::string::npos) what.erase(ctx);
          while (!what.empty() && std::isspace(static_cast<unsigned char>(what.back()))) what.pop_back();
          std::replace(what.begin(), what.end(), '\n', ' ');
          return fail(describe(n, i) + ": " + what);
        }
      }
      if (kWindowed.count(n.op_type())) {
        for (const auto& a : n.attribute()) {
          const bool positive = a.name() == "strides" || a.name() == "dilations" || a.name() == "kernel_shape";
          const bool nonNegative = a.name() == "pads" || a.name() == "output_padding";
          for (int64_t v : a.ints())
            if ((positive && v < 1) || (nonNegative && v < 0))
              return fail(describe(n, i) + ": attribute '" + a.name() + "' holds " + std::to_string(v) + "; it must be " +
                          (positive ? "at least 1" : "non-negative"));
          if (a.name() == "group" && a.i() < 1)
            return fail(describe(n, i) + ": attribute 'group' is " + std::to_string(a.i()) + "; it must be at least 1");
          if (a.name() == "output_shape")
            for (int64_t v : a.ints())
              if (v < 1) return fail(describe(n, i) + ": attribute 'output_shape' holds " + std::to_string(v) + "; it must be at least 1");
        }
      }
      // libonnx's Conv inference reads the input's dims by the weight's rank (a SIGSEGV when
      // the weight has more); known here when both are graph inputs or initializers. An
      // intermediate input's rank is only known after inference (ir::verify checks it then,
      // but the crash comes first: noted in docs/onnx-support.md).
      if ((n.op_type() == "Conv" || n.op_type() == "ConvTranspose") && n.input_size() >= 2) {
        const int x = knownRank(n.input(0)), w = knownRank(n.input(1));
        if (x >= 0 && w >= 0 && (x != w || x < 3))
          return fail(describe(n, i) + ": input '" + n.input(0) + "' has rank " + std::to_string(x) + " and weight '" + n.input(1) +
                      "' rank " + std::to_string(w) + "; they must be equal and at least 3");
      }
      // A negative epsilon makes the normalizations' rsqrt NaN wherever the variance is small.
      if (n.op_type() == "BatchNormalization" || n.op_type() == "InstanceNormalization" || n.op_type() == "LayerNormalization")
        for (const auto& a : n.attribute())
          if (a.name() == "epsilon" && !(a.f() >= 0))
            return fail(describe(n, i) + ": attribute 'epsilon' is " + std::to_string(a.f()) + "; it must be non-negative");
      // Dropout's ratio is a probability of dropping (opsets 7-11: the attribute; 12+: input 1).
      if (n.op_type() == "Dropout") {
        std::optional<double> ratio;
        for (const auto& a : n.attribute())
          if (a.name() == "ratio") ratio = a.f();
        if (n.input_size() >= 2 && !n.input(1).empty())
          if (auto it = constants.find(n.input(1)); it != constants.end() && it->second->dims_size() == 0) {
            const onnx::TensorProto& t = *it->second;
            Expected<std::string> bytes = tensorBytes(t, DType::F32, 4, "");
            if (t.data_type() == onnx::TensorProto::FLOAT && bytes) {
              float f;
              std::memcpy(&f, bytes->data(), 4);
              ratio = f;
            }
          }
        if (ratio && !(*ratio >= 0 && *ratio < 1))
          return fail(describe(n, i) + ": ratio " + std::to_string(*ratio) + " is outside [0, 1)");
      }
      if (n.op_type() == "Slice" && n.input_size() >= 5 && !n.input(4).empty()) {
        auto it = constants.find(n.input(4));
        std::optional<std::vector<int64_t>> steps;
        if (it != constants.end()) steps = integerValues(*it->second);
        for (int64_t v : steps.value_or(std::vector<int64_t>{}))
          if (v == 0 || v > kMaxSliceStep || v < -kMaxSliceStep)
            return fail(describe(n, i) + ": step " + std::to_string(v) + (v == 0 ? " is 0" : " is beyond ±2^30, which tbp does not accept"));
      }
    }
    return Status::ok();
  }

  Status loadAllExternalData() {
    fs::path base = fs::path(path_).parent_path();
    if (base.empty()) base = ".";
    auto& g = *model_.mutable_graph();
    for (auto& init : *g.mutable_initializer())
      if (init.data_location() == onnx::TensorProto_DataLocation_EXTERNAL)
        TBP_RETURN_IF_ERROR(loadExternalData(init, base, path_ + ": initializer '" + init.name() + "'"));
    for (int i = 0; i < g.node_size(); ++i)
      for (auto& attr : *g.mutable_node(i)->mutable_attribute())
        if (attr.has_t() && attr.t().data_location() == onnx::TensorProto_DataLocation_EXTERNAL)
          TBP_RETURN_IF_ERROR(loadExternalData(*attr.mutable_t(), base, path_ + ": " + describe(g.node(i), i)));
    return Status::ok();
  }

  Status bindDims() {
    auto& g = *model_.mutable_graph();
    std::unordered_set<std::string> initNames;
    for (const auto& init : g.initializer()) initNames.insert(init.name());
    std::set<std::string> seen;
    for (auto& in : *g.mutable_input()) {
      if (initNames.count(in.name())) continue;
      if (!in.type().has_tensor_type())
        return fail("graph input '" + in.name() + "' is not a tensor");
      auto& tt = *in.mutable_type()->mutable_tensor_type();
      if (!tt.has_shape()) return fail("graph input '" + in.name() + "' has no shape; give the model a static input shape");
      for (int d = 0; d < tt.shape().dim_size(); ++d) {
        auto& dim = *tt.mutable_shape()->mutable_dim(d);
        std::string where = "graph input '" + in.name() + "' dimension " + std::to_string(d);
        if (dim.has_dim_param()) {
          seen.insert(dim.dim_param());
          auto it = options_.dims.find(dim.dim_param());
          if (it == options_.dims.end())
            return fail(where + " is the symbolic '" + dim.dim_param() + "', which is unbound: pass --dim " +
                        dim.dim_param() + "=N");
          if (it->second < 0)
            return fail(where + ": --dim " + dim.dim_param() + "=" + std::to_string(it->second) + " is negative");
          dim.set_dim_value(it->second);
        } else if (!dim.has_dim_value()) {
          return fail(where + " has no size and no name; the input shape must be static");
        } else if (dim.dim_value() < 0) {
          return fail(where + " has negative size " + std::to_string(dim.dim_value()));
        }
      }
    }
    for (const auto& [name, value] : options_.dims)
      if (!seen.count(name)) {
        std::string known;
        for (const auto& s : seen) known += (known.empty() ? "" : ", ") + s;
        return Status(ErrorCode::Usage, path_ + ": --dim " + name + ": the model's inputs have no symbolic dimension '" +
                                            name + "'" + (known.empty() ? " (they have none)" : " (they have: " + known + ")"));
      }
    // Outputs and recorded value_info may carry the same symbols: substitute or forget them so
    // that shape inference recomputes every intermediate shape from the bound inputs.
    g.clear_value_info();
    for (auto& out : *g.mutable_output()) {
      if (!out.type().has_tensor_type() || !out.type().tensor_type().has_shape()) continue;
      for (auto& dim : *out.mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim()) {
        if (!dim.has_dim_param()) continue;
        auto it = options_.dims.find(dim.dim_param());
        if (it != options_.dims.end()) dim.set_dim_value(it->second);
        else dim.clear_dim_param();
      }
    }
    return Status::ok();
  }

  /// Runs ONNX shape inference, folding integer shape computations between passes until
  /// nothing more folds, completes the shapes ONNX cannot infer, then runs a final strict
  /// pass whose errors are reported.
  Status inferShapes() {
    auto& g = *model_.mutable_graph();
    try {
      g.clear_value_info();
      onnx::ShapeInferenceOptions lenient(/*check_type=*/false, /*error_mode=*/0, /*data_prop=*/true);
      for (int pass = 0; pass < 64; ++pass) {
        onnx::shape_inference::InferShapes(model_, onnx::OpSchemaRegistry::Instance(), lenient);
        int folded = foldIntegerConstants(g);
        int completed = completeMissingShapes(g);
        if (folded == 0 && completed == 0) break;
      }
      onnx::ShapeInferenceOptions strict(/*check_type=*/true, /*error_mode=*/1, /*data_prop=*/true);
      onnx::shape_inference::InferShapes(model_, onnx::OpSchemaRegistry::Instance(), strict);
    } catch (const FoldError& e) {
      return fail(e.what());
    } catch (const std::exception& e) {
      std::string what = e.what();
      std::replace(what.begin(), what.end(), '\n', ' ');
      while (!what.empty() && what.back() == ' ') what.pop_back();
      return fail("ONNX shape inference failed: " + what + failedNodeInputs(what) + boundDimsHint());
    }
    return Status::ok();
  }

  /// After a failed strict pass: the shapes the lenient passes inferred for the inputs of the
  /// first node the error names, so that "Incompatible dimensions" shows which sizes disagree.
  std::string failedNodeInputs(const std::string& what) const {
    constexpr std::string_view kKey = "node name: ";
    const size_t at = what.find(kKey);
    if (at == std::string::npos) return "";
    const size_t begin = at + kKey.size(), end = what.find(')', begin);
    if (end == std::string::npos) return "";
    const std::string name = what.substr(begin, end - begin);
    const auto& g = model_.graph();
    const auto node = std::find_if(g.node().begin(), g.node().end(), [&](const auto& n) { return n.name() == name; });
    if (name.empty() || node == g.node().end()) return "";
    std::unordered_map<std::string, std::string> shapes;
    auto noteType = [&](const onnx::ValueInfoProto& v) {
      if (!v.type().has_tensor_type() || !v.type().tensor_type().has_shape()) return;
      std::string s = "[";
      for (const auto& d : v.type().tensor_type().shape().dim())
        s += (s.size() > 1 ? "," : "") + (d.has_dim_value() ? std::to_string(d.dim_value()) : d.has_dim_param() ? d.dim_param() : "?");
      shapes[v.name()] = s + "]";
    };
    for (const auto& v : g.input()) noteType(v);
    for (const auto& v : g.value_info()) noteType(v);
    for (const auto& v : g.output()) noteType(v);
    for (const auto& init : g.initializer()) shapes[init.name()] = ir::formatShape(ir::Shape(init.dims().begin(), init.dims().end()));
    std::string text;
    for (const std::string& in : node->input()) {
      if (in.empty()) continue;
      auto it = shapes.find(in);
      text += (text.empty() ? "" : ", ") + ("'" + in + "' ") + (it == shapes.end() ? std::string("(shape unknown)") : it->second);
    }
    return text.empty() ? "" : "; the inputs of '" + name + "' as inferred: " + text;
  }

  /// The sizes bound with --dim, named when shape inference fails: a model can fix a size
  /// inside (a causal mask or position table exported for one sequence length).
  std::string boundDimsHint() const {
    if (options_.dims.empty()) return "";
    std::string bound;
    for (const auto& [name, value] : options_.dims) bound += " --dim " + name + "=" + std::to_string(value);
    return "; with" + bound + ": a model can fix a size inside (e.g. a mask or position table built for one "
           "length), so try the sizes it was exported with";
  }

  /// Removes Identity nodes (eval exports read shared initializers through them): consumers
  /// read the Identity's input directly, so the copy is neither a node nor an activation.
  /// Identities that produce a graph output stay.
  void elideIdentities() {
    auto& g = *model_.mutable_graph();
    std::unordered_set<std::string> graphOutputs;
    for (const auto& o : g.output()) graphOutputs.insert(o.name());
    std::unordered_map<std::string, std::string> alias;
    google::protobuf::RepeatedPtrField<onnx::NodeProto> kept;
    for (auto& n : *g.mutable_node()) {
      for (auto& in : *n.mutable_input()) {
        auto it = alias.find(in);
        if (it != alias.end()) in = it->second;
      }
      bool elide = isDefaultDomain(n.domain()) && n.op_type() == "Identity" && n.input_size() == 1 &&
                   n.output_size() == 1 && !graphOutputs.count(n.output(0));
      if (elide) alias[n.output(0)] = n.input(0);
      else *kept.Add() = std::move(n);
    }
    g.mutable_node()->Swap(&kept);
  }

  /// Type of value `name` after inference, or an error naming it and its producer.
  Expected<ir::TensorType> typeOf(const std::string& name, const std::string& role) {
    auto it = types_.find(name);
    if (it == types_.end() || !it->second->has_tensor_type())
      return fail(role + " '" + name + "' has no type after shape inference");
    const auto& tt = it->second->tensor_type();
    auto dtype = dtypeFromOnnx(tt.elem_type());
    if (!dtype) return fail(role + " '" + name + "' has element type " + onnxDTypeName(tt.elem_type()) + ", which tbp does not support");
    if (!tt.has_shape()) return fail(role + " '" + name + "' has no inferred shape");
    ir::TensorType type{*dtype, {}};
    for (int d = 0; d < tt.shape().dim_size(); ++d) {
      const auto& dim = tt.shape().dim(d);
      if (!dim.has_dim_value())
        return fail(role + " '" + name + "' dimension " + std::to_string(d) +
                    (dim.has_dim_param() ? " is the symbolic '" + dim.dim_param() + "'" : " is unknown") +
                    " after shape inference; bind the model's symbolic dimensions with --dim");
      if (dim.dim_value() < 0)
        return fail(role + " '" + name + "' dimension " + std::to_string(d) + " has negative size " + std::to_string(dim.dim_value()));
      type.shape.push_back(dim.dim_value());
    }
    return type;
  }

  Status addValueChecked(ir::Graph& graph, const std::string& name, ir::ValueKind kind, ir::TensorType type,
                         ir::TensorData data = nullptr) {
    Expected<ir::ValueId> id = graph.addValue(name, kind, std::move(type), std::move(data));
    if (!id) return fail(id.status().message());
    return Status::ok();
  }

  /// Adds an initializer or Constant tensor as a value; parameter/constant is decided later.
  Status addTensor(ir::Graph& graph, onnx::TensorProto& t, const std::string& name, const std::string& where) {
    auto dtype = dtypeFromOnnx(t.data_type());
    if (!dtype) return fail(where + " has element type " + onnxDTypeName(t.data_type()) + ", which tbp does not support");
    ir::TensorType type{*dtype, ir::Shape(t.dims().begin(), t.dims().end())};
    Expected<uint64_t> bytes = ir::checkedByteSize(type, where);
    if (!bytes) return fail(bytes.status().message());
    uint64_t stored = storedBytes(t, *dtype);
    if (stored != *bytes)
      return fail(where + ": holds " + std::to_string(stored) + " bytes of data, its type " + type.str() + " needs " +
                  std::to_string(*bytes));
    ir::TensorData data;
    if (options_.loadData) {
      Expected<std::string> raw = tensorBytes(t, *dtype, *bytes, where);
      if (!raw) return fail(raw.status().message());
      t.clear_raw_data();
      data = std::make_shared<const std::string>(std::move(*raw));
    }
    bool isFloatParam = ir::isFloat(*dtype);
    return addValueChecked(graph, name, isFloatParam ? ir::ValueKind::Parameter : ir::ValueKind::Constant,
                           std::move(type), std::move(data));
  }

  Expected<ir::Graph> buildGraph() {
    auto& g = *model_.mutable_graph();
    ir::Graph graph(g.name().empty() ? fs::path(path_).stem().string() : g.name());
    for (const auto& vi : g.input()) types_[vi.name()] = &vi.type();
    for (const auto& vi : g.value_info()) types_[vi.name()] = &vi.type();
    for (const auto& vi : g.output()) types_[vi.name()] = &vi.type();

    std::unordered_set<std::string> initNames;
    for (const auto& init : g.initializer()) initNames.insert(init.name());
    for (const auto& in : g.input()) {
      if (initNames.count(in.name())) continue;
      Expected<ir::TensorType> type = typeOf(in.name(), "graph input");
      if (!type) return type.status();
      TBP_RETURN_IF_ERROR(addValueChecked(graph, in.name(), ir::ValueKind::Input, *type));
    }
    for (auto& init : *g.mutable_initializer())
      TBP_RETURN_IF_ERROR(addTensor(graph, init, init.name(), "initializer '" + init.name() + "'"));

    const auto& table = onnxOpTable();
    struct PendingNode {
      int index;
      Op op;
    };
    std::vector<PendingNode> pending;
    for (int i = 0; i < g.node_size(); ++i) {
      onnx::NodeProto& n = *g.mutable_node(i);
      std::string where = describe(n, i);
      if (n.op_type() == "Constant") {
        TBP_RETURN_IF_ERROR(addConstantNode(graph, n, where));
        continue;
      }
      for (int k = 0; k < n.output_size(); ++k) {
        if (n.output(k).empty()) continue;
        Expected<ir::TensorType> type = typeOf(n.output(k), where + ": output " + std::to_string(k));
        if (!type) return type.status();
        TBP_RETURN_IF_ERROR(addValueChecked(graph, n.output(k), ir::ValueKind::Activation, *type));
      }
      // Fused nodes carry the tbp op's own name (Fusion.h).
      pending.push_back({i, n.domain() == kFusedDomain ? *ir::opFromName(n.op_type()) : table.at(n.op_type())});
    }
    for (const PendingNode& p : pending) {
      const onnx::NodeProto& n = g.node(p.index);
      std::string where = describe(n, p.index);
      std::vector<ir::ValueId> inputs, outputs;
      for (const auto& in : n.input()) inputs.push_back(in.empty() ? ir::kNone : *graph.findValue(in));
      // Drop trailing absent optional inputs so arity reads naturally.
      while (!inputs.empty() && inputs.back() == ir::kNone) inputs.pop_back();
      for (const auto& out : n.output())
        if (!out.empty()) outputs.push_back(*graph.findValue(out));
      ir::Attributes attrs;
      for (const auto& a : n.attribute()) {
        Expected<ir::AttrValue> v = convertAttr(a, path_ + ": " + where);
        if (!v) return v.status();
        attrs[a.name()] = *v;
      }
      graph.addNode(n.name(), p.op, std::move(inputs), std::move(outputs), std::move(attrs));
    }
    for (const auto& out : g.output()) graph.addOutput(*graph.findValue(out.name()));
    classifyInitializers(graph);
    TBP_RETURN_IF_ERROR(applyFreeze(graph));
    TBP_RETURN_IF_ERROR(ir::verify(graph, path_));
    return graph;
  }

  Status addConstantNode(ir::Graph& graph, onnx::NodeProto& n, const std::string& where) {
    if (n.output_size() != 1 || n.attribute_size() != 1) return fail(where + ": expected one output and one attribute");
    onnx::AttributeProto& a = *n.mutable_attribute(0);
    onnx::TensorProto t;
    if (a.name() == "value") t = std::move(*a.mutable_t());
    else if (a.name() == "value_float") { t.set_data_type(onnx::TensorProto_DataType_FLOAT); t.add_float_data(a.f()); }
    else if (a.name() == "value_floats") { t.set_data_type(onnx::TensorProto_DataType_FLOAT); t.add_dims(a.floats_size()); for (float f : a.floats()) t.add_float_data(f); }
    else if (a.name() == "value_int") { t.set_data_type(onnx::TensorProto_DataType_INT64); t.add_int64_data(a.i()); }
    else if (a.name() == "value_ints") { t.set_data_type(onnx::TensorProto_DataType_INT64); t.add_dims(a.ints_size()); for (int64_t v : a.ints()) t.add_int64_data(v); }
    else return fail(where + ": Constant attribute '" + a.name() + "' is not supported");
    TBP_RETURN_IF_ERROR(addTensor(graph, t, n.output(0), where + ": constant '" + n.output(0) + "'"));
    graph.setKind(*graph.findValue(n.output(0)), ir::ValueKind::Constant);
    return Status::ok();
  }

  /// Float initializers are parameters unless every use is an input that takes no gradient
  /// (BatchNorm running statistics, shapes, scales).
  void classifyInitializers(ir::Graph& graph) {
    for (const auto& init : model_.graph().initializer()) {
      ir::ValueId id = *graph.findValue(init.name());
      const ir::Value& v = graph.value(id);
      if (v.kind != ir::ValueKind::Parameter) continue;
      bool anyGradUse = false;
      for (ir::NodeId user : v.users) {
        const ir::Node& node = graph.node(user);
        for (size_t k = 0; k < node.inputs.size(); ++k)
          if (node.inputs[k] == id && ir::inputTakesGradient(node, k)) anyGradUse = true;
      }
      if (!anyGradUse) graph.setKind(id, ir::ValueKind::Constant);
    }
  }

  Status applyFreeze(ir::Graph& graph) {
    for (const std::string& name : options_.freeze) {
      auto id = graph.findValue(name);
      if (!id || (graph.value(*id).kind != ir::ValueKind::Parameter && graph.value(*id).kind != ir::ValueKind::Constant))
        return Status(ErrorCode::Usage, path_ + ": --freeze " + name + ": the model has no initializer of that name");
      graph.setKind(*id, ir::ValueKind::Constant);
    }
    return Status::ok();
  }

  std::string path_;
  const OnnxImportOptions& options_;
  const std::string* bytes_ = nullptr;
  onnx::ModelProto model_;
  int opset_ = 0; ///< the ai.onnx opset the model imports (0: none)
  std::unordered_map<std::string, const onnx::TypeProto*> types_;
};

} // namespace

Expected<ir::Graph> importOnnxFile(const std::string& path, const OnnxImportOptions& options) {
  try {
    return Importer(path, options).run();
  } catch (const std::exception& e) {
    return badInput(path + ": cannot import: " + e.what());
  }
}

Expected<ir::Graph> importOnnxBytes(const std::string& bytes, const std::string& name, const OnnxImportOptions& options) {
  if (bytes.size() > static_cast<size_t>(INT32_MAX)) return badInput(name + ": the model is larger than 2 GiB");
  try {
    return Importer(name, options, &bytes).run();
  } catch (const std::exception& e) {
    return badInput(name + ": cannot import: " + e.what());
  }
}

Expected<NpyArray> readTensorProtoFile(const std::string& path) {
  Expected<std::string> bytes = readFile(path);
  if (!bytes) return bytes.status();
  onnx::TensorProto t;
  if (!t.ParseFromString(*bytes)) return badInput(path + ": not a serialized ONNX TensorProto");
  auto dtype = dtypeFromOnnx(t.data_type());
  if (!dtype) return badInput(path + ": element type " + onnxDTypeName(t.data_type()) + " is not supported");
  static const std::map<DType, std::string> kDescr = {
      {DType::F32, "<f4"}, {DType::F64, "<f8"}, {DType::F16, "<f2"}, {DType::I8, "|i1"}, {DType::I16, "<i2"},
      {DType::I32, "<i4"}, {DType::I64, "<i8"}, {DType::U8, "|u1"}, {DType::U16, "<u2"}, {DType::U32, "<u4"},
      {DType::U64, "<u8"}, {DType::Bool, "|b1"}, {DType::BF16, "<V2"}};
  ir::TensorType type{*dtype, ir::Shape(t.dims().begin(), t.dims().end())};
  Expected<uint64_t> size = ir::checkedByteSize(type, path);
  if (!size) return size.status();
  Expected<std::string> data = tensorBytes(t, *dtype, *size, path);
  if (!data) return data.status();
  return NpyArray{kDescr.at(*dtype), type.shape, std::move(*data)};
}

std::vector<std::string> supportedOnnxOps() {
  std::vector<std::string> names;
  for (const OnnxOp& e : kOnnxOps) names.emplace_back(e.onnxName);
  names.emplace_back("Constant");
  std::sort(names.begin(), names.end());
  return names;
}

} // namespace tbp::frontend
