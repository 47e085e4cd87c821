#pragma once

// The pgjobq side of each row: enqueue rates, worker throughput (shallow,
// deep, many queues, through the CLI), and latencies. Each function sets up
// what it needs (a Worker on a thread, a `pgjobq work` process), measures,
// and tears it down, leaving its queue empty unless said otherwise.

#include <optional>
#include <string>
#include <vector>

namespace pgjobq::bench {

struct Servers {
  std::string db_url;
  std::string redis_url;
};

// enqueue() of one job per transaction (autocommit) for `seconds`.
// Returns jobs per second. Leaves the jobs pending.
double enqueue_rate(const Servers& s, const std::string& queue, double seconds);

// enqueue_many() of `per_transaction` jobs per transaction for `seconds`.
// Returns jobs per second. Leaves the jobs pending.
double enqueue_many_rate(const Servers& s, const std::string& queue,
                         int per_transaction, double seconds);

struct ShallowResult {
  double jobs_per_second = 0;
  // Unfinished jobs the producer saw before each enqueue, on average.
  double mean_depth = 0;
  // The producer's enqueue rate alone over the same window.
  double enqueued_per_second = 0;
};

// One Worker with a no-op handler on `queue`; `producers` threads, each
// with its own connection, enqueue one job per transaction and notify,
// together never more than `max_ahead` jobs ahead of the handler. Measures
// handled jobs per second over `seconds` after a short warm-up, then drains
// the queue.
ShallowResult shallow_worker_rate(const Servers& s, const std::string& queue,
                                  double seconds, int producers, int max_ahead);

// The producers of shallow_worker_rate alone, with no worker and no cap:
// `producers` threads enqueue one job per transaction into `queue` and
// notify, for `seconds`. Returns enqueued jobs per second: how fast row
// 3a's jobs can arrive at all, which bounds how fast they can be handled.
double shallow_producers_rate(const Servers& s, const std::string& queue,
                              double seconds, int producers);

// A Worker with a no-op handler serving `queues`, idle; then
// `jobs_per_queue` jobs land on each queue in one transaction and every
// queue is notified. Returns the aggregate jobs per second from that commit
// until every last job's result is committed (seen by wait_for_result).
double deep_worker_rate(const Servers& s,
                        const std::vector<std::string>& queues,
                        int jobs_per_queue);

// The same backlog on one queue served by `cli work QUEUE -- /bin/cat`.
double cli_worker_rate(const Servers& s, const std::string& cli,
                       const std::string& queue, int jobs);

struct LatencySamples {
  std::vector<double> pgjobq_ms;
  // A bare one-row commit on the same connection, one per sample,
  // interleaved with them.
  std::vector<double> reference_ms;
};

// From enqueue()'s return (the commit) through notify() to the no-op
// handler starting, one job at a time with gaps of 2-4 ms.
LatencySamples handler_start_latency(const Servers& s, const std::string& queue,
                                     int samples);

// From calling enqueue() through notify() to wait_for_result() returning,
// one job at a time with gaps of 2-4 ms.
LatencySamples result_latency(const Servers& s, const std::string& queue,
                              int samples);

// The resident memory (MiB) of this process, sampled while one Worker with
// a no-op handler runs through `jobs` jobs: after each tenth of them.
// The jobs are loaded server-side first, so nothing else in the process
// grows meanwhile.
std::vector<double> worker_memory(const Servers& s, const std::string& queue,
                                  long jobs);

// Loads `count` completed jobs into `queue` (which must not exist yet)
// directly with SQL, as if a worker had run them, then VACUUM ANALYZE.
void load_finished_jobs(const Servers& s, const std::string& queue, long count);

}  // namespace pgjobq::bench
