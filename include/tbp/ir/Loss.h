#pragma once
/// \file
/// Appending the training loss to a forward graph (DESIGN.md §3: the loss is part of the graph).

#include "tbp/ir/Graph.h"

#include <string_view>

namespace tbp::ir {

/// The losses tbp can append.
enum class LossKind : uint8_t {
  Sum,          ///< sum of the prediction's elements
  Mean,         ///< mean of the prediction's elements
  Mse,          ///< mean squared error against a target input `loss_target` of the same type
  CrossEntropy, ///< softmax cross entropy over the last axis against int64 labels `loss_labels`
};

/// Parses `sum`, `mean`, `mse`, `cross_entropy`.
std::optional<LossKind> parseLossKind(std::string_view text);
/// The command-line spelling of a loss.
const char* lossKindName(LossKind kind);

/// True when the graph already ends in a loss: its first output is a floating-point tensor with
/// one element, or it is produced by one of tbp's loss ops.
bool hasLoss(const Graph& graph);

/// Appends `kind` on the graph's first floating-point output and makes the scalar loss the
/// only graph output. Target inputs are added as graph inputs. Fails (BadInput) when there is no
/// floating-point output or the loss does not fit its shape (cross entropy on a scalar).
Status appendLoss(Graph& graph, LossKind kind, std::string_view source);

} // namespace tbp::ir
