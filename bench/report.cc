#include "report.h"

#include <cmath>
#include <cstdio>
#include <iomanip>
#include <sstream>

namespace pgjobq::bench {
namespace {

// 12345.6 -> "12,346"; small values keep decimals.
std::string format_value(double v, const std::string& unit) {
  char buffer[64];
  if (unit == "ms") {
    std::snprintf(buffer, sizeof buffer, "%.3f ms", v);
    return buffer;
  }
  auto whole = static_cast<long long>(std::llround(v));
  std::string digits = std::to_string(whole);
  std::string out;
  int n = 0;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    if (n > 0 && n % 3 == 0 && *it != '-') out.insert(out.begin(), ',');
    out.insert(out.begin(), *it);
    ++n;
  }
  return out + (unit.empty() ? "" : " " + unit);
}

std::string format_ratio(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.2f", v);
  return buffer;
}

std::string format_number(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

std::string describe(const Target& t) {
  switch (t.kind) {
    case Target::Kind::none:
      return "";
    case Target::Kind::ratio_at_least:
      return "ratio >= " + format_number(t.value);
    case Target::Kind::ratio_at_most:
      return "ratio <= " + format_number(t.value);
    case Target::Kind::value_below:
      return "< " + format_number(t.value) + " ms";
  }
  return "";
}

std::string verdict(const Row& row) {
  if (row.failed) return "FAILED";
  if (!row.pgjobq) return "skipped";
  auto met = row.met();
  if (!met) return "";
  return *met ? "met" : "MISSED";
}

}  // namespace

std::optional<bool> Row::met() const {
  switch (target.kind) {
    case Target::Kind::none:
      return std::nullopt;
    case Target::Kind::ratio_at_least:
      if (!ratio) return std::nullopt;
      return *ratio >= target.value;
    case Target::Kind::ratio_at_most:
      if (!ratio) return std::nullopt;
      return *ratio <= target.value;
    case Target::Kind::value_below:
      if (!pgjobq) return std::nullopt;
      return *pgjobq < target.value;
  }
  return std::nullopt;
}

void print_table(std::ostream& out, const Report& report) {
  out << "PostgreSQL:";
  for (const auto& [name, value] : report.settings) {
    out << " " << name << "=" << value;
  }
  out << "\n";
  out << "Run:";
  for (const auto& [key, value] : report.config.items()) {
    out << " " << key << "=" << value.dump();
  }
  out << " (took " << std::fixed << std::setprecision(0) << report.seconds
      << " s)\n";
  out << "Machine: " << report.cpus << " CPUs, load average "
      << std::setprecision(2) << report.load_before << " before the run, "
      << report.load_after << " after\n\n";
  out.unsetf(std::ios::floatfield);
  out << "| row | pgjobq measures | pgjobq | reference measures | reference "
         "| ratio | target | |\n";
  out << "|---|---|---:|---|---:|---:|---|---|\n";
  for (const Row& row : report.rows) {
    out << "| " << row.id << " | " << row.measures << " | "
        << (row.pgjobq ? format_value(*row.pgjobq, row.unit) : "-") << " | "
        << row.reference_name << " | "
        << (row.reference ? format_value(*row.reference, row.unit) : "-")
        << " | " << (row.ratio ? format_ratio(*row.ratio) : "-") << " | "
        << describe(row.target) << " | " << verdict(row) << " |\n";
  }
  bool notes = false;
  for (const Row& row : report.rows) {
    if (row.note.empty()) continue;
    if (!notes) out << "\nNotes:\n";
    notes = true;
    out << "- " << row.id << ": " << row.note << "\n";
  }
}

void print_json(std::ostream& out, const Report& report) {
  nlohmann::json doc;
  doc["postgresql"] = nlohmann::json::object();
  for (const auto& [name, value] : report.settings) {
    doc["postgresql"][name] = value;
  }
  doc["config"] = report.config;
  doc["seconds"] = report.seconds;
  doc["machine"] = {{"cpus", report.cpus},
                    {"load_before", report.load_before},
                    {"load_after", report.load_after}};
  doc["rows"] = nlohmann::json::array();
  for (const Row& row : report.rows) {
    nlohmann::json r;
    r["row"] = row.id;
    r["measures"] = row.measures;
    r["unit"] = row.unit;
    r["pgjobq"] = row.pgjobq ? nlohmann::json(*row.pgjobq) : nullptr;
    r["reference_measures"] = row.reference_name;
    r["reference"] = row.reference ? nlohmann::json(*row.reference) : nullptr;
    r["ratio"] = row.ratio ? nlohmann::json(*row.ratio) : nullptr;
    r["target"] = describe(row.target);
    auto met = row.met();
    r["met"] = met ? nlohmann::json(*met) : nullptr;
    r["status"] = verdict(row);
    r["note"] = row.note;
    r["detail"] = row.detail;
    doc["rows"].push_back(std::move(r));
  }
  out << doc.dump(2) << "\n";
}

}  // namespace pgjobq::bench
