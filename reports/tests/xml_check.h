// Test helpers: a small XML well-formedness checker (tags balanced and properly nested, attributes quoted and
// unique, entities known, no stray '<' or '&' in text) and a reader of the <text> elements of an SVG, so tests
// can check what a chart says and that its labels do not overlap.
#pragma once

#include <cctype>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace tg::reports::testing {

// "" when `doc` is well-formed XML (a leading <!DOCTYPE ...> is allowed); otherwise what is wrong and where.
inline std::string xml_problem(std::string_view doc) {
  std::vector<std::string> open;
  std::size_t i = 0;
  auto at = [&](std::size_t p) { return " at byte " + std::to_string(p); };
  auto name_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == ':' || c == '.';
  };
  auto check_entities = [&](std::string_view text, std::size_t base) -> std::string {
    for (std::size_t k = 0; k < text.size(); ++k) {
      if (text[k] == '<') return "'<' in text" + at(base + k);
      if (text[k] != '&') continue;
      const std::size_t semi = text.find(';', k);
      if (semi == std::string_view::npos) return "unterminated entity" + at(base + k);
      const std::string_view ent = text.substr(k + 1, semi - k - 1);
      static const std::set<std::string_view> kNamed = {"amp", "lt", "gt", "quot", "apos"};
      const bool numeric = ent.size() > 1 && ent[0] == '#';
      if (!kNamed.count(ent) && !numeric) return "unknown entity &" + std::string(ent) + ";" + at(base + k);
      k = semi;
    }
    return "";
  };
  bool root_seen = false;
  while (i < doc.size()) {
    const std::size_t lt = doc.find('<', i);
    const std::string_view text = doc.substr(i, lt == std::string_view::npos ? std::string_view::npos : lt - i);
    if (auto e = check_entities(text, i); !e.empty()) return e;
    if (open.empty() && root_seen && text.find_first_not_of(" \t\r\n") != std::string_view::npos)
      return "text after the root element" + at(i);
    if (lt == std::string_view::npos) break;
    if (doc.substr(lt, 4) == "<!--") {
      const std::size_t end = doc.find("-->", lt);
      if (end == std::string_view::npos) return "unterminated comment" + at(lt);
      i = end + 3;
      continue;
    }
    if (doc.substr(lt, 9) == "<!DOCTYPE") {
      if (root_seen || !open.empty()) return "DOCTYPE inside the document" + at(lt);
      i = doc.find('>', lt) + 1;
      continue;
    }
    if (doc.substr(lt, 2) == "<?") {
      i = doc.find("?>", lt) + 2;
      continue;
    }
    const bool closing = doc.substr(lt, 2) == "</";
    std::size_t p = lt + (closing ? 2 : 1);
    const std::size_t name_start = p;
    while (p < doc.size() && name_char(doc[p])) ++p;
    const std::string name(doc.substr(name_start, p - name_start));
    if (name.empty()) return "a tag without a name" + at(lt);
    if (closing) {
      while (p < doc.size() && std::isspace(static_cast<unsigned char>(doc[p]))) ++p;
      if (p >= doc.size() || doc[p] != '>') return "malformed end tag </" + name + at(lt);
      if (open.empty() || open.back() != name)
        return "</" + name + "> does not close <" + (open.empty() ? std::string("nothing") : open.back()) + ">" + at(lt);
      open.pop_back();
      i = p + 1;
      continue;
    }
    if (open.empty() && root_seen) return "a second root element <" + name + ">" + at(lt);
    std::set<std::string> attrs;
    while (true) {
      while (p < doc.size() && std::isspace(static_cast<unsigned char>(doc[p]))) ++p;
      if (p >= doc.size()) return "unterminated tag <" + name + at(lt);
      if (doc[p] == '>') {
        open.push_back(name);
        root_seen = true;
        i = p + 1;
        break;
      }
      if (doc.substr(p, 2) == "/>") {
        root_seen = true;
        i = p + 2;
        break;
      }
      const std::size_t a = p;
      while (p < doc.size() && name_char(doc[p])) ++p;
      const std::string attr(doc.substr(a, p - a));
      if (attr.empty()) return "bad character '" + std::string(1, doc[p]) + "' in <" + name + ">" + at(p);
      if (!attrs.insert(attr).second) return "attribute " + attr + " twice in <" + name + ">" + at(a);
      if (p >= doc.size() || doc[p] != '=') return "attribute " + attr + " without a value in <" + name + ">" + at(a);
      ++p;
      if (p >= doc.size() || (doc[p] != '"' && doc[p] != '\'')) return "unquoted attribute " + attr + at(a);
      const char q = doc[p];
      const std::size_t end = doc.find(q, p + 1);
      if (end == std::string_view::npos) return "unterminated attribute " + attr + at(a);
      if (auto e = check_entities(doc.substr(p + 1, end - p - 1), p + 1); !e.empty()) return e;
      p = end + 1;
    }
  }
  if (!open.empty()) return "<" + open.back() + "> is never closed";
  if (!root_seen) return "no element";
  return "";
}

// Every <svg ...>...</svg> element in `html`, in order.
inline std::vector<std::string> svg_elements(const std::string& html) {
  std::vector<std::string> out;
  for (std::size_t p = html.find("<svg"); p != std::string::npos; p = html.find("<svg", p + 1)) {
    const std::size_t end = html.find("</svg>", p);
    if (end == std::string::npos) break;
    out.push_back(html.substr(p, end + 6 - p));
  }
  return out;
}

struct SvgText {
  double x = 0, y = 0, size = 12, rotate = 0;
  std::string anchor = "start", text;
  // Estimated horizontal extent (the same estimate the writer lays out with).
  double left(double width) const { return anchor == "middle" ? x - width / 2 : anchor == "end" ? x - width : x; }
};

inline std::string attr_of(const std::string& tag, const std::string& name) {
  const std::string key = " " + name + "=\"";
  const std::size_t p = tag.find(key);
  if (p == std::string::npos) return "";
  const std::size_t s = p + key.size();
  return tag.substr(s, tag.find('"', s) - s);
}

inline std::string unescape(std::string s) {
  const std::pair<const char*, const char*> kEnt[] = {{"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&#39;", "'"},
                                                     {"&amp;", "&"}};
  for (const auto& [e, c] : kEnt)
    for (std::size_t p = s.find(e); p != std::string::npos; p = s.find(e, p + 1)) s.replace(p, std::string(e).size(), c);
  return s;
}

// The <text> elements of one SVG: position, size, anchor, rotation and content (tooltips excluded).
inline std::vector<SvgText> svg_texts(const std::string& svg) {
  std::vector<SvgText> out;
  for (std::size_t p = svg.find("<text "); p != std::string::npos; p = svg.find("<text ", p + 1)) {
    const std::size_t gt = svg.find('>', p);
    const std::string tag = svg.substr(p, gt - p);
    SvgText t;
    t.x = std::atof(attr_of(tag, "x").c_str());
    t.y = std::atof(attr_of(tag, "y").c_str());
    t.size = std::atof(attr_of(tag, "font-size").c_str());
    if (auto a = attr_of(tag, "text-anchor"); !a.empty()) t.anchor = a;
    t.rotate = attr_of(tag, "transform").empty() ? 0 : 1;
    const std::size_t end = svg.find('<', gt + 1);
    t.text = unescape(svg.substr(gt + 1, end - gt - 1));
    out.push_back(t);
  }
  return out;
}

}  // namespace tg::reports::testing
