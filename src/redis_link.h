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
  // wait_for_result's subscription, kept between waits: a connection per
  // wait would cost a connect, a login and a socket in TIME_WAIT each, and
  // a backend waiting for hundreds of results a second runs out of ports.
  // Each wait subscribes to its job's channel and unsubscribes at the end.
  std::optional<redis::Subscriber> subscriber;

  redis::Connection& connection() {
    if (!conn) conn.emplace(redis::Connection::open(address, timeout));
    return *conn;
  }
};

// For the library's own code that needs a link's insides.
struct RedisLinkAccess {
  using Impl = RedisLink::Impl;
  static Impl& of(RedisLink& link) noexcept { return *link.impl_; }
};

}  // namespace pgjobq
