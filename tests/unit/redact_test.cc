#include <gtest/gtest.h>

#include "pgjobq/connection.h"

namespace pgjobq {
namespace {

TEST(RedactTest, MasksThePasswordOfAPostgresUri) {
  EXPECT_EQ(redact("postgresql://app:s3cret@db.local:5432/jobs"),
            "postgresql://app:***@db.local:5432/jobs");
}

TEST(RedactTest, MasksThePasswordOfARedisUri) {
  EXPECT_EQ(redact("redis://:hunter2@127.0.0.1:6379/3"),
            "redis://:***@127.0.0.1:6379/3");
  EXPECT_EQ(redact("redis://worker:hunter2@127.0.0.1"),
            "redis://worker:***@127.0.0.1");
}

// Found by tests/fuzz/fuzz_redis_url.cc: the Redis URL parser takes
// redis://secret@host as a bare password, so redact() must mask it too.
TEST(RedactTest, MasksTheBarePasswordOfARedisUri) {
  EXPECT_EQ(redact("redis://topsecret@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0");
  EXPECT_EQ(redact("rediss://topsecret@cache"), "rediss://***@cache");
  // A PostgreSQL user name is no secret.
  EXPECT_EQ(redact("postgresql://app@db/jobs"), "postgresql://app@db/jobs");
}

TEST(RedactTest, LeavesUrlsWithoutPasswordsAlone) {
  EXPECT_EQ(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
  EXPECT_EQ(redact("postgresql://app@db/jobs"), "postgresql://app@db/jobs");
  EXPECT_EQ(redact("host=/tmp dbname=jobs"), "host=/tmp dbname=jobs");
}

TEST(RedactTest, PasswordsWithUnencodedSpecialCharactersDoNotLeak) {
  for (const char* url :
       {"postgresql://app:p@ss@db/jobs", "postgresql://app:pa/ss@db/jobs",
        "postgresql://app:pa?ss@db/jobs", "redis://:a:b@c@host:1/0"}) {
    std::string redacted = redact(url);
    EXPECT_EQ(redacted.find("ss@db"), std::string::npos) << redacted;
    EXPECT_EQ(redacted.find("b@c"), std::string::npos) << redacted;
    EXPECT_NE(redacted.find("***"), std::string::npos) << redacted;
  }
}

TEST(RedactTest, MasksPasswordParameters) {
  EXPECT_EQ(redact("host=db password=s3cret dbname=jobs"),
            "host=db password=*** dbname=jobs");
  // libpq's conninfo quoting: single quotes, backslash escapes.
  EXPECT_EQ(redact("host=db password = 'it\\'s secret' dbname=jobs"),
            "host=db password = *** dbname=jobs");
  EXPECT_EQ(redact("postgresql://db/jobs?sslmode=require&password=s3cret"),
            "postgresql://db/jobs?sslmode=require&password=***");
  EXPECT_EQ(redact("unix:///run/redis.sock?db=2&password=s3cret"),
            "unix:///run/redis.sock?db=2&password=***");
}

// Found by tests/fuzz/fuzz_redis_url.cc: the Redis URL parser takes a
// query value up to the next '&', whatever it holds, so redact() must mask
// all of it (it used to stop at '#' or a space, or read quotes).
TEST(RedactTest, MasksAUriQueryPasswordUpToTheNextParameter) {
  EXPECT_EQ(redact("unix:///run/redis.sock?password=#secret&db=2"),
            "unix:///run/redis.sock?password=***&db=2");
  EXPECT_EQ(redact("unix:///run/redis.sock?password=my secret"),
            "unix:///run/redis.sock?password=***");
  EXPECT_EQ(redact("unix:///s?password='a&password=b'c"),
            "unix:///s?password=***&password=***");
  EXPECT_EQ(redact("postgresql://db/jobs?password=a#b&sslmode=require"),
            "postgresql://db/jobs?password=***&sslmode=require");
  // Found by the fuzzer too: a userinfo mask (from a ':' and an '@' in the
  // query) that ran over a later password key left its value in clear.
  EXPECT_EQ(redact("unix:///s.sock?user=a:b&password=p@ss"),
            "unix:///s.sock?user=a:***");
  EXPECT_EQ(redact("postgresql://db/jobs?user=a:b&password=p@ss&x=1"),
            "postgresql://db/jobs?user=a:***&x=1");
  // A conninfo value that merely holds "://" keeps conninfo rules.
  EXPECT_EQ(redact("host=db password='&x://y' dbname=jobs"),
            "host=db password=*** dbname=jobs");
}

TEST(RedactTest, DoesNotMaskKeysThatMerelyEndInPassword) {
  EXPECT_EQ(redact("host=db nopassword=x"), "host=db nopassword=x");
}

}  // namespace
}  // namespace pgjobq
