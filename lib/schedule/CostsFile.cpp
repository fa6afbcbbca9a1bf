#include "tbp/schedule/CostsFile.h"

#include "tbp/schedule/ScheduleFile.h"

#include <nlohmann/json.hpp>

namespace tbp::schedule {

using nlohmann::ordered_json;

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
    if (!j.is_object() || j.value("format", "") != kCostsFormatName)
      return bad("not a tbp costs file ('format' must be \"" + std::string(kCostsFormatName) + "\")");
    const int version = j.at("version").get<int>();
    if (version < kCostsFormatOldestVersion || version > kCostsFormatVersion)
      return bad("costs file version " + std::to_string(version) + " is not supported (this tbp reads versions " +
                 std::to_string(kCostsFormatOldestVersion) + " to " + std::to_string(kCostsFormatVersion) + ")");
    if (j.at("unit").get<std::string>() != "ns") return bad("'unit' must be \"ns\"");
    f.graphFingerprint = j.at("graph_fingerprint").get<std::string>();
    const std::string actual = fingerprint(graph);
    if (f.graphFingerprint != actual)
      return bad("the costs were measured for another graph (fingerprint " + f.graphFingerprint + ", this model " + actual +
                 "); profile it again, or pass the --dim/--loss/--freeze it was profiled with");
    f.graphName = j.at("graph").get<std::string>();
    f.device = j.at("device").get<std::string>();
    f.threads = j.at("threads").get<int>();
    f.repeats = j.at("repeats").get<int>();
    bool withScratch = false;
    if (version >= 2) {
      const std::string scratch = j.at("scratch").get<std::string>();
      if (scratch != "static" && scratch != "measured") return bad("'scratch' must be \"static\" or \"measured\"");
      withScratch = scratch == "measured";
    }
    const ordered_json& nodes = j.at("nodes");
    if (!nodes.is_array()) return bad("'nodes' must be an array");
    if (nodes.size() != graph.numNodes())
      return bad("'nodes' has " + std::to_string(nodes.size()) + " entries, the graph has " + std::to_string(graph.numNodes()) + " nodes");
    f.nodeNs.assign(graph.numNodes(), 0);
    if (withScratch) f.scratch.assign(graph.numNodes(), std::nullopt);
    for (size_t i = 0; i < nodes.size(); ++i) {
      const std::string where = "nodes[" + std::to_string(i) + "]";
      const ordered_json& e = nodes[i];
      const int64_t id = e.at("node").get<int64_t>();
      if (id < 0 || static_cast<uint64_t>(id) >= graph.numNodes()) return bad(where + ": node " + std::to_string(id) + " is out of range");
      const ir::Node& node = graph.node(static_cast<ir::NodeId>(id));
      if (f.nodeNs[static_cast<size_t>(id)] != 0) return bad(where + ": node " + std::to_string(id) + " is listed twice");
      if (e.at("name").get<std::string>() != node.name)
        return bad(where + ": node " + std::to_string(id) + " is '" + node.name + "' in this graph, not '" + e.at("name").get<std::string>() + "'");
      if (!e.at("ns").is_number_unsigned() || e.at("ns").get<uint64_t>() == 0)
        return bad(where + ": 'ns' must be a positive integer");
      f.nodeNs[static_cast<size_t>(id)] = e.at("ns").get<uint64_t>();
      if (e.contains("scratch")) {
        if (!withScratch) return bad(where + ": 'scratch' in a file whose 'scratch' is not \"measured\"");
        const ordered_json& s = e.at("scratch");
        for (const char* key : {"forward", "backward"})
          if (!s.is_object() || !s.contains(key) || !s.at(key).is_number_unsigned())
            return bad(where + ": 'scratch." + key + "' must be a byte count (a non-negative integer)");
        f.scratch[static_cast<size_t>(id)] = ir::MeasuredScratch{s.at("forward").get<uint64_t>(), s.at("backward").get<uint64_t>()};
      }
    }
  } catch (const nlohmann::json::exception& e) {
    std::string what = e.what();
    return bad("malformed costs file: " + what.substr(what.find(']') + 2));
  }
  return f;
}

} // namespace tbp::schedule
