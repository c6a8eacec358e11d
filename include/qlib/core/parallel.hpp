// parallel_executor: the pluggable "run these tasks" interface qlib's parallel code uses.
#pragma once

#include <type_traits>
#include <utility>

#include "qlib/core/tensor_view.hpp"

namespace qlib {

// A non-owning reference to a callable void(index_t); cheap to copy, never allocates.
// The callable must outlive the call it is passed to.
class task_ref {
 public:
  template <class F, class = std::enable_if_t<!std::is_same<std::decay_t<F>, task_ref>::value>>
  task_ref(F& f) noexcept  // NOLINT(implicit): lets a lambda be passed where a task_ref is expected
      : object_(static_cast<void*>(&f)), call_([](void* o, index_t i) { (*static_cast<F*>(o))(i); }) {}

  void operator()(index_t i) const { call_(object_, i); }

 private:
  void* object_;
  void (*call_)(void*, index_t);
};

// Runs task(0) ... task(count - 1), possibly on several threads, and returns when all
// have finished. Implement it over your own thread pool or RTOS tasks; qlib creates no
// thread unless you hand it one (see core/thread_pool.hpp for a std::thread pool).
// Tasks never throw; they may run in any order and on any thread, including the caller's.
class parallel_executor {
 public:
  virtual ~parallel_executor() = default;
  // How many tasks can usefully run at once (>= 1).
  virtual int concurrency() const noexcept = 0;
  virtual void parallel_for(index_t count, task_ref task) = 0;
};

// Runs every task on the calling thread, in order.
class serial_executor final : public parallel_executor {
 public:
  int concurrency() const noexcept override { return 1; }
  void parallel_for(index_t count, task_ref task) override {
    for (index_t i = 0; i < count; ++i) task(i);
  }
};

}  // namespace qlib
