#include "validate.h"

#include <gtest/gtest.h>

#include "pgjobq/enqueue.h"
#include "pgjobq/errors.h"

namespace pgjobq {
namespace {

TEST(QueueNameTest, AcceptsLettersDigitsAndTheFivePunctuationMarks) {
  EXPECT_NO_THROW(validate_queue_name("mail"));
  EXPECT_NO_THROW(validate_queue_name("orders:7"));
  EXPECT_NO_THROW(validate_queue_name("a-b_c.d:e/f"));
  EXPECT_NO_THROW(validate_queue_name(std::string(128, 'x')));
}

TEST(QueueNameTest, RefusesEverythingElse) {
  for (std::string name :
       {std::string(), std::string(129, 'x'), std::string("has space"),
        std::string("quote\"d"), std::string("it's"), std::string("a;DROP"),
        std::string("glob*"), std::string("q?"), std::string("[abc]"),
        std::string("tab\t"), std::string("new\nline"),
        std::string("nul\0byte", 8), std::string("\xc3\xa9t\xc3\xa9"),
        std::string("back\\slash")}) {
    EXPECT_THROW(validate_queue_name(name), InvalidInput) << name;
  }
}

TEST(QueueNameTest, ErrorsShowControlCharactersEscaped) {
  try {
    validate_queue_name("bad\nname");
    FAIL();
  } catch (const InvalidInput& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("\\x0a"), std::string::npos);
  }
}

TEST(PayloadTest, SerializesOrdinaryJson) {
  nlohmann::json data = {{"to", "a@b.c"}, {"n", 3}, {"tags", {1, 2}}};
  EXPECT_EQ(nlohmann::json::parse(serialize_payload(data, 1000, "data")), data);
}

TEST(PayloadTest, RefusesOversizedPayloads) {
  nlohmann::json data = std::string(2000, 'x');
  EXPECT_THROW(serialize_payload(data, 1000, "data"), InvalidInput);
  EXPECT_NO_THROW(serialize_payload(data, 2002, "data"));
}

TEST(PayloadTest, RefusesDeepNesting) {
  nlohmann::json deep = nlohmann::json::array();
  nlohmann::json* at = &deep;
  for (int i = 0; i < kMaxJsonDepth; ++i) {
    at->push_back(nlohmann::json::array());
    at = &(*at)[0];
  }
  EXPECT_THROW(serialize_payload(deep, 1 << 20, "data"), InvalidInput);
  // kMaxJsonDepth levels of arrays, the last holding a number: allowed,
  // as the command line allows it.
  nlohmann::json deepest = nlohmann::json::array();
  at = &deepest;
  for (int i = 1; i < kMaxJsonDepth; ++i) {
    at->push_back(nlohmann::json::array());
    at = &(*at)[0];
  }
  at->push_back(1);
  EXPECT_NO_THROW(serialize_payload(deepest, 1 << 20, "data"));
}

TEST(PayloadTest, RefusesNulCharactersInValuesAndKeys) {
  EXPECT_THROW(serialize_payload(std::string("a\0b", 3), 100, "data"),
               InvalidInput);
  nlohmann::json keyed = {{std::string("k\0", 2), 1}};
  EXPECT_THROW(serialize_payload(keyed, 100, "data"), InvalidInput);
}

TEST(PayloadTest, RefusesInvalidUtf8) {
  EXPECT_THROW(serialize_payload(std::string("\xff\xfe"), 100, "data"),
               InvalidInput);
}

TEST(PayloadTest, RefusesDiscardedValues) {
  nlohmann::json malformed = nlohmann::json::parse("{oops", nullptr, false);
  ASSERT_TRUE(malformed.is_discarded());
  EXPECT_THROW(serialize_payload(malformed, 100, "data"), InvalidInput);
  EXPECT_THROW(
      serialize_payload(nlohmann::json::array({1, malformed}), 100, "data"),
      InvalidInput);
  EXPECT_THROW(
      serialize_payload(nlohmann::json({{"k", malformed}}), 100, "data"),
      InvalidInput);
}

TEST(PayloadTest, RefusesNanAndInfinity) {
  EXPECT_THROW(serialize_payload(std::nan(""), 100, "data"), InvalidInput);
  EXPECT_THROW(serialize_payload(1e308 * 10, 100, "data"), InvalidInput);
}

}  // namespace
}  // namespace pgjobq

namespace pgjobq {
namespace {

TEST(StorableTextTest, KeepsValidUtf8AsIs) {
  std::string text = "plain, caf\xc3\xa9, \xe2\x82\xac, \xf0\x9f\x98\x80";
  EXPECT_EQ(storable_text(text, 100), text);
}

TEST(StorableTextTest, ReplacesInvalidBytesAndNul) {
  EXPECT_EQ(storable_text(std::string("a\xff"
                                      "b",
                                      3),
                          100),
            "a\xef\xbf\xbd"
            "b");
  EXPECT_EQ(storable_text(std::string("a\0b", 3), 100),
            "a\xef\xbf\xbd"
            "b");
  // Truncated sequence, overlong encoding, surrogate, beyond U+10FFFF.
  for (std::string bad :
       {std::string("\xe2\x82"), std::string("\xc0\xaf"),
        std::string("\xe0\x80\xaf"), std::string("\xed\xa0\x80"),
        std::string("\xf4\x90\x80\x80")}) {
    std::string out = storable_text(bad, 100);
    EXPECT_NE(out.find("\xef\xbf\xbd"), std::string::npos) << bad;
    EXPECT_NO_THROW(nlohmann::json(out).dump()) << bad;
  }
}

TEST(StorableTextTest, CutsLongTextAtACharacterBoundary) {
  std::string euros;
  for (int i = 0; i < 100; ++i) euros += "\xe2\x82\xac";  // 3 bytes each
  std::string out = storable_text(euros, 50);
  EXPECT_LE(out.size(), 50u);
  EXPECT_TRUE(out.ends_with("...[truncated]"));
  EXPECT_NO_THROW(nlohmann::json(out).dump());
  EXPECT_EQ(storable_text("short", 5), "short");
  EXPECT_EQ(storable_text("toolong", 5), "toolo") << "no room for the mark";
}

}  // namespace
}  // namespace pgjobq
