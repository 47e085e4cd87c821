#pragma once

#include <stdexcept>
#include <string>

#include "pgjobq/job.h"

namespace pgjobq {

// Base of every error pgjobq throws. Messages say what was being done, to
// what, and never contain a password.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A server could not be reached, refused the credentials, or the connection
// was lost mid-operation.
class ConnectionError : public Error {
 public:
  using Error::Error;
};

// PostgreSQL refused a statement. `sqlstate()` is the five-character code.
class DatabaseError : public Error {
 public:
  DatabaseError(const std::string& message, std::string sqlstate);
  const std::string& sqlstate() const noexcept { return sqlstate_; }

 private:
  std::string sqlstate_;
};

// Bad input refused before anything was written: an invalid queue name,
// malformed or oversized JSON, an unusable URL, a connection in pipeline
// mode.
class InvalidInput : public Error {
 public:
  using Error::Error;
};

// A wait ran out of time. The job is still unfinished.
class Timeout : public Error {
 public:
  using Error::Error;
};

// The job ended `failed` or `cancelled` instead of completing.
class JobFailed : public Error {
 public:
  JobFailed(const std::string& message, JobState state,
            std::string stored_error);
  JobState state() const noexcept { return state_; }
  // The error stored on the job ("" if none was recorded).
  const std::string& stored_error() const noexcept { return stored_error_; }

 private:
  JobState state_;
  std::string stored_error_;
};

// No job has the given id (it never existed, was rolled back or pruned).
class NoSuchJob : public Error {
 public:
  explicit NoSuchJob(JobId id);
  JobId id() const noexcept { return id_; }

 private:
  JobId id_;
};

// The job exists but is in a state the operation does not apply to, such as
// cancelling a job that is already running.
class WrongState : public Error {
 public:
  WrongState(const std::string& message, JobState state);
  JobState state() const noexcept { return state_; }

 private:
  JobState state_;
};

}  // namespace pgjobq
