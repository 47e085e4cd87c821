#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

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
  // Schemes are case-insensitive (found by the adversarial review of
  // 2026-12-03: "Redis://secret@h", refused by the parser, was quoted
  // with the password).
  EXPECT_EQ(redact("Redis://topsecret@cache"), "Redis://***@cache");
  EXPECT_EQ(redact("REDISS://topsecret@cache"), "REDISS://***@cache");
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

// libpq's unquoted values end at white space, and a backslash escapes
// one; keys are matched in any case (libpq refuses "PASSWORD", quoting it).
TEST(RedactTest, MasksEscapedAndMiscasedConninfoPasswords) {
  EXPECT_EQ(redact("host=db password=Wrong\\ Secret99 dbname=jobs"),
            "host=db password=*** dbname=jobs");
  EXPECT_EQ(redact("host=db password=a&b#c dbname=jobs"),
            "host=db password=*** dbname=jobs");
  EXPECT_EQ(redact("host=db PASSWORD=s3cret"), "host=db PASSWORD=***");
  EXPECT_EQ(redact("postgresql://db/jobs?Password=s3cret"),
            "postgresql://db/jobs?Password=***");
  auto secrets = url_passwords("host=db password=Wrong\\ Secret99");
  EXPECT_NE(std::find(secrets.begin(), secrets.end(), "Wrong Secret99"),
            secrets.end());
}

// Found by a black-box run of the command line: a quoted value followed by
// more (libpq reads 'it' and complains about "'s10'"), and URLs with a
// mistyped scheme, which libpq takes for a database name.
TEST(RedactTest, MasksQuotedRunsAndMistypedUrls) {
  EXPECT_EQ(redact("host=db password='it''s10' dbname=x"),
            "host=db password=*** dbname=x");
  auto secrets = url_passwords("host=db password='it''s10' dbname=x");
  EXPECT_EQ(scrub_secrets("missing \"=\" after \"'s10'\"", secrets),
            "missing \"=\" after \"'***'\"");
  EXPECT_EQ(redact("postgresql:/alice:TypoPass2@127.0.0.1:5432/bb"),
            "postgresql:/alice:***@127.0.0.1:5432/bb");
  EXPECT_EQ(redact("postgres:alice:TypoPass3@db"), "postgres:***@db");
  EXPECT_EQ(redact("mydb"), "mydb");
  EXPECT_EQ(redact("alice@db"), "alice@db");
  // Any text is scrubbed with url_passwords() (the command line's
  // arguments): a short guess is no password and would garble messages.
  auto guesses = url_passwords("12:e@3");
  EXPECT_TRUE(guesses.empty());
  EXPECT_EQ(scrub_secrets("invalid job id \"12:e@3\": expected", guesses),
            "invalid job id \"12:e@3\": expected");
  EXPECT_TRUE(url_passwords("my queue:secret@x").empty());  // not a URL
}

// libpq takes any white space around keys and '='; and "sslpassword" (a
// client key's passphrase) is a secret too.
TEST(RedactTest, MasksPasswordsAfterAnyWhiteSpaceAndSslPasswords) {
  EXPECT_EQ(redact("host=/x\npassword=hunter2xyz"), "host=/x\npassword=***");
  EXPECT_EQ(redact("host=/x password\t=\thunter2xyz"),
            "host=/x password\t=\t***");
  EXPECT_EQ(redact("host=db sslpassword=hunter2xyz sslmode=require"),
            "host=db sslpassword=*** sslmode=require");
  EXPECT_EQ(redact("postgresql://db/x?sslpassword=hunter2xyz&a=b"),
            "postgresql://db/x?sslpassword=***&a=b");
  EXPECT_EQ(redact("host=db nosslpassword=x"), "host=db nosslpassword=x");
}

TEST(RedactTest, DoesNotMaskKeysThatMerelyEndInPassword) {
  EXPECT_EQ(redact("host=db nopassword=x"), "host=db nopassword=x");
}

TEST(UrlPasswords, FindsPasswordsInEveryUrlForm) {
  auto has = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  EXPECT_TRUE(has(url_passwords("postgresql://u:pw1@h/db"), "pw1"));
  EXPECT_TRUE(has(url_passwords("postgresql://u:p%40ss@h/db"), "p@ss"));
  EXPECT_TRUE(has(url_passwords("postgresql://u:p%40ss@h/db"), "p%40ss"));
  EXPECT_TRUE(has(url_passwords("postgresql://u:a@b@h/db"), "a@b"));
  EXPECT_TRUE(has(url_passwords("host=h password=pw2 dbname=d"), "pw2"));
  EXPECT_TRUE(has(url_passwords("host=h password='p w3'"), "p w3"));
  EXPECT_TRUE(has(url_passwords("postgresql://h/db?password=pw4&x=1"), "pw4"));
  EXPECT_TRUE(has(url_passwords("redis://:pw5@127.0.0.1:6379/2"), "pw5"));
  EXPECT_TRUE(has(url_passwords("redis://pw7@127.0.0.1:6379"), "pw7"));
  EXPECT_TRUE(has(url_passwords("rediss://pw8@cache:6380"), "pw8"));
  // A PostgreSQL user name is not a secret.
  EXPECT_TRUE(url_passwords("postgresql://app@db/app").empty());
  EXPECT_TRUE(
      has(url_passwords("unix:///tmp/r.sock?db=1&password=pw6"), "pw6"));
  EXPECT_TRUE(url_passwords("postgresql://u@h/db").empty());
  EXPECT_TRUE(url_passwords("").empty());
}

// libpq ends a URL's password at the first '@' and reads the rest as part
// of the host, which its messages then quote; and it quotes a URL it cannot
// parse as written.
TEST(UrlPasswords, CoversWhatLibpqQuotesOfAMalformedUrl) {
  auto has = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  auto parts = url_passwords("postgresql://app:SEC@RET9@127.0.0.1:5432/app");
  EXPECT_TRUE(has(parts, "SEC@RET9"));
  EXPECT_TRUE(has(parts, "SEC"));
  EXPECT_TRUE(has(parts, "RET9"));
  EXPECT_TRUE(has(url_passwords("postgresql://app:pa%zzSECRET1@h/app"),
                  "pa%zzSECRET1"));
  EXPECT_TRUE(has(url_passwords("postgresql://h/app?password=SEC%zzRET18"),
                  "SEC%zzRET18"));
  // libpq then splits the host part at ':' and quotes the "port".
  parts = url_passwords("postgresql://pwuser:p@ss:word@127.0.0.1:5/bb");
  EXPECT_TRUE(has(parts, "p@ss:word"));
  EXPECT_TRUE(has(parts, "ss:word"));
  EXPECT_TRUE(has(parts, "word"));
  // A piece this short stays: masking it would garble every message.
  EXPECT_FALSE(has(parts, "p"));
  EXPECT_EQ(scrub_secrets("invalid integer value \"word@127.0.0.1:5/bb\" "
                          "for connection option \"port\"",
                          parts),
            "invalid integer value \"***@127.0.0.1:5/bb\" for connection "
            "option \"port\"");
  // Each password once, however many forms of it coincide.
  EXPECT_EQ(url_passwords("postgresql://u:pw1@h/db"),
            std::vector<std::string>{"pw1"});
}

}  // namespace
}  // namespace pgjobq
