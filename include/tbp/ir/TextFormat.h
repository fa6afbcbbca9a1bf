#pragma once
/// \file
/// The deterministic text form of the IR (`tbp dump`) and its parser, so that tests can write
/// small graphs in a few lines:
///
///     graph mlp {
///       input %x : f32[4,8]
///       param %w : f32[16,8]
///       const %shape : i64[2] = [4, -1]
///       %h : f32[4,16] = Gemm(%x, %w) {transB=1} loc("fc1")
///       %y : f32[4,16] = Relu(%h)
///       output %y
///     }
///
/// Absent optional inputs are written `_`. Names that are not plain identifiers are quoted
/// (`%"a b"`). Constants show their elements when they have at most 16; `#` starts a comment.

#include "tbp/ir/Graph.h"

#include <string>
#include <string_view>

namespace tbp::ir {

/// Prints `graph` in the text form. Same graph, same bytes. Without `constantData` no constant
/// shows its elements, so a graph prints the same whether or not its data was loaded.
std::string printGraph(const Graph& graph, bool constantData = true);

/// Parses the text form. Errors (BadInput) read `source:line:column: message`.
Expected<Graph> parseGraph(std::string_view text, std::string_view source = "<text>");

} // namespace tbp::ir
