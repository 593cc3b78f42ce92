// env_switch (common/env.h): unset / empty -> the default, "0" / "1", anything else a named error.
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

}  // namespace
}  // namespace tg
