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

TEST(RedisUrlTest, ParsesAQueryWithoutAPath) {
  // A query may follow the host or port directly (RFC 3986), as in other
  // clients' URLs. It used to end up in the port ("port must be a number")
  // or, with no port, in the host name, which then failed to resolve.
  Address a = parse_url("redis://:pw@h:6380?db=4");
  EXPECT_EQ(a.host, "h");
  EXPECT_EQ(a.port, 6380);
  EXPECT_EQ(a.db, 4);
  EXPECT_EQ(a.password, "pw");
  Address b = parse_url("redis://h?db=5&password=x");
  EXPECT_EQ(b.host, "h");
  EXPECT_EQ(b.port, 6379);
  EXPECT_EQ(b.db, 5);
  EXPECT_EQ(b.password, "x");
  Address c = parse_url("redis://h:1/?db=6");
  EXPECT_EQ(c.db, 6);
  Address d = parse_url("redis://[::1]:7000?db=2");
  EXPECT_EQ(d.host, "::1");
  EXPECT_EQ(d.port, 7000);
  EXPECT_EQ(d.db, 2);
  EXPECT_THROW(parse_url("redis://h?colour=blue"), InvalidInput);
}

// An ACL user named like a mail address, given in the query: its '@' is
// the query's, not the end of a userinfo (the host was read as
// "corp.example", the password as "6379/0?user=ops"). A password may still
// hold an unencoded '?' or '@'.
TEST(RedisUrlTest, AnAtSignInTheQueryIsTheQuerys) {
  Address a = parse_url("redis://127.0.0.1:6379/0?user=ops@corp.example");
  EXPECT_EQ(a.host, "127.0.0.1");
  EXPECT_EQ(a.port, 6379);
  EXPECT_EQ(a.user, "ops@corp.example");
  EXPECT_EQ(a.password, "");
  Address b = parse_url("redis://:pw@h:6380?user=ops@corp&db=2");
  EXPECT_EQ(b.host, "h");
  EXPECT_EQ(b.port, 6380);
  EXPECT_EQ(b.password, "pw");
  EXPECT_EQ(b.user, "ops@corp");
  EXPECT_EQ(b.db, 2);
  Address c = parse_url("redis://u:p?a@ss@h:1/3");
  EXPECT_EQ(c.user, "u");
  EXPECT_EQ(c.password, "p?a@ss");
  EXPECT_EQ(c.host, "h");
  EXPECT_EQ(c.port, 1);
  EXPECT_EQ(c.db, 3);
}

TEST(RedisUrlTest, AUserinfoWithoutAColonIsAPassword) {
  Address a = parse_url("redis://s3cret@h:6380/2");
  EXPECT_EQ(a.user, "");
  EXPECT_EQ(a.password, "s3cret");
  EXPECT_EQ(a.db, 2);
  EXPECT_EQ(a.redacted.find("s3cret"), std::string::npos) << a.redacted;
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
