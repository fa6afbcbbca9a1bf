#include "tbp/support/Logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace tbp {

void setupLogging(int verbosity) {
  static bool configured = false;
  if (!configured) {
    auto logger = spdlog::stderr_color_mt("tbp");
    logger->set_pattern("tbp: %^%l%$: %v");
    spdlog::set_default_logger(logger);
    configured = true;
  }
  spdlog::level::level_enum level = spdlog::level::warn;
  if (verbosity < 0) level = spdlog::level::err;
  else if (verbosity == 1) level = spdlog::level::info;
  else if (verbosity >= 2) level = spdlog::level::debug;
  spdlog::set_level(level);
}

} // namespace tbp
