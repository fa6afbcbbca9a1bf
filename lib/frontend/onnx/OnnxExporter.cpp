#include "tbp/frontend/onnx/OnnxExporter.h"

#include "tbp/frontend/onnx/OnnxImporter.h"
#include "tbp/ir/OpRules.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <set>

namespace tbp::frontend {

namespace {

int onnxElemType(ir::DType d) {
  switch (d) {
  case ir::DType::F32: return onnx::TensorProto_DataType_FLOAT;
  case ir::DType::F64: return onnx::TensorProto_DataType_DOUBLE;
  case ir::DType::F16: return onnx::TensorProto_DataType_FLOAT16;
  case ir::DType::BF16: return onnx::TensorProto_DataType_BFLOAT16;
  case ir::DType::I8: return onnx::TensorProto_DataType_INT8;
  case ir::DType::I16: return onnx::TensorProto_DataType_INT16;
  case ir::DType::I32: return onnx::TensorProto_DataType_INT32;
  case ir::DType::I64: return onnx::TensorProto_DataType_INT64;
  case ir::DType::U8: return onnx::TensorProto_DataType_UINT8;
  case ir::DType::U16: return onnx::TensorProto_DataType_UINT16;
  case ir::DType::U32: return onnx::TensorProto_DataType_UINT32;
  case ir::DType::U64: return onnx::TensorProto_DataType_UINT64;
  case ir::DType::Bool: return onnx::TensorProto_DataType_BOOL;
  }
  return onnx::TensorProto_DataType_UNDEFINED;
}

void setValueInfo(onnx::ValueInfoProto& vi, const ir::Value& v) {
  vi.set_name(v.name);
  onnx::TypeProto_Tensor* t = vi.mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnxElemType(v.type.dtype));
  onnx::TensorShapeProto* shape = t->mutable_shape();
  for (int64_t d : v.type.shape) shape->add_dim()->set_dim_value(d);
}

void setTensor(onnx::TensorProto& t, const ir::Value& v) {
  t.set_name(v.name);
  t.set_data_type(onnxElemType(v.type.dtype));
  for (int64_t d : v.type.shape) t.add_dims(d);
  t.set_raw_data(*v.data);
}

void setAttribute(onnx::AttributeProto& a, const std::string& name, const ir::AttrValue& value) {
  a.set_name(name);
  if (const auto* i = std::get_if<int64_t>(&value)) {
    a.set_type(onnx::AttributeProto_AttributeType_INT);
    a.set_i(*i);
  } else if (const auto* f = std::get_if<double>(&value)) {
    a.set_type(onnx::AttributeProto_AttributeType_FLOAT);
    a.set_f(static_cast<float>(*f));
  } else if (const auto* s = std::get_if<std::string>(&value)) {
    a.set_type(onnx::AttributeProto_AttributeType_STRING);
    a.set_s(*s);
  } else if (const auto* is = std::get_if<std::vector<int64_t>>(&value)) {
    a.set_type(onnx::AttributeProto_AttributeType_INTS);
    for (int64_t x : *is) a.add_ints(x);
  } else if (const auto* fs = std::get_if<std::vector<double>>(&value)) {
    a.set_type(onnx::AttributeProto_AttributeType_FLOATS);
    for (double x : *fs) a.add_floats(static_cast<float>(x));
  } else if (const auto* ss = std::get_if<std::vector<std::string>>(&value)) {
    a.set_type(onnx::AttributeProto_AttributeType_STRINGS);
    for (const std::string& x : *ss) a.add_strings(x);
  }
}

/// True when some use of `id` takes a gradient: a float initializer there would be read back
/// as a trainable parameter.
bool readByGradientInput(const ir::Graph& g, ir::ValueId id) {
  for (ir::NodeId user : g.value(id).users) {
    const ir::Node& n = g.node(user);
    for (size_t k = 0; k < n.inputs.size(); ++k)
      if (n.inputs[k] == id && ir::inputTakesGradient(n, k)) return true;
  }
  return false;
}

/// A Silu node as Sigmoid then Mul. The Sigmoid is named so that the importer's fused node
/// gets `n`'s name back: `/a/Silu` from `/a/Sigmoid`, `x_silu` from `x`, none from none.
void exportSilu(onnx::GraphProto& graph, const ir::Graph& g, const ir::Node& n, bool isOutput) {
  const ir::Value& x = g.value(n.inputs[0]);
  const ir::Value& y = g.value(n.outputs[0]);
  auto endsWith = [&](const std::string& s) { return n.name.size() > s.size() && n.name.compare(n.name.size() - s.size(), s.size(), s) == 0; };
  std::string sigmoidName = n.name.empty() ? std::string() : n.name + "_sigmoid";
  if (endsWith("/Silu")) sigmoidName = n.name.substr(0, n.name.size() - 4) + "Sigmoid";
  else if (endsWith("_silu")) sigmoidName = n.name.substr(0, n.name.size() - 5);
  onnx::NodeProto* sigmoid = graph.add_node();
  sigmoid->set_op_type("Sigmoid");
  sigmoid->set_name(sigmoidName);
  sigmoid->add_input(x.name);
  sigmoid->add_output(y.name + "_sigmoid");
  onnx::ValueInfoProto& vi = *graph.add_value_info();
  setValueInfo(vi, x);
  vi.set_name(y.name + "_sigmoid");
  onnx::NodeProto* mul = graph.add_node();
  mul->set_op_type("Mul");
  mul->set_name(n.name);
  mul->add_input(x.name);
  mul->add_input(y.name + "_sigmoid");
  mul->add_output(y.name);
  if (!isOutput) setValueInfo(*graph.add_value_info(), y);
}

} // namespace

Expected<std::string> exportOnnx(const ir::Graph& g, const std::string& source) {
  const std::vector<std::string> supported = supportedOnnxOps();
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("tbp");
  model.set_producer_version(TBP_VERSION);
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kExportOpset);
  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name(g.name());

  std::vector<bool> asConstantNode(g.numValues(), false);
  for (ir::ValueId id = 0; id < g.numValues(); ++id) {
    const ir::Value& v = g.value(id);
    switch (v.kind) {
    case ir::ValueKind::Input: setValueInfo(*graph->add_input(), v); break;
    case ir::ValueKind::Parameter:
    case ir::ValueKind::Constant:
      if (!v.data || v.data->size() != v.bytes)
        return badInput(source + ": " + std::string(ir::valueKindName(v.kind)) + " '" + v.name +
                        "' has no data; only graphs with all weights can be exported");
      if (v.kind == ir::ValueKind::Constant && ir::isFloat(v.type.dtype) && readByGradientInput(g, id))
        asConstantNode[id] = true;
      else
        setTensor(*graph->add_initializer(), v);
      break;
    case ir::ValueKind::Activation: break;
    }
  }
  std::vector<bool> emitted(g.numValues(), false);
  std::set<ir::ValueId> outputs(g.outputs().begin(), g.outputs().end());
  for (ir::NodeId nid = 0; nid < g.numNodes(); ++nid) {
    const ir::Node& n = g.node(nid);
    const std::string type = ir::opName(n.op);
    if (n.op == ir::Op::Silu && n.inputs.size() == 1 && n.outputs.size() == 1) {
      // As ONNX spells it, x * Sigmoid(x); the importer fuses the pair back (fuseSilu) under
      // this node's name.
      exportSilu(*graph, g, n, outputs.count(n.outputs[0]) > 0);
      continue;
    }
    if (!std::binary_search(supported.begin(), supported.end(), type))
      return badInput(source + ": node '" + n.name + "' (" + type + ") has no ONNX equivalent and cannot be exported");
    for (ir::ValueId in : n.inputs) {
      if (in == ir::kNone || !asConstantNode[in] || emitted[in]) continue;
      emitted[in] = true;
      onnx::NodeProto* c = graph->add_node();
      c->set_op_type("Constant");
      c->set_name(g.value(in).name + "_constant");
      c->add_output(g.value(in).name);
      onnx::AttributeProto* a = c->add_attribute();
      a->set_name("value");
      a->set_type(onnx::AttributeProto_AttributeType_TENSOR);
      setTensor(*a->mutable_t(), g.value(in));
    }
    onnx::NodeProto* node = graph->add_node();
    node->set_op_type(type);
    node->set_name(n.name);
    for (ir::ValueId in : n.inputs) node->add_input(in == ir::kNone ? std::string() : g.value(in).name);
    for (ir::ValueId out : n.outputs) node->add_output(g.value(out).name);
    for (const auto& [name, value] : n.attrs) setAttribute(*node->add_attribute(), name, value);
    for (ir::ValueId out : n.outputs)
      if (!outputs.count(out)) setValueInfo(*graph->add_value_info(), g.value(out));
  }
  for (ir::ValueId out : g.outputs()) setValueInfo(*graph->add_output(), g.value(out));
  std::string bytes;
  if (!model.SerializeToString(&bytes))
    return Status(ErrorCode::Internal, source + ": the model is too large for one protobuf message (2 GiB)");
  return bytes;
}

} // namespace tbp::frontend
