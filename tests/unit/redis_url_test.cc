#include <gtest/gtest.h>

#include "pgjobq/errors.h"
#include "redis/connection.h"

namespace pgjobq::redis {
namespace {

TEST(RedisUrlTest, ParsesHostPortAndDatabase) {
  Address a = parse_url("redis://10.1.2.3:6380/4");
  EXPECT_EQ(a.host, "10.1.2.3");
  EXPECT_EQ(a.port, 6380);
  EXPECT_EQ(a.db, 4);
  EXPECT_TRUE(a.password.empty());
  EXPECT_TRUE(a.unix_path.empty());
}

TEST(RedisUrlTest, DefaultsToPort6379AndDatabase0) {
  Address a = parse_url("redis://localhost");
  EXPECT_EQ(a.host, "localhost");
  EXPECT_EQ(a.port, 6379);
  EXPECT_EQ(a.db, 0);
}

TEST(RedisUrlTest, ParsesPasswordAndUser) {
  Address a = parse_url("redis://:s%40cret@h:1/2");
  EXPECT_EQ(a.password, "s@cret");
  EXPECT_TRUE(a.user.empty());
  Address b = parse_url("redis://alice:pw@h");
  EXPECT_EQ(b.user, "alice");
  EXPECT_EQ(b.password, "pw");
  EXPECT_EQ(b.redacted, "redis://alice:***@h");
}

TEST(RedisUrlTest, ParsesUnixSockets) {
  Address a = parse_url("unix:///var/run/redis.sock?db=3&password=x");
  EXPECT_EQ(a.unix_path, "/var/run/redis.sock");
  EXPECT_EQ(a.db, 3);
  EXPECT_EQ(a.password, "x");
  EXPECT_EQ(a.redacted.find("password=x"), std::string::npos);
}

TEST(RedisUrlTest, ParsesIpv6Hosts) {
  Address a = parse_url("redis://[::1]:7000");
  EXPECT_EQ(a.host, "::1");
  EXPECT_EQ(a.port, 7000);
}

TEST(RedisUrlTest, RefusesWhatItCannotUse) {
  for (const char* url :
       {"", "http://h", "redis://", "redis://h:0", "redis://h:99999",
        "redis://h:port", "redis://h/db", "redis://h/-1", "unix://relative",
        "unix:///s?colour=blue", "rediss://h", "redis://:%zz@h",
        "redis://:%4@h"}) {
    EXPECT_THROW(parse_url(url), InvalidInput) << url;
  }
}

TEST(RedisUrlTest, ErrorsNeverShowThePassword) {
  try {
    parse_url("redis://:topsecret@h:notaport");
    FAIL() << "expected InvalidInput";
  } catch (const InvalidInput& e) {
    EXPECT_EQ(std::string(e.what()).find("topsecret"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace pgjobq::redis
