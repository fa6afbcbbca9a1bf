#include "tbp/analysis/Dot.h"

#include "tbp/support/Bytes.h"

#include <cmath>
#include <cstdio>
#include <sstream>

namespace tbp::analysis {

namespace {
std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}
} // namespace

std::string renderDot(const ir::Graph& g) {
  uint64_t largest = 1;
  for (const ir::Value& v : g.values())
    if (v.kind == ir::ValueKind::Activation) largest = std::max(largest, v.bytes);
  std::ostringstream out;
  out << "digraph \"" << escape(g.name()) << "\" {\n"
      << "  rankdir=TB;\n  node [shape=box, style=filled, fontname=\"Helvetica\", fontsize=10];\n"
      << "  edge [fontname=\"Helvetica\", fontsize=8];\n";
  for (ir::ValueId v = 0; v < g.numValues(); ++v) {
    const ir::Value& val = g.value(v);
    if (val.kind != ir::ValueKind::Input) continue;
    out << "  v" << v << " [shape=ellipse, fillcolor=\"#dde8f5\", label=\"" << escape(val.name) << "\\n"
        << val.type.str() << "\"];\n";
  }
  for (ir::NodeId id = 0; id < g.numNodes(); ++id) {
    const ir::Node& n = g.node(id);
    uint64_t bytes = 0;
    for (ir::ValueId o : n.outputs) bytes += g.value(o).bytes;
    double t = bytes == 0 ? 0.0 : std::log1p(static_cast<double>(bytes)) / std::log1p(static_cast<double>(largest));
    t = std::min(1.0, std::max(0.0, t));
    int gb = static_cast<int>(std::lround(255.0 * (1.0 - 0.75 * t)));
    char color[16];
    std::snprintf(color, sizeof color, "#ff%02x%02x", gb, gb);
    std::string label = (n.name.empty() ? "" : escape(n.name) + "\\n") + ir::opName(n.op);
    for (ir::ValueId o : n.outputs) label += "\\n" + g.value(o).type.str() + " (" + formatBytes(g.value(o).bytes) + ")";
    out << "  n" << id << " [fillcolor=\"" << color << "\", label=\"" << label << "\"];\n";
  }
  for (ir::NodeId id = 0; id < g.numNodes(); ++id) {
    for (ir::ValueId in : g.node(id).inputs) {
      if (in == ir::kNone) continue;
      const ir::Value& v = g.value(in);
      if (v.kind == ir::ValueKind::Input) out << "  v" << in;
      else if (v.kind == ir::ValueKind::Activation) out << "  n" << v.producer;
      else continue; // parameters and constants are resident: left out to keep the picture readable
      out << " -> n" << id << " [label=\"" << formatBytes(v.bytes) << "\"];\n";
    }
  }
  out << "}\n";
  return out.str();
}

} // namespace tbp::analysis
