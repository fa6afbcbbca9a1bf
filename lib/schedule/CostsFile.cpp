#include "tbp/schedule/CostsFile.h"

#include "tbp/schedule/ScheduleFile.h"

#include "JsonFields.h"

#include <nlohmann/json.hpp>

namespace tbp::schedule {

using nlohmann::ordered_json;

namespace {
/// The largest kernel scratch a costs file may record, 256 TiB: a bigger one is a corrupt
/// file, and sums of such figures must not wrap.
constexpr uint64_t kMaxScratchBytes = uint64_t{1} << 48;
/// The longest op time a costs file may record, 2^48 ns (about 78 hours), for the same reason.
constexpr uint64_t kMaxNodeNs = uint64_t{1} << 48;
} // namespace

std::string writeCosts(const CostsFile& f, const ir::Graph& graph) {
  ordered_json j;
  j["format"] = kCostsFormatName;
  // Version 2 only with measured scratch, so that files without it stay readable by version-1
  // readers (as the schedule file does with caching).
  j["version"] = f.scratch.empty() ? kCostsFormatOldestVersion : kCostsFormatVersion;
  j["graph_fingerprint"] = f.graphFingerprint;
  j["graph"] = f.graphName;
  j["device"] = f.device;
  j["threads"] = f.threads;
  j["repeats"] = f.repeats;
  j["unit"] = "ns";
  uint64_t total = 0;
  ordered_json nodes = ordered_json::array();
  for (ir::NodeId n = 0; n < f.nodeNs.size() && n < graph.numNodes(); ++n) {
    ordered_json e{{"node", n}, {"name", graph.node(n).name}, {"op", ir::opName(graph.node(n).op)}, {"ns", f.nodeNs[n]}};
    if (n < f.scratch.size() && f.scratch[n])
      e["scratch"] = {{"forward", f.scratch[n]->forward}, {"backward", f.scratch[n]->backward}};
    nodes.push_back(std::move(e));
    total += f.nodeNs[n];
  }
  j["forward_ns"] = total;
  if (!f.scratch.empty()) j["scratch"] = "measured";
  j["nodes"] = nodes;
  return j.dump(2) + "\n";
}

Expected<CostsFile> readCosts(const std::string& text, const ir::Graph& graph, const std::string& source) {
  auto bad = [&source](const std::string& what) { return Status(ErrorCode::BadInput, source + ": " + what); };
  ordered_json j;
  try {
    j = ordered_json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    return bad("not JSON (byte " + std::to_string(e.byte) + ")");
  }
  CostsFile f;
  try {
    using namespace json;
    if (!j.is_object() || j.value("format", "") != kCostsFormatName)
      return bad("not a tbp costs file ('format' must be \"" + std::string(kCostsFormatName) + "\")");
    const ordered_json& versionValue = member(j, "version", "");
    if (!versionValue.is_number_integer() || versionValue.get<int64_t>() < kCostsFormatOldestVersion ||
        versionValue.get<int64_t>() > kCostsFormatVersion)
      return bad("costs file version " + versionValue.dump() + " is not supported (this tbp reads versions " +
                 std::to_string(kCostsFormatOldestVersion) + " to " + std::to_string(kCostsFormatVersion) + ")");
    const int version = versionValue.get<int>();
    if (stringField(j, "unit") != "ns") return bad("'unit' must be \"ns\"");
    f.graphFingerprint = stringField(j, "graph_fingerprint");
    const std::string actual = fingerprint(graph);
    if (f.graphFingerprint != actual)
      return bad("the costs were measured for another graph (fingerprint " + f.graphFingerprint + ", this model " + actual +
                 "); profile it again, or pass the --dim/--loss/--freeze it was profiled with");
    f.graphName = stringField(j, "graph");
    f.device = stringField(j, "device");
    f.threads = static_cast<int>(unsignedField(j, "threads", "", 1 << 20));
    f.repeats = static_cast<int>(unsignedField(j, "repeats", "", 1 << 20));
    bool withScratch = false;
    if (version >= 2) {
      const std::string scratch = stringField(j, "scratch");
      if (scratch != "static" && scratch != "measured") return bad("'scratch' must be \"static\" or \"measured\"");
      withScratch = scratch == "measured";
    }
    const ordered_json& nodes = arrayField(j, "nodes");
    if (nodes.size() != graph.numNodes())
      return bad("'nodes' has " + std::to_string(nodes.size()) + " entries, the graph has " + std::to_string(graph.numNodes()) + " nodes");
    f.nodeNs.assign(graph.numNodes(), 0);
    if (withScratch) f.scratch.assign(graph.numNodes(), std::nullopt);
    for (size_t i = 0; i < nodes.size(); ++i) {
      const std::string where = "nodes[" + std::to_string(i) + "]";
      const ordered_json& e = nodes[i];
      const uint64_t id = unsignedField(e, "node", where);
      if (id >= graph.numNodes()) return bad(where + ": node " + std::to_string(id) + " is out of range");
      const ir::Node& node = graph.node(static_cast<ir::NodeId>(id));
      if (f.nodeNs[static_cast<size_t>(id)] != 0) return bad(where + ": node " + std::to_string(id) + " is listed twice");
      const std::string name = stringField(e, "name", where);
      if (name != node.name) return bad(where + ": node " + std::to_string(id) + " is '" + node.name + "' in this graph, not '" + name + "'");
      const uint64_t ns = unsignedField(e, "ns", where, kMaxNodeNs);
      if (ns == 0) return bad(where + ": 'ns' must be a positive integer");
      f.nodeNs[static_cast<size_t>(id)] = ns;
      if (e.contains("scratch")) {
        if (!withScratch) return bad(where + ": 'scratch' in a file whose 'scratch' is not \"measured\"");
        const ordered_json& sc = e.at("scratch");
        for (const char* key : {"forward", "backward"})
          if (!sc.is_object() || !sc.contains(key) || !sc.at(key).is_number_unsigned() || sc.at(key).get<uint64_t>() > kMaxScratchBytes)
            return bad(where + ": 'scratch." + key + "' must be a byte count (an integer from 0 to 2^48)");
        f.scratch[static_cast<size_t>(id)] = ir::MeasuredScratch{sc.at("forward").get<uint64_t>(), sc.at("backward").get<uint64_t>()};
      }
    }
  } catch (const json::FieldError& e) {
    return bad(std::string("malformed costs file: ") + e.what());
  } catch (const nlohmann::json::exception& e) {
    std::string what = e.what();
    return bad("malformed costs file: " + what.substr(what.find(']') + 2));
  }
  return f;
}

} // namespace tbp::schedule
