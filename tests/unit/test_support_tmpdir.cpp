// Gives every test process its own scratch directory. ctest runs each test as a separate,
// concurrent process; the suites name their scratch folders under testing::TempDir(), so
// without this two processes would clobber each other's files.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

namespace {

struct ProcessTempDir {
  std::string dir;
  ProcessTempDir() {
    const char *base = std::getenv("TEST_TMPDIR");
    std::filesystem::path root = base && *base ? base : std::filesystem::temp_directory_path();
    dir = (root / ("molt-unit-" + std::to_string(::getpid()))).string();
    std::filesystem::create_directories(dir);
    ::setenv("TEST_TMPDIR", (dir + "/").c_str(), 1); // read by testing::TempDir()
  }
  ~ProcessTempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
};

const ProcessTempDir processTempDir;

TEST(TestSupport, TempDirIsPrivateToThisProcess) {
  EXPECT_NE(testing::TempDir().find("molt-unit-" + std::to_string(::getpid())), std::string::npos)
      << testing::TempDir();
}

} // namespace
