// The Catch2 main for every qlib test program, and a listener that reseeds the tests' random generator per test case.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>

#include "test_util.hpp"

namespace {

// Each test case starts from a seed of its own name (FNV-1a), so its random inputs do
// not depend on which test cases ran before it: a failure reproduces when the case runs
// alone (a filter on the command line), and adding a test cannot change another's data.
// Catch runs a case's body once per leaf SECTION, each pass starting with the case's
// root section: reseeding there gives every pass, so every section, the same start
// (a section picked with -c sees the data it saw in the full run).
struct reseed_per_test_case : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  std::string test_case;
  void testCaseStarting(const Catch::TestCaseInfo& info) override {
    TestEventListenerBase::testCaseStarting(info);  // the base keeps Catch's own state
    test_case = info.name;
    reseed();
  }
  void sectionStarting(const Catch::SectionInfo& info) override {
    TestEventListenerBase::sectionStarting(info);
    if (info.name == test_case) reseed();
  }
  void reseed() const {
    std::uint64_t h = 14695981039346656037ull;
    for (unsigned char c : test_case) h = (h ^ c) * 1099511628211ull;
    qlib_test::rng().seed(h);
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(reseed_per_test_case)
