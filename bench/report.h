#pragma once

// The benchmark's output: one Row per figure, printed as a Markdown table
// (which docs/benchmarks.md embeds as is) or as JSON.

#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace pgjobq::bench {

// What a row is held to.
struct Target {
  enum class Kind { none, ratio_at_least, ratio_at_most, value_below };
  Kind kind = Kind::none;
  double value = 0;

  static Target none() { return {}; }
  static Target ratio_at_least(double v) { return {Kind::ratio_at_least, v}; }
  static Target ratio_at_most(double v) { return {Kind::ratio_at_most, v}; }
  static Target value_below(double v) { return {Kind::value_below, v}; }
};

struct Row {
  Row(std::string id_, std::string measures_, std::string unit_,
      std::string reference_name_, Target target_)
      : id(std::move(id_)),
        measures(std::move(measures_)),
        unit(std::move(unit_)),
        reference_name(std::move(reference_name_)),
        target(target_) {}

  std::string id;        // "1", "3a", "6 p50", "8/3b"
  std::string measures;  // what the pgjobq figure is
  std::string unit;      // "jobs/s" or "ms"
  std::string reference_name;
  Target target;
  std::optional<double> pgjobq;
  std::optional<double> reference;
  // pgjobq / reference, or the median of per-round ratios.
  std::optional<double> ratio;
  // Why there is no figure (skipped, failed), or something to know.
  std::string note;
  bool failed = false;
  nlohmann::json detail = nlohmann::json::object();

  // True/false once measured against a target; nullopt without one.
  std::optional<bool> met() const;
};

struct Report {
  std::vector<std::pair<std::string, std::string>> settings;
  nlohmann::json config = nlohmann::json::object();
  std::vector<Row> rows;
  double seconds = 0;  // how long the run took
  // CPUs and the 1-minute load average before and after the run: other
  // work on the machine shows up there.
  int cpus = 0;
  double load_before = 0;
  double load_after = 0;
};

void print_table(std::ostream& out, const Report& report);
void print_json(std::ostream& out, const Report& report);

}  // namespace pgjobq::bench
