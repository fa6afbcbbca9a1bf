#pragma once
// Private to the schedule component: strict reads of JSON members for the schedule and costs
// readers. nlohmann's get<T>() converts whatever number it finds (-1 becomes 2^64 - 1, 1.5
// becomes 1, 1e30 becomes 0); these accept only a value of the field's kind and range and
// otherwise throw a FieldError whose message names the member.

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace tbp::schedule::json {

using nlohmann::ordered_json;

/// A member that is missing or not of its field's kind; what() names it (`stages[2].first`).
struct FieldError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// `where` + `.key`, or `key` alone at the top level.
inline std::string memberPath(const std::string& where, const std::string& key) { return where.empty() ? key : where + "." + key; }

/// The member `key` of `obj`; throws when it is missing or `obj` is not an object.
inline const ordered_json& member(const ordered_json& obj, const std::string& key, const std::string& where) {
  if (!obj.is_object()) throw FieldError((where.empty() ? std::string("the document") : where) + " must be an object");
  auto it = obj.find(key);
  if (it == obj.end()) throw FieldError("'" + memberPath(where, key) + "' is missing");
  return *it;
}

/// A JSON value that must be a non-negative integer no larger than `max`.
inline uint64_t unsignedValue(const ordered_json& v, const std::string& path, uint64_t max = std::numeric_limits<uint64_t>::max()) {
  if (!v.is_number_unsigned() || v.get<uint64_t>() > max)
    throw FieldError("'" + path + "' must be an integer from 0 to " + std::to_string(max) + ", not " + v.dump());
  return v.get<uint64_t>();
}

/// The member `key` of `obj`, a non-negative integer no larger than `max`.
inline uint64_t unsignedField(const ordered_json& obj, const std::string& key, const std::string& where = {},
                              uint64_t max = std::numeric_limits<uint64_t>::max()) {
  return unsignedValue(member(obj, key, where), memberPath(where, key), max);
}

/// The member `key` of `obj`, a string.
inline std::string stringField(const ordered_json& obj, const std::string& key, const std::string& where = {}) {
  const ordered_json& v = member(obj, key, where);
  if (!v.is_string()) throw FieldError("'" + memberPath(where, key) + "' must be a string, not " + v.dump());
  return v.get<std::string>();
}

/// The member `key` of `obj`, a finite number.
inline double numberField(const ordered_json& obj, const std::string& key, const std::string& where = {}) {
  const ordered_json& v = member(obj, key, where);
  if (!v.is_number() || !std::isfinite(v.get<double>())) throw FieldError("'" + memberPath(where, key) + "' must be a finite number, not " + v.dump());
  return v.get<double>();
}

/// The member `key` of `obj`, an array.
inline const ordered_json& arrayField(const ordered_json& obj, const std::string& key, const std::string& where = {}) {
  const ordered_json& v = member(obj, key, where);
  if (!v.is_array()) throw FieldError("'" + memberPath(where, key) + "' must be an array");
  return v;
}

} // namespace tbp::schedule::json
