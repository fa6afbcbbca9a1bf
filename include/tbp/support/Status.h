#pragma once
/// \file
/// The one error vocabulary of tbp (DESIGN.md §7): a Status carries an error code and a
/// message that already names the file and place; Expected<T> is a value or a Status.

#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace tbp {

/// Error codes; their numeric values are the process exit codes of DESIGN.md §7.
enum class ErrorCode : int {
  Ok = 0,          ///< success
  CheckFailed = 1, ///< a check failed: regression, verification mismatch, budget exceeded
  Usage = 2,       ///< the command line is wrong
  BadInput = 3,    ///< an input file is missing, malformed or unsupported
  Infeasible = 4,  ///< no schedule fits the requested budget
  Internal = 5,    ///< an internal or runtime error
};

/// The exit code that belongs to an error code.
inline int exitCodeOf(ErrorCode code) { return static_cast<int>(code); }

/// The outcome of an operation that returns nothing: Ok, or an error code with a message.
class [[nodiscard]] Status {
public:
  /// Success.
  Status() = default;
  /// A failure with the given code and message (message in tbp's style: lower-case start,
  /// no trailing period, names the file and place).
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  /// The success value.
  static Status ok() { return {}; }

  /// True when this is a success.
  bool isOk() const { return code_ == ErrorCode::Ok; }
  explicit operator bool() const { return isOk(); }
  /// The error code (Ok on success).
  ErrorCode code() const { return code_; }
  /// The message (empty on success).
  const std::string& message() const { return message_; }

  /// Returns a copy whose message is prefixed by `context: `.
  Status withContext(const std::string& context) const {
    if (isOk()) return *this;
    return {code_, context + ": " + message_};
  }

private:
  ErrorCode code_ = ErrorCode::Ok;
  std::string message_;
};

/// Shorthand constructors for the common error codes.
inline Status badInput(std::string message) { return {ErrorCode::BadInput, std::move(message)}; }
inline Status usageError(std::string message) { return {ErrorCode::Usage, std::move(message)}; }
inline Status internalError(std::string message) {
  return {ErrorCode::Internal, std::move(message)};
}

/// A value of type T, or the Status that explains why there is none.
template <typename T> class [[nodiscard]] Expected {
public:
  /// A value.
  Expected(T value) : storage_(std::move(value)) {}
  /// An error; `status` must not be Ok.
  Expected(Status status) : storage_(std::move(status)) {
    assert(!std::get<Status>(storage_).isOk() && "Expected built from an Ok status");
  }

  /// True when a value is held.
  bool hasValue() const { return std::holds_alternative<T>(storage_); }
  explicit operator bool() const { return hasValue(); }

  /// The value; only valid when hasValue().
  T& value() & { return std::get<T>(storage_); }
  const T& value() const& { return std::get<T>(storage_); }
  T&& value() && { return std::get<T>(std::move(storage_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  /// The error; only valid when !hasValue().
  const Status& status() const { return std::get<Status>(storage_); }

private:
  std::variant<T, Status> storage_;
};

/// Aborts with file:line for programmer errors (never for bad user input).
[[noreturn]] inline void fatalInternal(const char* file, int line, const char* what) {
  std::fprintf(stderr, "tbp: internal error at %s:%d: %s\n", file, line, what);
  std::abort();
}

} // namespace tbp

/// Checks an invariant in every build type; a failure is a bug in tbp.
#define TBP_CHECK(cond)                                                                            \
  do {                                                                                             \
    if (!(cond)) ::tbp::fatalInternal(__FILE__, __LINE__, #cond);                                  \
  } while (0)

/// Returns the Status of `expr` from the enclosing function when it is an error.
#define TBP_RETURN_IF_ERROR(expr)                                                                  \
  do {                                                                                             \
    ::tbp::Status tbpStatus_ = (expr);                                                             \
    if (!tbpStatus_.isOk()) return tbpStatus_;                                                     \
  } while (0)
