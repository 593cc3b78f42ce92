// env_switch / env_int (common/env.h): unset / empty -> the default; "0" / "1" or an integer in range; anything
// else a named error.
#include <gtest/gtest.h>
#include <stdlib.h>

#include "common/env.h"
#include "common/tests/test_error.h"

namespace tg {
namespace {

constexpr const char* kName = "TEGEMMA_TEST_ENV_SWITCH";

TEST(EnvSwitch, DefaultZeroOneAndNamedErrors) {
  ::unsetenv(kName);
  EXPECT_TRUE(env_switch(kName, true));
  EXPECT_FALSE(env_switch(kName, false));
  ::setenv(kName, "", 1);
  EXPECT_TRUE(env_switch(kName, true));
  ::setenv(kName, "0", 1);
  EXPECT_FALSE(env_switch(kName, true));
  ::setenv(kName, "1", 1);
  EXPECT_TRUE(env_switch(kName, false));
  for (const char* bad : {"true", "yes", "2", " 1", "on"}) {
    ::setenv(kName, bad, 1);
    const std::string e = testing::error_of([] { (void)env_switch(kName, false); });
    EXPECT_NE(e.find(kName), std::string::npos) << e;
    EXPECT_NE(e.find(std::string("'") + bad + "'"), std::string::npos) << e;
  }
  ::unsetenv(kName);
}

TEST(EnvInt, DefaultRangeAndNamedErrors) {
  constexpr const char* kInt = "TEGEMMA_TEST_ENV_INT";
  ::unsetenv(kInt);
  EXPECT_EQ(env_int(kInt, 7, 0, 100), 7);
  ::setenv(kInt, "", 1);
  EXPECT_EQ(env_int(kInt, 7, 0, 100), 7);
  ::setenv(kInt, "0", 1);
  EXPECT_EQ(env_int(kInt, 7, 0, 100), 0);
  ::setenv(kInt, "100", 1);
  EXPECT_EQ(env_int(kInt, 7, 0, 100), 100);
  ::setenv(kInt, "-3", 1);
  EXPECT_EQ(env_int(kInt, 7, -5, 5), -3);
  for (const char* bad : {"101", "-1", "12MB", "x", " 4", "4 ", "99999999999999999999999"}) {
    ::setenv(kInt, bad, 1);
    const std::string e = testing::error_of([&] { (void)env_int(kInt, 7, 0, 100); });
    EXPECT_NE(e.find(kInt), std::string::npos) << e;
    EXPECT_NE(e.find(std::string("'") + bad + "'"), std::string::npos) << e;
    EXPECT_NE(e.find("[0, 100]"), std::string::npos) << e;
  }
  ::unsetenv(kInt);
}

}  // namespace
}  // namespace tg
