#pragma once

// RedisLink's insides, shared by the files that need its address.

#include <chrono>
#include <optional>

#include "pgjobq/connection.h"
#include "redis/connection.h"

namespace pgjobq {

struct RedisLink::Impl {
  redis::Address address;
  std::chrono::milliseconds timeout;
  std::optional<redis::Connection> conn;

  redis::Connection& connection() {
    if (!conn) conn.emplace(redis::Connection::open(address, timeout));
    return *conn;
  }
};

}  // namespace pgjobq
