// The memory timeline of a schedule as SVG (tbp plan --timeline).

#include "tbp/schedule/ScheduleFile.h"

#include "tbp/support/Bytes.h"

#include <algorithm>
#include <sstream>

namespace tbp::schedule {

namespace {

std::string escapeXml(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
    case '<': out += "&lt;"; break;
    case '>': out += "&gt;"; break;
    case '&': out += "&amp;"; break;
    case '"': out += "&quot;"; break;
    default: out += c;
    }
  }
  return out;
}

std::string num(double v) { return formatFixed(v, 1); }

} // namespace

std::string renderTimelineSvg(const plan::StageModel& model, const plan::SimResult& sim, std::optional<uint64_t> budget,
                              uint64_t lowerBound, const std::string& title) {
  const double width = 960, left = 90, right = 20, plotW = width - left - right;
  const double top1 = 50, h1 = 300, top2 = top1 + h1 + 70, h2 = 140, height = top2 + h2 + 50;
  uint64_t yMax = std::max<uint64_t>({sim.peakBytes, budget.value_or(0), lowerBound, 1});
  yMax = yMax + yMax / 10;
  const size_t n = std::max<size_t>(sim.timeline.size(), 1);
  auto x = [&](double i) { return left + plotW * i / static_cast<double>(n); };
  auto y = [&](uint64_t b) { return top1 + h1 - h1 * static_cast<double>(b) / static_cast<double>(yMax); };

  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(width) << "\" height=\"" << num(height)
    << "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << "<text x=\"" << num(left) << "\" y=\"24\" font-size=\"16\">" << escapeXml(title) << "</text>\n";
  // Axes and gridlines.
  for (int g = 0; g <= 4; ++g) {
    uint64_t b = yMax * static_cast<uint64_t>(g) / 4;
    o << "<line x1=\"" << num(left) << "\" x2=\"" << num(left + plotW) << "\" y1=\"" << num(y(b)) << "\" y2=\"" << num(y(b))
      << "\" stroke=\"#e5e5e5\"/>\n";
    o << "<text x=\"" << num(left - 6) << "\" y=\"" << num(y(b) + 4) << "\" text-anchor=\"end\">" << formatBytes(b) << "</text>\n";
  }
  // Resident memory as a band.
  o << "<rect x=\"" << num(left) << "\" y=\"" << num(y(model.residentBytes)) << "\" width=\"" << num(plotW) << "\" height=\""
    << num(top1 + h1 - y(model.residentBytes)) << "\" fill=\"#dde8f5\"/>\n";
  // Memory during each instruction, as steps.
  o << "<polyline fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"1.5\" points=\"";
  for (size_t i = 0; i < sim.timeline.size(); ++i)
    o << num(x(static_cast<double>(i))) << "," << num(y(sim.timeline[i])) << " " << num(x(static_cast<double>(i + 1))) << ","
      << num(y(sim.timeline[i])) << " ";
  o << "\"/>\n";
  auto hline = [&](uint64_t b, const char* color, const std::string& label) {
    o << "<line x1=\"" << num(left) << "\" x2=\"" << num(left + plotW) << "\" y1=\"" << num(y(b)) << "\" y2=\"" << num(y(b))
      << "\" stroke=\"" << color << "\" stroke-dasharray=\"6 4\"/>\n";
    o << "<text x=\"" << num(left + plotW - 4) << "\" y=\"" << num(y(b) - 4) << "\" text-anchor=\"end\" fill=\"" << color << "\">"
      << escapeXml(label) << "</text>\n";
  };
  if (budget) hline(*budget, "#c62828", "budget " + formatBytes(*budget));
  hline(lowerBound, "#757575", "lower bound " + formatBytes(lowerBound));
  o << "<circle cx=\"" << num(x(static_cast<double>(sim.peakInstruction) + 0.5)) << "\" cy=\"" << num(y(sim.peakBytes))
    << "\" r=\"4\" fill=\"#1f5fa8\"/>\n";
  o << "<text x=\"" << num(left) << "\" y=\"" << num(top1 - 8) << "\">memory during each instruction (peak " << formatBytes(sim.peakBytes)
    << " at instruction " << sim.peakInstruction + 1 << " of " << sim.timeline.size() << "; blue band: resident "
    << formatBytes(model.residentBytes) << ")</text>\n";
  o << "<text x=\"" << num(left + plotW / 2) << "\" y=\"" << num(top1 + h1 + 20) << "\" text-anchor=\"middle\">instruction</text>\n";

  // Stage frontiers x_k.
  uint64_t fMax = 1;
  for (const plan::Stage& s : model.stages) fMax = std::max(fMax, s.inputFrontierBytes);
  const double bw = plotW / static_cast<double>(std::max<size_t>(model.size(), 1));
  o << "<text x=\"" << num(left) << "\" y=\"" << num(top2 - 8) << "\">input frontier x_k of each stage (max " << formatBytes(fMax)
    << ", " << model.size() << " stages)</text>\n";
  for (size_t k = 0; k < model.size(); ++k) {
    double hh = h2 * static_cast<double>(model.stages[k].inputFrontierBytes) / static_cast<double>(fMax);
    o << "<rect x=\"" << num(left + bw * static_cast<double>(k) + 0.5) << "\" y=\"" << num(top2 + h2 - hh) << "\" width=\""
      << num(std::max(bw - 1.0, 0.5)) << "\" height=\"" << num(hh) << "\" fill=\"#8fb3de\"/>\n";
  }
  o << "<line x1=\"" << num(left) << "\" x2=\"" << num(left + plotW) << "\" y1=\"" << num(top2 + h2) << "\" y2=\"" << num(top2 + h2)
    << "\" stroke=\"#555\"/>\n";
  o << "<text x=\"" << num(left + plotW / 2) << "\" y=\"" << num(top2 + h2 + 20) << "\" text-anchor=\"middle\">stage</text>\n";
  o << "</svg>\n";
  return o.str();
}

} // namespace tbp::schedule
