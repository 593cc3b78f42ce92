// A fresh, empty directory per test: <tmp>/<prefix><pid>_<suite>_<test> (shared by the tests that write files).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "common/file_io.h"

namespace tg::testing {

inline std::filesystem::path test_temp_dir(const std::string& prefix) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const auto d = std::filesystem::temp_directory_path() /
                 (prefix + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" + info->name());
  tg::remove_tree(d);
  std::filesystem::create_directories(d);
  return d;
}

}  // namespace tg::testing
