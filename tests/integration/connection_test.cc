#include "pgjobq/connection.h"

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"
#include "redis/connection.h"
#include "support/services.h"

namespace pgjobq {
namespace {

TEST(ConnectionTest, DatabaseUrlOrPgVariablesAreUsedWhenNoUrlIsGiven) {
  std::string admin = test::required_env("PGJOBQ_TEST_PG_ADMIN_URL");
  ::setenv("DATABASE_URL", admin.c_str(), 1);
  EXPECT_NO_THROW(connect_database());
  ::unsetenv("DATABASE_URL");
  // libpq's own variables.
  std::string port = test::required_env("PGJOBQ_PG_PORT");
  ::setenv("PGHOST", "127.0.0.1", 1);
  ::setenv("PGPORT", port.c_str(), 1);
  ::setenv("PGUSER", "postgres", 1);
  ::setenv("PGDATABASE", "postgres", 1);
  EXPECT_NO_THROW(connect_database());
  ::unsetenv("PGHOST");
  ::unsetenv("PGPORT");
}

TEST(ConnectionTest, UnreachableDatabaseErrorNamesItButNotThePassword) {
  try {
    connect_database("postgresql://app:SuperSecret1@127.0.0.1:1/jobs");
    FAIL() << "expected ConnectionError";
  } catch (const ConnectionError& e) {
    std::string message = e.what();
    EXPECT_EQ(message.find("SuperSecret1"), std::string::npos) << message;
    EXPECT_NE(message.find("127.0.0.1"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << "one line";
  }
  try {
    connect_database("host=127.0.0.1 port=1 password=SuperSecret2");
    FAIL() << "expected ConnectionError";
  } catch (const ConnectionError& e) {
    EXPECT_EQ(std::string(e.what()).find("SuperSecret2"), std::string::npos)
        << e.what();
  }
}

// URLs libpq cannot parse, or splits where the user did not mean it to:
// its messages quote them as written, and the host it tried. Found by an
// audit: these used to reach the library's error messages in clear.
TEST(ConnectionTest, MalformedDatabaseUrlsNeverShowTheirPassword) {
  std::string port = test::required_env("PGJOBQ_PG_PORT");
  struct Case {
    std::string url;
    std::vector<std::string> secrets;
  };
  std::vector<Case> cases = {
      {"postgresql://app:pa%zzSECRET1@127.0.0.1:" + port + "/app", {"SECRET1"}},
      {"postgresql://app:SECRET10@[::1/app", {"SECRET10"}},
      {"postgresql://127.0.0.1:" + port + "/app?password=SEC%zzRET18",
       {"SEC%zzRET18", "RET18"}},
      // libpq takes the password to end at the first '@'.
      {"postgresql://app:SECRET@PART9@127.0.0.1:" + port + "/app",
       {"SECRET", "PART9"}},
      // ...and the rest at ':', taking "WORD5@127.0.0.1..." for a port.
      {"postgresql://app:p@ss:WORD5@127.0.0.1:" + port + "/app",
       {"WORD5", "ss:WORD5"}},
      // An escaped space in an unquoted key=value password (no such
      // database, so the connection fails whatever the server's auth).
      {"host=127.0.0.1 port=" + port +
           " dbname=no_such_db user=nobody password=Wrong\\ SECRET99",
       {"SECRET99"}},
      {"host=127.0.0.1 port=" + port + " PASSWORD=SECRET77", {"SECRET77"}},
      // libpq reads 'it' and complains about the rest, quoting it.
      {"host=127.0.0.1 port=" + port + " password='it''SECRET66'",
       {"SECRET66"}},
      // A mistyped scheme: libpq takes it all for a database name.
      {"postgresql:/app:SECRET55@127.0.0.1:" + port + "/app", {"SECRET55"}},
  };
  for (const Case& c : cases) {
    try {
      connect_database(c.url);
      ADD_FAILURE() << "connected with " << c.url;
    } catch (const Error& e) {
      for (const std::string& secret : c.secrets) {
        EXPECT_FALSE(test::contains(e.what(), secret))
            << c.url << " gave: " << e.what();
      }
    }
  }
}

TEST(ConnectionTest, MalformedDatabaseUrlIsAClearError) {
  try {
    connect_database("postgresql://app:SuperSecret3@host:notaport/db");
    FAIL() << "expected ConnectionError";
  } catch (const ConnectionError& e) {
    EXPECT_EQ(std::string(e.what()).find("SuperSecret3"), std::string::npos)
        << e.what();
  }
}

TEST(ConnectionTest, RedisDatabaseNumberIsSelected) {
  test::RedisServer redis;
  RedisLink ok("unix://" + redis.socket_path() + "?db=3");
  EXPECT_NO_THROW(ok.publish("pgjobq/x", "hi"));
  // Redis has 16 databases by default: SELECT 99 is refused, which shows
  // SELECT is sent.
  RedisLink out_of_range("unix://" + redis.socket_path() + "?db=99");
  try {
    out_of_range.publish("pgjobq/x", "hi");
    FAIL() << "expected ConnectionError";
  } catch (const ConnectionError& e) {
    EXPECT_NE(std::string(e.what()).find("DB index"), std::string::npos)
        << e.what();
  }
}

TEST(ConnectionTest, RedisOverTcpWithDatabaseInThePath) {
  std::string url = test::redis_url() + "/2";
  RedisLink link(url);
  EXPECT_NO_THROW(link.publish("pgjobq/x", "hi"));
  EXPECT_EQ(link.url(), url);
}

TEST(ConnectionTest, UnreachableRedisIsAConnectionErrorWithoutThePassword) {
  RedisLink link("redis://:Hunter22@127.0.0.1:1/0",
                 std::chrono::milliseconds(300));
  try {
    link.publish("pgjobq/x", "hi");
    FAIL() << "expected ConnectionError";
  } catch (const ConnectionError& e) {
    EXPECT_EQ(std::string(e.what()).find("Hunter22"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:1"), std::string::npos)
        << e.what();
  }
}

// A reply is read whole into memory. One larger than anything pgjobq asks
// for (a Redis sending junk, a forged message of hundreds of MiB) drops the
// connection instead: a Redis that sent one endless bulk string grew a
// `pgjobq wait` to 2.2 GB in 6 s, and an endless array of ":1" grew it
// as fast (a reply object per element). Shown here with a real server's
// replies that are merely too large.
TEST(ConnectionTest, ARedisReplyLargerThanPgjobqExpectsDropsTheConnection) {
  using std::chrono::milliseconds;
  test::RedisServer server;
  redis::Address address = redis::parse_url(server.url());
  auto expect_dropped = [&](std::vector<std::string_view> args,
                            std::string_view why) {
    redis::Connection conn =
        redis::Connection::open(address, milliseconds(60000));
    try {
      conn.command(args);
      FAIL() << args[0] << ": expected ConnectionError";
    } catch (const ConnectionError& e) {
      EXPECT_TRUE(test::contains(e.what(), why)) << e.what();
    }
  };
  redis::Connection admin =
      redis::Connection::open(address, milliseconds(60000));
  std::string big((std::size_t{65} << 20), 'x');
  admin.command(std::vector<std::string_view>{"SET", "big", big});
  expect_dropped({"GET", "big"}, "more than 64 MiB");
  std::vector<std::string_view> push{"RPUSH", "long"};
  for (int i = 0; i < 100000; ++i) push.push_back("1");
  admin.command(push);
  expect_dropped({"LRANGE", "long", "0", "-1"}, "an array of 100000 elements");
  // A waiter's subscription, and a forged message too large for it (the
  // server's own limit on a subscriber's output lifted).
  admin.command(std::vector<std::string_view>{
      "CONFIG", "SET", "client-output-buffer-limit", "pubsub 0 0 0"});
  auto subscriber = redis::Subscriber::open(address, milliseconds(60000));
  std::string channels[] = {"pgjobq/job-1"};
  ASSERT_TRUE(subscriber.subscribe(channels));
  admin.command(std::vector<std::string_view>{"PUBLISH", channels[0], big});
  try {
    auto message = subscriber.next(milliseconds(60000));
    FAIL() << "expected ConnectionError, got "
           << (message ? message->payload.size() : 0) << " bytes";
  } catch (const ConnectionError& e) {
    EXPECT_TRUE(test::contains(e.what(), "more than 64 MiB")) << e.what();
  }
}

// The element limit counts a reply's nested arrays together: arrays of a
// few hundred elements each, nested, passed it one by one, and 61 MiB of
// them (1,024 arrays of 1,024 arrays of 14 ":1") grew a process to 1.1 GB.
// A Lua script's reply, from a real server.
TEST(ConnectionTest, NestedArraysCountTogetherTowardsTheElementLimit) {
  using std::chrono::milliseconds;
  test::RedisServer server;
  redis::Address address = redis::parse_url(server.url());
  redis::Connection conn =
      redis::Connection::open(address, milliseconds(10000));
  std::string_view nested[] = {
      "EVAL",
      "local t = {} for i = 1, 40 do local u = {} for j = 1, 40 do "
      "u[j] = 1 end t[i] = u end return t",
      "0"};
  try {
    redis::ReplyPtr reply = conn.command(nested);
    FAIL() << "expected ConnectionError, got an array of " << reply->elements;
  } catch (const ConnectionError& e) {
    EXPECT_TRUE(test::contains(e.what(), "more than 1024 elements"))
        << e.what();
  }
  // What pgjobq reads stays well within it.
  redis::Connection fresh =
      redis::Connection::open(address, milliseconds(10000));
  std::string_view small[] = {
      "EVAL", "local t = {} for i = 1, 1000 do t[i] = i end return t", "0"};
  EXPECT_EQ(fresh.command(small)->elements, 1000u);
}

}  // namespace
}  // namespace pgjobq
