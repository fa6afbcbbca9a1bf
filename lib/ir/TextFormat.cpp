#include "tbp/ir/TextFormat.h"

#include "tbp/support/Bytes.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>

namespace tbp::ir {

// ---------------------------------------------------------------------------------- printing

namespace {

constexpr size_t kMaxPrintedElements = 16;

bool isPlainNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == ':' ||
         c == '/' || c == '-';
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string valueRef(const std::string& name) {
  bool plain = !name.empty();
  for (char c : name) plain = plain && isPlainNameChar(c);
  return "%" + (plain ? name : quote(name));
}

std::string formatDouble(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.9g", v);
  std::string s = buffer;
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string formatAttr(const AttrValue& value) {
  struct Visitor {
    std::string operator()(int64_t v) const { return std::to_string(v); }
    std::string operator()(double v) const { return formatDouble(v); }
    std::string operator()(const std::string& v) const { return quote(v); }
    std::string operator()(const std::vector<int64_t>& v) const {
      std::string s = "[";
      for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
      return s + "]";
    }
    std::string operator()(const std::vector<double>& v) const {
      std::string s = "f[";
      for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + formatDouble(v[i]);
      return s + "]";
    }
    std::string operator()(const std::vector<std::string>& v) const {
      std::string s = "s[";
      for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + quote(v[i]);
      return s + "]";
    }
  };
  return std::visit(Visitor{}, value);
}

uint64_t elementAsUnsigned(const std::string& data, size_t i) {
  uint64_t v;
  std::memcpy(&v, data.data() + i * sizeof v, sizeof v);
  return v;
}

std::string formatData(const Value& v) {
  if (!v.data || v.type.dtype == DType::F16 || v.type.dtype == DType::BF16) return {};
  uint64_t n = v.bytes / dtypeSize(v.type.dtype);
  if (n > kMaxPrintedElements || v.data->size() != v.bytes) return {};
  std::string s = " = [";
  for (size_t i = 0; i < n; ++i) {
    s += i ? ", " : "";
    if (isFloat(v.type.dtype)) s += formatDouble(elementAsDouble(v.type.dtype, *v.data, i));
    else if (v.type.dtype == DType::U64) s += std::to_string(elementAsUnsigned(*v.data, i));
    else s += std::to_string(elementAsInt(v.type.dtype, *v.data, i));
  }
  return s + "]";
}

} // namespace

std::string printGraph(const Graph& graph, bool constantData) {
  std::ostringstream out;
  out << "graph " << valueRef(graph.name()).substr(1) << " {\n";
  for (const Value& v : graph.values()) {
    if (v.kind == ValueKind::Activation) continue;
    out << "  " << valueKindName(v.kind) << " " << valueRef(v.name) << " : " << v.type.str();
    if (v.kind == ValueKind::Constant && constantData) out << formatData(v);
    out << "\n";
  }
  for (const Node& n : graph.nodes()) {
    out << "  ";
    for (size_t i = 0; i < n.outputs.size(); ++i) {
      const Value& o = graph.value(n.outputs[i]);
      out << (i ? ", " : "") << valueRef(o.name) << " : " << o.type.str();
    }
    out << " = " << opName(n.op) << "(";
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      out << (i ? ", " : "");
      if (n.inputs[i] == kNone) out << "_";
      else out << valueRef(graph.value(n.inputs[i]).name);
    }
    out << ")";
    if (!n.attrs.empty()) {
      out << " {";
      bool first = true;
      for (const auto& [key, value] : n.attrs) {
        out << (first ? "" : ", ") << key << "=" << formatAttr(value);
        first = false;
      }
      out << "}";
    }
    if (!n.name.empty()) out << " loc(" << quote(n.name) << ")";
    out << "\n";
  }
  for (ValueId o : graph.outputs()) out << "  output " << valueRef(graph.value(o).name) << "\n";
  out << "}\n";
  return out.str();
}

// ----------------------------------------------------------------------------------- parsing

namespace {

class Parser {
public:
  Parser(std::string_view text, std::string_view source) : text_(text), source_(source) {}

  Expected<Graph> parse() {
    skipSpace();
    if (!keyword("graph")) return error("expected 'graph'");
    std::string name;
    if (!readName(name)) return error("expected a graph name");
    Graph graph(name);
    skipSpace();
    if (!consume('{')) return error("expected '{'");
    while (true) {
      skipSpace();
      if (atEnd()) return error("expected '}' before the end of the input");
      if (consume('}')) break;
      Status s = parseStatement(graph);
      if (!s) return s;
    }
    skipSpace();
    if (!atEnd()) return error("unexpected text after the closing '}'");
    return graph;
  }

private:
  Status parseStatement(Graph& graph) {
    size_t line = line_, col = column();
    if (keyword("input")) return parseDecl(graph, ValueKind::Input);
    if (keyword("param")) return parseDecl(graph, ValueKind::Parameter);
    if (keyword("const")) return parseDecl(graph, ValueKind::Constant);
    if (keyword("output")) {
      std::string name;
      if (!readValueRef(name)) return error("expected a value after 'output'");
      auto id = graph.findValue(name);
      if (!id) return errorAt(line, col, "output '%" + name + "' is not defined");
      graph.addOutput(*id);
      return Status::ok();
    }
    return parseNode(graph);
  }

  Status parseDecl(Graph& graph, ValueKind kind) {
    size_t line = line_, col = column();
    std::string name;
    if (!readValueRef(name)) return error("expected a value name such as %x");
    TensorType type;
    TBP_RETURN_IF_ERROR(parseColonType(type));
    TensorData data;
    skipSpace();
    if (consume('=')) {
      if (kind != ValueKind::Constant) return error("only constants take data");
      Expected<TensorData> d = parseData(type);
      if (!d) return d.status();
      data = *d;
    }
    Expected<ValueId> id = graph.addValue(name, kind, type, data);
    if (!id) return errorAt(line, col, id.status().message());
    return Status::ok();
  }

  Status parseColonType(TensorType& type) {
    skipSpace();
    if (!consume(':')) return error("expected ':' and a type such as f32[2,3]");
    skipSpace();
    std::string dtypeName;
    while (!atEnd() && std::isalnum(static_cast<unsigned char>(peek()))) dtypeName += get();
    if (!parseDType(dtypeName, type.dtype)) return error("unknown element type '" + dtypeName + "'");
    if (!consume('[')) return error("expected '[' after the element type");
    skipSpace();
    if (consume(']')) return Status::ok();
    while (true) {
      int64_t d;
      skipSpace();
      if (!readInt(d)) return error("expected a dimension");
      type.shape.push_back(d);
      skipSpace();
      if (consume(']')) return Status::ok();
      if (!consume(',')) return error("expected ',' or ']' in the shape");
    }
  }

  Expected<TensorData> parseData(const TensorType& type) {
    skipSpace();
    if (!consume('[')) return error("expected '[' to start constant data");
    std::vector<double> values;
    std::vector<int64_t> ints;
    const bool integral = !isFloat(type.dtype);
    skipSpace();
    if (!consume(']')) {
      while (true) {
        double v = 0;
        int64_t iv = 0;
        skipSpace();
        if (integral ? !readInt(iv) : !readNumber(v))
          return error(integral ? "expected an integer in constant data" : "expected a number in constant data");
        values.push_back(v);
        ints.push_back(iv);
        skipSpace();
        if (consume(']')) break;
        if (!consume(',')) return error("expected ',' or ']' in constant data");
      }
    }
    Expected<uint64_t> n = checkedNumElements(type.shape, "constant");
    if (!n) return n.status();
    if (values.size() != *n)
      return error("constant has " + std::to_string(values.size()) + " elements, its type " +
                   type.str() + " needs " + std::to_string(*n));
    auto bytes = std::make_shared<std::string>(*n * dtypeSize(type.dtype), '\0');
    for (size_t i = 0; i < values.size(); ++i) {
      auto write = [&](auto v) { std::memcpy(bytes->data() + i * sizeof(v), &v, sizeof(v)); };
      switch (type.dtype) {
      case DType::F32: write(static_cast<float>(values[i])); break;
      case DType::F64: write(values[i]); break;
      case DType::I8: write(static_cast<int8_t>(ints[i])); break;
      case DType::I16: write(static_cast<int16_t>(ints[i])); break;
      case DType::I32: write(static_cast<int32_t>(ints[i])); break;
      case DType::I64: write(ints[i]); break;
      case DType::U8:
      case DType::Bool: write(static_cast<uint8_t>(ints[i])); break;
      case DType::U16: write(static_cast<uint16_t>(ints[i])); break;
      case DType::U32: write(static_cast<uint32_t>(ints[i])); break;
      case DType::U64: write(static_cast<uint64_t>(ints[i])); break;
      case DType::F16:
      case DType::BF16: return error("constant data for " + std::string(dtypeName(type.dtype)) + " is not supported in the text form");
      }
    }
    return TensorData(bytes);
  }

  Status parseNode(Graph& graph) {
    size_t line = line_, col = column();
    std::vector<std::pair<std::string, TensorType>> outs;
    while (true) {
      std::string name;
      if (!readValueRef(name)) return error("expected a statement: input, param, const, output or %value ... = Op(...)");
      TensorType type;
      TBP_RETURN_IF_ERROR(parseColonType(type));
      outs.emplace_back(name, type);
      skipSpace();
      if (consume('=')) break;
      if (!consume(',')) return error("expected ',' or '=' after an output");
    }
    skipSpace();
    size_t opLine = line_, opCol = column();
    std::string opText;
    while (!atEnd() && (std::isalnum(static_cast<unsigned char>(peek())) || peek() == '_')) opText += get();
    std::optional<Op> op = opFromName(opText);
    if (!op) return errorAt(opLine, opCol, "unknown op '" + opText + "'");
    skipSpace();
    if (!consume('(')) return error("expected '(' after the op name");
    std::vector<ValueId> inputs;
    skipSpace();
    if (!consume(')')) {
      while (true) {
        skipSpace();
        size_t inLine = line_, inCol = column();
        if (consume('_')) {
          inputs.push_back(kNone);
        } else {
          std::string name;
          if (!readValueRef(name)) return error("expected an input value or '_'");
          auto id = graph.findValue(name);
          if (!id) return errorAt(inLine, inCol, "input '%" + name + "' is not defined before its use");
          inputs.push_back(*id);
        }
        skipSpace();
        if (consume(')')) break;
        if (!consume(',')) return error("expected ',' or ')' in the input list");
      }
    }
    Attributes attrs;
    skipSpace();
    if (consume('{')) TBP_RETURN_IF_ERROR(parseAttrs(attrs));
    std::string nodeName;
    skipSpace();
    if (keyword("loc")) {
      if (!consume('(') || !readQuoted(nodeName) || !consume(')'))
        return error("expected loc(\"name\")");
    }
    std::vector<ValueId> outputs;
    for (auto& [name, type] : outs) {
      Expected<ValueId> id = graph.addValue(name, ValueKind::Activation, type);
      if (!id) return errorAt(line, col, id.status().message());
      outputs.push_back(*id);
    }
    graph.addNode(nodeName, *op, std::move(inputs), std::move(outputs), std::move(attrs));
    return Status::ok();
  }

  Status parseAttrs(Attributes& attrs) {
    skipSpace();
    if (consume('}')) return Status::ok();
    while (true) {
      skipSpace();
      std::string key;
      while (!atEnd() && (std::isalnum(static_cast<unsigned char>(peek())) || peek() == '_')) key += get();
      if (key.empty()) return error("expected an attribute name");
      skipSpace();
      if (!consume('=')) return error("expected '=' after attribute '" + key + "'");
      skipSpace();
      Expected<AttrValue> value = parseAttrValue();
      if (!value) return value.status();
      attrs[key] = *value;
      skipSpace();
      if (consume('}')) return Status::ok();
      if (!consume(',')) return error("expected ',' or '}' in the attributes");
    }
  }

  Expected<AttrValue> parseAttrValue() {
    if (peek() == '"') {
      std::string s;
      if (!readQuoted(s)) return error("unterminated string");
      return AttrValue(s);
    }
    char listKind = 0;
    if ((peek() == 'f' || peek() == 's') && peekAt(1) == '[') listKind = get();
    if (consume('[')) {
      std::vector<int64_t> ints;
      std::vector<double> floats;
      std::vector<std::string> strings;
      skipSpace();
      if (!consume(']')) {
        while (true) {
          skipSpace();
          if (listKind == 's') {
            std::string s;
            if (!readQuoted(s)) return error("expected a string in the list");
            strings.push_back(s);
          } else if (listKind == 'f') {
            double v;
            if (!readNumber(v)) return error("expected a number in the list");
            floats.push_back(v);
          } else {
            int64_t v;
            if (!readInt(v)) return error("expected an integer in the list (use f[...] for floats)");
            ints.push_back(v);
          }
          skipSpace();
          if (consume(']')) break;
          if (!consume(',')) return error("expected ',' or ']' in the list");
        }
      }
      if (listKind == 's') return AttrValue(strings);
      if (listKind == 'f') return AttrValue(floats);
      return AttrValue(ints);
    }
    size_t start = pos_, startLine = line_, startLineStart = lineStart_;
    double v;
    if (!readNumber(v)) return error("expected an attribute value");
    std::string_view token = text_.substr(start, pos_ - start);
    if (token.find_first_of(".eEn") != std::string_view::npos) return AttrValue(v);
    // An integer: read it again exactly (values beyond 2^53 do not survive a double).
    pos_ = start;
    line_ = startLine;
    lineStart_ = startLineStart;
    int64_t i;
    if (!readInt(i)) return error("integer attribute out of range");
    return AttrValue(i);
  }

  // -- lexing helpers
  bool atEnd() const { return pos_ >= text_.size(); }
  char peek() const { return atEnd() ? '\0' : text_[pos_]; }
  char peekAt(size_t k) const { return pos_ + k < text_.size() ? text_[pos_ + k] : '\0'; }
  char get() {
    char c = text_[pos_++];
    if (c == '\n') {
      ++line_;
      lineStart_ = pos_;
    }
    return c;
  }
  bool consume(char c) {
    if (peek() != c) return false;
    get();
    return true;
  }
  size_t column() const { return pos_ - lineStart_ + 1; }
  void skipSpace() {
    while (!atEnd()) {
      if (std::isspace(static_cast<unsigned char>(peek()))) get();
      else if (peek() == '#') {
        while (!atEnd() && peek() != '\n') get();
      } else break;
    }
  }
  bool keyword(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    char after = peekAt(word.size());
    if (std::isalnum(static_cast<unsigned char>(after)) || after == '_') return false;
    for (size_t i = 0; i < word.size(); ++i) get();
    skipSpace();
    return true;
  }
  bool readQuoted(std::string& out) {
    if (!consume('"')) return false;
    while (!atEnd() && peek() != '"') {
      char c = get();
      if (c == '\\' && !atEnd()) {
        char e = get();
        out += e == 'n' ? '\n' : e;
      } else {
        out += c;
      }
    }
    return consume('"');
  }
  bool readName(std::string& out) {
    skipSpace();
    if (peek() == '"') return readQuoted(out);
    while (!atEnd() && isPlainNameChar(peek())) out += get();
    return !out.empty();
  }
  bool readValueRef(std::string& out) {
    skipSpace();
    if (!consume('%')) return false;
    if (peek() == '"') return readQuoted(out);
    while (!atEnd() && isPlainNameChar(peek())) out += get();
    return !out.empty();
  }
  bool readInt(int64_t& out) {
    size_t start = pos_;
    if (peek() == '-' || peek() == '+') get();
    while (!atEnd() && std::isdigit(static_cast<unsigned char>(peek()))) get();
    std::string token(text_.substr(start, pos_ - start));
    if (token.empty() || token == "-" || token == "+") return false;
    errno = 0;
    char* end = nullptr;
    out = std::strtoll(token.c_str(), &end, 10);
    return errno == 0 && end == token.c_str() + token.size();
  }
  bool readNumber(double& out) {
    size_t start = pos_;
    if (peek() == '-' || peek() == '+') get();
    if (text_.substr(pos_, 3) == "inf" || text_.substr(pos_, 3) == "nan") {
      for (int i = 0; i < 3; ++i) get();
    } else {
      while (!atEnd() && (std::isdigit(static_cast<unsigned char>(peek())) || peek() == '.' ||
                          peek() == 'e' || peek() == 'E' ||
                          ((peek() == '-' || peek() == '+') && (text_[pos_ - 1] == 'e' || text_[pos_ - 1] == 'E'))))
        get();
    }
    std::string token(text_.substr(start, pos_ - start));
    if (token.empty()) return false;
    char* end = nullptr;
    out = std::strtod(token.c_str(), &end);
    return end == token.c_str() + token.size();
  }

  Status error(const std::string& message) const { return errorAt(line_, column(), message); }
  Status errorAt(size_t line, size_t col, const std::string& message) const {
    return badInput(std::string(source_) + ":" + std::to_string(line) + ":" + std::to_string(col) + ": " + message);
  }

  std::string_view text_;
  std::string_view source_;
  size_t pos_ = 0;
  size_t line_ = 1;
  size_t lineStart_ = 0;
};

} // namespace

Expected<Graph> parseGraph(std::string_view text, std::string_view source) {
  return Parser(text, source).parse();
}

} // namespace tbp::ir
