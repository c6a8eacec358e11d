// The Catch2 main for every qlib test program, and a listener that reseeds the tests' random generator per test case.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <cstdint>

#include "test_util.hpp"

namespace {

// Each test case starts from a seed of its own name (FNV-1a), so its random inputs do
// not depend on which test cases ran before it: a failure reproduces when the case runs
// alone (a filter on the command line), and adding a test cannot change another's data.
struct reseed_per_test_case : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(const Catch::TestCaseInfo& info) override {
    std::uint64_t h = 14695981039346656037ull;
    for (unsigned char c : info.name) h = (h ^ c) * 1099511628211ull;
    qlib_test::rng().seed(h);
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(reseed_per_test_case)
